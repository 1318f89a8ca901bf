//! Real container engines for the end-to-end tests, each a daemon of the
//! test's own (its own socket and state under `scaler-test-*` paths,
//! stopped on drop): `dockerd` (cgroupfs driver), Podman's API service
//! (runc, cgroupfs), and LXD (a `dir` pool, no network). Images are built
//! here from busybox-static (no registry); the host's `/usr` is mounted
//! read-only so stress-ng runs inside. Containers are named
//! `scaler-test-*`, their cgroups sit under a `scaler-test-*` parent, and
//! they are removed on drop.

use std::{
    io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::lxc::run;

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Docker,
    Podman,
    Lxd,
}

/// A daemon started here, and how to run its client.
pub struct Engine {
    pub kind: Kind,
    /// Its API socket (what the agent's `[engines]` names).
    pub socket: PathBuf,
    child: Option<Child>,
    state: PathBuf,
    log: PathBuf,
}

/// The image every engine runs: busybox, `/lib*` pointing into a `/usr`
/// that is the host's (mounted at run time).
pub const IMAGE: &str = "scaler-test-busybox";

/// A busybox root file system as a tar (in `dir`).
pub fn rootfs_tar(dir: &Path) -> io::Result<PathBuf> {
    let root = dir.join("rootfs");
    for d in ["bin", "sbin", "tmp", "proc", "sys", "dev", "etc", "usr", "root"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .map_err(|e| crate::error(format!("/bin/busybox (busybox-static): {e}")))?;
    let list = run(Command::new("/bin/busybox").arg("--list"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init"))?;
    std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
    std::os::unix::fs::symlink("usr/lib64", root.join("lib64"))?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."))?;
    Ok(tar)
}

fn wait_ok(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> io::Result<()> {
    crate::wait_for(timeout, || check().then_some(())).ok_or_else(|| crate::error(format!("{what} did not come up")))
}

impl Engine {
    /// Starts the engine's daemon and builds [`IMAGE`] in it.
    pub fn start(kind: Kind) -> io::Result<Self> {
        let name = match kind {
            Kind::Docker => "docker",
            Kind::Podman => "podman",
            Kind::Lxd => "lxd",
        };
        let state = PathBuf::from(format!("/var/lib/{}-{name}", crate::PREFIX));
        let run_dir = PathBuf::from(format!("/run/{}-{name}", crate::PREFIX));
        std::fs::create_dir_all(&state)?;
        std::fs::create_dir_all(&run_dir)?;
        let log = run_dir.join("daemon.log");
        let socket = match kind {
            Kind::Lxd => state.join("unix.socket"),
            _ => run_dir.join("api.sock"),
        };
        let _ = std::fs::remove_file(&socket);
        let mut me = Self { kind, socket, child: None, state, log: log.clone() };
        let mut cmd = match kind {
            Kind::Docker => {
                let mut c = Command::new("dockerd");
                c.arg("-H")
                    .arg(format!("unix://{}", me.socket.display()))
                    .arg("--data-root")
                    .arg(me.state.join("data"))
                    .arg("--exec-root")
                    .arg(run_dir.join("exec"))
                    .arg("--pidfile")
                    .arg(run_dir.join("dockerd.pid"))
                    .args(["--exec-opt", "native.cgroupdriver=cgroupfs", "--iptables=false", "--bridge=none"]);
                c
            }
            Kind::Podman => {
                let mut c = me.cli();
                c.args(["system", "service", "--time=0"]).arg(format!("unix://{}", me.socket.display()));
                c
            }
            Kind::Lxd => {
                let mut c = Command::new("lxd");
                c.args(["--group", "root"]).env("LXD_DIR", &me.state);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| crate::error(format!("starting {name} (cargo xtask setup installs it): {e}")))?;
        me.child = Some(child);
        let sock = me.socket.clone();
        wait_ok(name, Duration::from_secs(60), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
                && match kind {
                    Kind::Lxd => run(me.cli().arg("list")).is_ok(),
                    _ => run(me.cli().arg("version")).is_ok(),
                }
        })
        .map_err(|e| crate::error(format!("{e}: {}", crate::read_log(&log))))?;
        me.build_image()?;
        Ok(me)
    }

    /// The engine's client, pointed at this daemon.
    pub fn cli(&self) -> Command {
        match self.kind {
            Kind::Docker => {
                // Debian's client (a newer one may sit first on PATH).
                let bin = if Path::new("/usr/bin/docker").exists() { "/usr/bin/docker" } else { "docker" };
                let mut c = Command::new(bin);
                c.arg("-H").arg(format!("unix://{}", self.socket.display()));
                c
            }
            Kind::Podman => {
                let mut c = Command::new("podman");
                c.arg("--root")
                    .arg(self.state.join("storage"))
                    .arg("--runroot")
                    .arg(format!("/run/{}-podman/run", crate::PREFIX))
                    .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
                c
            }
            Kind::Lxd => {
                let mut c = Command::new("lxc");
                c.env("LXD_DIR", &self.state);
                c
            }
        }
    }

    fn build_image(&self) -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let tar = rootfs_tar(dir.path())?;
        match self.kind {
            Kind::Docker | Kind::Podman => {
                run(self.cli().arg("import").arg(&tar).arg(format!("{IMAGE}:latest")))?;
            }
            Kind::Lxd => {
                // A fresh daemon: a `dir` pool, a profile with a root disk.
                if run(self.cli().args(["storage", "show", "default"])).is_err() {
                    let preseed = "config: {}\nnetworks: []\nstorage_pools:\n- name: default\n  driver: dir\n\
                                   profiles:\n- name: default\n  devices:\n    root:\n      path: /\n      \
                                   pool: default\n      type: disk\n";
                    let mut init = Command::new("lxd")
                        .args(["init", "--preseed"])
                        .env("LXD_DIR", &self.state)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()?;
                    use std::io::Write as _;
                    init.stdin
                        .take()
                        .ok_or_else(|| crate::error("lxd init: no stdin"))?
                        .write_all(preseed.as_bytes())?;
                    let out = init.wait_with_output()?;
                    if !out.status.success() {
                        return Err(crate::error(format!("lxd init: {}", String::from_utf8_lossy(&out.stderr))));
                    }
                }
                if run(self.cli().args(["image", "show", IMAGE])).is_err() {
                    let meta = dir.path().join("metadata.yaml");
                    std::fs::write(&meta, "architecture: x86_64\ncreation_date: 1\nproperties:\n  os: busybox\n")?;
                    let meta_tar = dir.path().join("meta.tar");
                    run(Command::new("tar").arg("-C").arg(dir.path()).arg("-cf").arg(&meta_tar).arg("metadata.yaml"))?;
                    run(self.cli().args(["image", "import"]).arg(&meta_tar).arg(&tar).args(["--alias", IMAGE]))?;
                }
            }
        }
        Ok(())
    }

    /// Starts a container named `prefix-<random>` running `sh` idle, its
    /// cgroups under a `scaler-test-*` parent, with labels `labels`.
    pub fn run(&self, prefix: &str, labels: &[(&str, &str)]) -> io::Result<EngineContainer<'_>> {
        let name = crate::unique(prefix);
        let parent = crate::unique(prefix);
        let me = EngineContainer {
            engine: self,
            name,
            parent,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        self.create(&me)?;
        Ok(me)
    }

    /// Creates and starts `c` (its name, parent and labels).
    fn create(&self, me: &EngineContainer) -> io::Result<()> {
        let labels = &me.labels;
        let idle = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"];
        match self.kind {
            Kind::Docker | Kind::Podman => {
                let mut c = self.cli();
                c.args(["run", "-d", "--name", &me.name, "--network", "none", "-v", "/usr:/usr:ro"]);
                let cgroup_parent = if self.kind == Kind::Docker {
                    format!("/{}/docker", me.parent)
                } else {
                    format!("/{}", me.parent)
                };
                c.arg("--cgroup-parent").arg(cgroup_parent);
                if self.kind == Kind::Podman {
                    // Debian's default limits exceed this host's hard ones.
                    c.args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]);
                }
                for (k, v) in labels {
                    c.arg("--label").arg(format!("{k}={v}"));
                }
                c.arg(format!("{IMAGE}:latest")).args(idle);
                run(&mut c)?;
            }
            Kind::Lxd => {
                let raw = format!(
                    "lxc.cgroup.dir.container = {p}/lxc.payload.{n}\nlxc.cgroup.dir.monitor = {p}/lxc.monitor.{n}\n",
                    p = me.parent,
                    n = me.name
                );
                let mut c = self.cli();
                c.args(["init", IMAGE, &me.name, "-c", "security.privileged=true", "-c"]).arg(format!("raw.lxc={raw}"));
                for (k, v) in labels {
                    c.arg("-c").arg(format!("user.{k}={v}"));
                }
                run(&mut c)?;
                run(self
                    .cli()
                    .args(["config", "device", "add", &me.name, "usr", "disk", "source=/usr", "path=/usr"])
                    .arg("readonly=true"))?;
                run(self.cli().args(["start", &me.name]))?;
            }
        }
        Ok(())
    }

    /// What the daemon logged.
    pub fn log(&self) -> String {
        crate::read_log(&self.log)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.kind == Kind::Lxd {
            let _ = Command::new("lxd").args(["shutdown", "--timeout", "20"]).env("LXD_DIR", &self.state).output();
        }
        if let Some(mut c) = self.child.take() {
            crate::stop(&mut c, Duration::from_secs(15));
        }
    }
}

/// A container of one of the engines; removed (and its cgroup parent) on
/// drop.
pub struct EngineContainer<'a> {
    pub engine: &'a Engine,
    pub name: String,
    /// The `scaler-test-*` parent of its cgroups.
    pub parent: String,
    labels: Vec<(String, String)>,
}

impl EngineContainer<'_> {
    /// Removes it and makes it again under the same name (Docker and
    /// Podman: a new id, so a new cgroup; what `docker compose up` does to
    /// a changed service).
    pub fn recreate(&self) -> io::Result<()> {
        match self.engine.kind {
            Kind::Docker => self.client(&["rm", "-f", &self.name])?,
            Kind::Podman => self.client(&["rm", "-f", "-t", "0", &self.name])?,
            Kind::Lxd => self.client(&["delete", "-f", &self.name])?,
        };
        self.engine.create(self)
    }

    /// `exec` of `args` inside, detached (bound it with `timeout`).
    pub fn exec_detached(&self, args: &[&str]) -> io::Result<()> {
        match self.engine.kind {
            Kind::Docker | Kind::Podman => {
                run(self.engine.cli().args(["exec", "-d", &self.name]).args(args))?;
            }
            Kind::Lxd => {
                // `lxc exec` has no detach: a background client, reaped by
                // a thread of its own.
                let mut child = self
                    .engine
                    .cli()
                    .args(["exec", &self.name, "--"])
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                std::thread::spawn(move || child.wait());
            }
        }
        Ok(())
    }

    /// Runs the engine client with `args` (its output, or an error).
    pub fn client(&self, args: &[&str]) -> io::Result<String> {
        let out = run(self.engine.cli().args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets its CPU limit the engine's own way (`docker update --cpus`,
    /// `podman update --cpu-quota`, `lxc config set`), as an operator would.
    pub fn set_cpu_by_hand(&self, millicores: u64) -> io::Result<()> {
        let quota = (millicores * 100).to_string();
        match self.engine.kind {
            Kind::Docker => {
                let cpus = format!("{}.{:03}", millicores / 1000, millicores % 1000);
                self.client(&["update", "--cpus", &cpus, &self.name]).map(drop)
            }
            Kind::Podman => {
                self.client(&["update", "--cpu-period", "100000", "--cpu-quota", &quota, &self.name]).map(drop)
            }
            Kind::Lxd => {
                let allowance = format!("{}ms/100ms", millicores / 10);
                self.client(&["config", "set", &self.name, "limits.cpu.allowance", &allowance]).map(drop)
            }
        }
    }

    /// Restarts the container through its engine.
    /// Restarts the container through its engine (once more after 2 s if
    /// the engine says it failed: Podman 4.3 sometimes reports a stop that
    /// had to resort to SIGKILL as a failure).
    pub fn restart(&self) -> io::Result<()> {
        let once = || match self.engine.kind {
            Kind::Docker | Kind::Podman => self.client(&["restart", "-t", "1", &self.name]).map(drop),
            Kind::Lxd => self.client(&["restart", "-f", &self.name]).map(drop),
        };
        once().or_else(|first| {
            std::thread::sleep(Duration::from_secs(2));
            once().map_err(|second| crate::error(format!("restart failed twice: {first}; then: {second}")))
        })
    }
}

impl Drop for EngineContainer<'_> {
    fn drop(&mut self) {
        let _ = match self.engine.kind {
            Kind::Docker => self.engine.cli().args(["rm", "-f", &self.name]).output(),
            Kind::Podman => self.engine.cli().args(["rm", "-f", "-t", "0", &self.name]).output(),
            Kind::Lxd => self.engine.cli().args(["delete", "-f", &self.name]).output(),
        };
        crate::cgroupfs::remove_everywhere(&self.parent);
    }
}
