//! The shell scripts the steps run on a host (POSIX `sh`, as root), and
//! the files they install. Every path is quoted; paths were checked to be
//! plain (`hosts::check_dir`) when the hosts were read.
//!
//! ```text
//! PREFIX/bin/scaler                  the binary (replaced by rename: atomic)
//! PREFIX/bin/scaler-supervise        supervisor script (hosts without systemd)
//! PREFIX/etc/ROLE.toml               config (0600: it holds the token)
//! PREFIX/run/ROLE.pid, ROLE-supervisor.pid, ROLE.changed
//! PREFIX/log/ROLE.log                output (supervisor; systemd: the journal)
//! STATE_DIR/                         durable state (0700)
//! /etc/systemd/system/UNIT.service   (systemd hosts)
//! ```

use super::{
    hosts::{Install, Role},
    ssh::quote,
};

pub const SUPERVISOR: &str = include_str!("supervise.sh");

/// Shell helpers prepended to the scripts that use them: `ours PID TEXT`
/// (PID's command line contains TEXT), `gone PID` (exited, or a zombie),
/// `stop PIDFILE TEXT` (SIGTERM, SIGKILL after 20 s; only if the PID is ours).
pub const HELPERS: &str = r#"ours() { [ -n "$1" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }
gone() { s=$(sed 's/^.*) //; s/ .*//' "/proc/$1/stat" 2>/dev/null); [ -z "$s" ] || [ "$s" = Z ]; }
stop() {
  p=$(cat "$1" 2>/dev/null) || return 0
  ours "$p" "$2" || return 0
  kill -TERM "$p" 2>/dev/null || true; i=0
  while ! gone "$p" && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
  gone "$p" || kill -KILL "$p" 2>/dev/null || true
}
"#;

/// Reports the machine and whether systemd runs it.
pub const CONNECT: &str = "uname -m\n\
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo systemd; else echo supervisor; fi\n";

/// Where one role's files go on one host, and the scripts that use them.
pub struct Files {
    /// The prefix, without a trailing `/`.
    pub p: String,
    pub role: Role,
    pub state_dir: String,
    /// systemd unit name, with `.service`.
    pub unit: String,
}

impl Files {
    pub fn new(i: &Install) -> Self {
        Self {
            p: i.prefix.trim_end_matches('/').to_owned(),
            role: i.role,
            state_dir: i.state_dir.clone(),
            unit: format!("{}.service", i.unit),
        }
    }
    fn r(&self) -> &'static str {
        self.role.name()
    }
    pub fn bin(&self) -> String {
        format!("{}/bin/scaler", self.p)
    }
    pub fn supervise(&self) -> String {
        format!("{}/bin/scaler-supervise", self.p)
    }
    pub fn config(&self) -> String {
        format!("{}/etc/{}.toml", self.p, self.r())
    }
    fn run(&self, suffix: &str) -> String {
        format!("{}/run/{}{suffix}", self.p, self.r())
    }
    /// Left by an upload that changed a file; the start step restarts then.
    fn marker(&self) -> String {
        self.run(".changed")
    }
    pub fn log(&self) -> String {
        format!("{}/log/{}.log", self.p, self.r())
    }
    pub fn unit_file(&self) -> String {
        format!("/etc/systemd/system/{}", self.unit)
    }
    /// What `ours` looks for in the supervisor's command line.
    fn supervisor_match(&self) -> String {
        format!("scaler-supervise {} {}", self.r(), self.p)
    }
    /// ... and in scaler's.
    fn scaler_match(&self) -> String {
        format!("{} {}", self.bin(), self.r())
    }

    pub fn prepare(&self) -> String {
        let d = |sub: &str| quote(&format!("{}/{sub}", self.p));
        format!(
            "umask 022\nmkdir -p {} {} {} {}\nmkdir -p {s}\nchmod 700 {s}\n",
            d("bin"),
            d("etc"),
            d("run"),
            d("log"),
            s = quote(&self.state_dir)
        )
    }

    /// Receives stdin into a temporary file next to `dest`, checks its
    /// size, and renames it over `dest` (atomic) unless identical. Prints
    /// `changed` or `unchanged` and sets `$changed` to 1 or 0; leaves the
    /// marker when changed.
    pub fn upload(&self, dest: &str, len: u64, mode: &str) -> String {
        format!(
            "set -e\n\
             d={d}\n\
             t=\"$(dirname \"$d\")/.$(basename \"$d\").upload.$$\"\n\
             trap 'rm -f \"$t\"' EXIT\n\
             cat >\"$t\"\n\
             n=$(wc -c <\"$t\")\n\
             [ \"$n\" -eq {len} ] || {{ echo \"received $n of {len} bytes\" >&2; exit 1; }}\n\
             chmod {mode} \"$t\"\n\
             if [ -f \"$d\" ] && command -v cmp >/dev/null && cmp -s \"$t\" \"$d\"; then\n\
             \x20 changed=0; echo unchanged\n\
             else\n\
             \x20 mv -f \"$t\" \"$d\"; touch {m}; changed=1; echo changed\n\
             fi\n",
            d = quote(dest),
            m = quote(&self.marker()),
        )
    }

    /// Prints `same` when `dest` has SHA-256 `hex`.
    pub fn same_sha256(&self, dest: &str, hex: &str) -> String {
        format!("[ \"$(sha256sum <{} 2>/dev/null | cut -d' ' -f1)\" = {hex} ] && echo same\ntrue\n", quote(dest))
    }

    /// The systemd unit.
    pub fn unit_text(&self) -> String {
        format!(
            "# Installed by `cargo xtask deploy`; removed by `cargo xtask undeploy`.\n\
             [Unit]\n\
             Description=scaler {r} (container limits that follow usage)\n\
             After=network-online.target\n\
             Wants=network-online.target\n\
             \n\
             [Service]\n\
             ExecStart={bin} {r} --config {config}\n\
             Restart=always\n\
             RestartSec=1\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=20\n\
             LimitMEMLOCK=infinity\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            r = self.r(),
            bin = self.bin(),
            config = self.config(),
        )
    }

    /// Stops a unit of this prefix and role, if there is one.
    fn stop_unit(&self) -> String {
        format!(
            "f={f}\n\
             if [ -f \"$f\" ] && grep -qF -- {scm} \"$f\"; then\n\
             \x20 systemctl disable --now --quiet {u} 2>/dev/null || true; rm -f \"$f\"\n\
             \x20 systemctl daemon-reload 2>/dev/null || true\n\
             fi\n",
            f = quote(&self.unit_file()),
            scm = quote(&self.scaler_match()),
            u = quote(&self.unit),
        )
    }

    /// Stops the supervisor and its scaler, if they run.
    fn stop_supervised(&self) -> String {
        format!(
            "stop {sup} {supm}\nstop {pid} {scm}\n",
            sup = quote(&self.run("-supervisor.pid")),
            supm = quote(&self.supervisor_match()),
            pid = quote(&self.run(".pid")),
            scm = quote(&self.scaler_match()),
        )
    }

    /// systemd: the unit (stdin), and no supervisor left from before.
    pub fn install_unit(&self, unit_len: u64) -> String {
        format!(
            "{HELPERS}{upload}systemctl daemon-reload\n\
             # A supervisor left from an earlier deploy would hold the port.\n\
             {stop}rm -f {sv}\n",
            upload = self.upload(&self.unit_file(), unit_len, "644"),
            stop = self.stop_supervised(),
            sv = quote(&self.supervise()),
        )
    }

    pub fn start_unit(&self, force: bool) -> String {
        format!(
            "set -e\nu={u}\nsystemctl enable --quiet \"$u\"\n\
             if [ -e {m} ] || [ {force} = 1 ] || ! systemctl is-active --quiet \"$u\"; then\n\
             \x20 systemctl restart \"$u\"; echo restarted\n\
             else\n\
             \x20 echo running, unchanged\n\
             fi\n\
             rm -f {m}\n",
            u = quote(&self.unit),
            m = quote(&self.marker()),
            force = u8::from(force),
        )
    }

    /// Prints `crashed` if the unit died since it was started.
    pub fn unit_crashed(&self) -> String {
        format!(
            "u={}\ns=$(systemctl show -p ActiveState --value \"$u\")\n\
             [ \"$s\" = failed ] || [ \"$(systemctl show -p SubState --value \"$u\")\" = auto-restart ] && echo crashed\n\
             true\n",
            quote(&self.unit)
        )
    }

    pub fn unit_log(&self) -> String {
        format!("journalctl -u {} -n 15 --no-pager -o cat 2>&1", quote(&self.unit))
    }

    /// Supervisor: the script (stdin), and no unit left from before.
    pub fn install_supervisor(&self) -> String {
        format!(
            "{HELPERS}# A unit left from an earlier deploy would hold the port.\n\
             {stop_unit}{upload}\
             # A new supervisor script needs a new supervisor.\n\
             if [ \"$changed\" = 1 ]; then stop {sup} {supm}; fi\n",
            stop_unit = self.stop_unit(),
            upload = self.upload(&self.supervise(), SUPERVISOR.len() as u64, "755"),
            sup = quote(&self.run("-supervisor.pid")),
            supm = quote(&self.supervisor_match()),
        )
    }

    /// Starts the supervisor, or has it restart scaler (SIGHUP) when a file
    /// changed; marks the log so [`Files::supervisor_crashed`] sees only
    /// what follows.
    pub fn start_supervisor(&self, force: bool) -> String {
        format!(
            "{HELPERS}sup={sup}\npid={pid}\n\
             echo \"$(date -u +%Y-%m-%dT%H:%M:%SZ) cargo xtask deploy: start\" >>{log}\n\
             if s=$(cat \"$sup\" 2>/dev/null) && ours \"$s\" {supm}; then\n\
             \x20 if [ -e {m} ] || [ {force} = 1 ]; then\n\
             \x20   old=$(cat \"$pid\" 2>/dev/null || true); i=0\n\
             \x20   # SIGHUP: the supervisor stops scaler and starts the new binary.\n\
             \x20   while [ $i -lt 300 ]; do\n\
             \x20     [ $((i % 20)) -eq 0 ] && kill -HUP \"$s\"\n\
             \x20     new=$(cat \"$pid\" 2>/dev/null || true)\n\
             \x20     [ -n \"$new\" ] && [ \"$new\" != \"$old\" ] && break\n\
             \x20     sleep 0.1; i=$((i+1))\n\
             \x20   done\n\
             \x20   [ $i -lt 300 ] || {{ echo \"the supervisor did not restart scaler {r} within 30 s\" >&2; exit 1; }}\n\
             \x20   echo restarted\n\
             \x20 else echo running, unchanged; fi\n\
             else\n\
             \x20 rm -f \"$sup\" \"$pid\"\n\
             \x20 cd /\n\
             \x20 env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SCALER_LOG=info \\\n\
             \x20   setsid -f /bin/sh {sv} {r} {prefix} </dev/null >>{log} 2>&1\n\
             \x20 i=0; while [ ! -s \"$pid\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
             \x20 [ -s \"$pid\" ] || {{ echo \"the supervisor did not start; see {log}\" >&2; exit 1; }}\n\
             \x20 echo started\n\
             fi\n\
             rm -f {m}\n",
            sup = quote(&self.run("-supervisor.pid")),
            pid = quote(&self.run(".pid")),
            supm = quote(&self.supervisor_match()),
            m = quote(&self.marker()),
            force = u8::from(force),
            r = self.r(),
            sv = quote(&self.supervise()),
            prefix = quote(&self.p),
            log = quote(&self.log()),
        )
    }

    /// Prints `crashed` if the supervisor noted an exit after the start
    /// step's mark.
    pub fn supervisor_crashed(&self) -> String {
        format!(
            "awk '/cargo xtask deploy: /{{n=0}} /scaler-supervise: scaler {r} exited/{{n++}} END{{if(n) print \"crashed\"}}' {log}\n",
            r = self.r(),
            log = quote(&self.log()),
        )
    }

    pub fn supervisor_log(&self) -> String {
        format!("tail -n 15 {} 2>&1", quote(&self.log()))
    }

    /// Undeploy: whichever way it was kept running, it stops.
    pub fn stop_all(&self) -> String {
        format!(
            "{HELPERS}{stop_unit}{stop}\
             if p=$(cat {pid} 2>/dev/null) && ours \"$p\" {scm} && ! gone \"$p\"; then\n\
             \x20 echo \"scaler {r} (pid $p) is still running\" >&2; exit 1\n\
             fi\n\
             echo stopped\n",
            stop_unit = self.stop_unit(),
            stop = self.stop_supervised(),
            pid = quote(&self.run(".pid")),
            scm = quote(&self.scaler_match()),
            r = self.r(),
        )
    }

    /// Undeploy: this role's files; the binary only when the other role
    /// does not use it; the prefix's directories once empty.
    pub fn remove(&self) -> String {
        let other = match self.role {
            Role::Agent => Role::Aggregator,
            Role::Aggregator => Role::Agent,
        };
        let [cert, key, ca] = super::hosts::tls_paths(&self.p, self.role);
        format!(
            "cd /\nrm -f {cfg} {pid} {sup} {m} {log} {log}.1 {cert} {key}\n\
             # The binary (and the fleet CA) stay while the other role still uses them.\n\
             [ -e {other} ] || rm -f {bin} {sv} {ca}\n\
             for d in bin etc run log; do rmdir {prefix}/$d 2>/dev/null || true; done\n\
             rmdir {prefix} 2>/dev/null || true\n",
            cfg = quote(&self.config()),
            pid = quote(&self.run(".pid")),
            sup = quote(&self.run("-supervisor.pid")),
            m = quote(&self.marker()),
            log = quote(&self.log()),
            cert = quote(&cert),
            key = quote(&key),
            ca = quote(&ca),
            other = quote(&format!("{}/etc/{}.toml", self.p, other.name())),
            bin = quote(&self.bin()),
            sv = quote(&self.supervise()),
            prefix = quote(&self.p),
        )
    }

    pub fn purge(&self) -> String {
        format!("rm -rf -- {}\n", quote(&self.state_dir))
    }
}
