//! What the benchmarks share: their own cgroups and processes (named
//! `scaler-test-bench-*`, removed on drop even when a bench fails), the
//! agent as a process, a minimal HTTP GET, and `/proc` accounting.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Every cgroup mount point (v1 controllers and the v2 tree).
fn mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            matches!(f.get(2), Some(&"cgroup") | Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

pub fn v2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

pub fn v1_root(ctl: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup") && f[3].split(',').any(|o| o == ctl)).then(|| PathBuf::from(f[1]))
    })
}

pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    format!("{prefix}-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// `scaler-test-bench-<random>` with children, in v2 and the v1 controllers.
pub struct Cgroups {
    pub name: String,
    children: Vec<Child>,
}

const V1: [&str; 4] = ["cpu", "cpuacct", "memory", "blkio"];

impl Cgroups {
    pub fn new() -> anyhow::Result<Self> {
        let me = Self { name: unique("scaler-test-bench"), children: Vec::new() };
        me.mkdir("")?;
        Ok(me)
    }

    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = v2_root().into_iter().collect();
        roots.extend(V1.iter().filter_map(|c| v1_root(c)));
        roots.into_iter().map(|r| r.join(&self.name).join(rel)).collect()
    }

    /// Creates child `rel` (empty) in every hierarchy.
    pub fn mkdir(&self, rel: &str) -> anyhow::Result<()> {
        for d in self.dirs(rel) {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    /// Creates child `rel` and starts `cmd` in it.
    pub fn child_with(&mut self, rel: &str, cmd: &[&str]) -> anyhow::Result<()> {
        self.mkdir(rel)?;
        let joins: String =
            self.dirs(rel).iter().map(|d| format!("echo $$ > '{}/cgroup.procs' && ", d.display())).collect();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{joins}exec \"$0\" \"$@\""))
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a process in a bench cgroup")?;
        self.children.push(child);
        Ok(())
    }

    /// Starts `cmd` in child `rel` (which must exist), in `cwd`, with its
    /// output in `log`; the caller waits for it.
    pub fn spawn(&self, rel: &str, cmd: &[&str], cwd: &std::path::Path, log: std::fs::File) -> anyhow::Result<Child> {
        let joins: String =
            self.dirs(rel).iter().map(|d| format!("echo $$ > '{}/cgroup.procs' && ", d.display())).collect();
        Command::new("sh")
            .arg("-c")
            .arg(format!("{joins}exec \"$0\" \"$@\""))
            .args(cmd)
            .current_dir(cwd)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a process in a bench cgroup")
    }

    /// Path relative to the hierarchy roots.
    pub fn rel(&self, child: &str) -> String {
        format!("/{}/{child}", self.name)
    }
}

fn remove_tree(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..40 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills every process inside `dir` and below (processes the bench started
/// and their children), by PID.
fn kill_below(dir: &std::path::Path) {
    if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in t.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: a process in the bench's own cgroup.
            unsafe {
                libc_kill(pid, 9);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            kill_below(&e.path());
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for root in mounts() {
            kill_below(&root.join(&self.name));
        }
        std::thread::sleep(Duration::from_millis(100));
        for root in mounts() {
            remove_tree(&root.join(&self.name));
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A `scaler agent` process, stopped on drop.
pub struct Agent {
    child: Child,
    pub addr: String,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(unique("scaler-bench"));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Agent {
    pub fn start(bin: &std::path::Path, config: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.0.join("agent.toml");
        std::fs::write(
            &cfg,
            format!("[agent]\nlisten = \"{addr}\"\nstate_dir = \"{}\"\n{config}", dir.0.join("state").display()),
        )?;
        let child = Command::new(bin)
            .args(["agent", "--config"])
            .arg(&cfg)
            .env("SCALER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let me = Self { child, addr, _dir: dir };
        let end = Instant::now() + Duration::from_secs(20);
        while http(&me.addr, "GET", "/healthz", None).is_err() {
            if Instant::now() > end {
                bail!("agent did not answer /healthz");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let body = http(&self.addr, "GET", path, None)?;
        serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    pub fn put(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let text = http(&self.addr, "PUT", path, Some(&body.to_string()))?;
        serde_json::from_str(&text).with_context(|| format!("PUT {path}: not JSON"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: the agent this bench started.
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; the body of a 2xx answer.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status")?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status}: {body}");
    }
    Ok(body.to_owned())
}

/// CPU time (user + system) of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .context("no VmRSS")
}

/// CPU use of `pid` over `secs` seconds, as a percentage of one core.
pub fn cpu_percent(pid: u32, secs: u64) -> anyhow::Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = 100.0;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid)?);
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, c1) = (Instant::now(), cpu_ticks(pid)?);
    Ok((c1 - c0) as f64 / hz / (t1 - t0).as_secs_f64() * 100.0)
}

/// Builds the release `scaler` binary and returns its path.
pub fn release_binary() -> anyhow::Result<PathBuf> {
    crate::util::run(crate::util::cargo().args(["build", "--release", "-p", "scaler-user", "--bin", "scaler"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    Ok(target.join("release/scaler").canonicalize()?)
}

/// Prints a Markdown table and returns it.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|{}|\n", head.join(" | "), head.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    print!("{s}");
    s
}

/// A busybox LXC container for a bench (cgroups under a
/// `scaler-test-bench-*` parent, loopback only, the host's `/usr/bin`
/// bind-mounted), destroyed on drop.
pub struct Lxc {
    pub name: String,
    parent: String,
}

fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Lxc {
    pub fn start() -> anyhow::Result<Self> {
        let me = Self { name: unique("scaler-test-bench"), parent: unique("scaler-test-bench") };
        run_quiet(Command::new("lxc-create").args(["-n", &me.name, "-t", "busybox"]))?;
        let path = format!("/var/lib/lxc/{}/config", me.name);
        let cfg = std::fs::read_to_string(&path)?;
        let mut cfg: String = cfg.lines().filter(|l| !l.starts_with("lxc.net.0.")).map(|l| format!("{l}\n")).collect();
        cfg.push_str(&format!(
            "lxc.net.0.type = empty\nlxc.cgroup.dir.container = {p}/lxc.payload.{n}\n\
             lxc.cgroup.dir.monitor = {p}/lxc.monitor.{n}\nlxc.mount.entry = /usr/bin usr/bin none ro,bind,create=dir 0 0\n",
            p = me.parent,
            n = me.name
        ));
        std::fs::write(&path, cfg)?;
        run_quiet(Command::new("lxc-start").args(["-n", &me.name]))?;
        std::thread::sleep(Duration::from_secs(1));
        Ok(me)
    }

    /// Runs a shell command line inside.
    pub fn sh(&self, script: &str) -> anyhow::Result<()> {
        run_quiet(Command::new("lxc-attach").args(["-n", &self.name, "--", "sh", "-c", script]))
    }

    /// Starts a shell command line inside, in the background.
    pub fn spawn_sh(&self, script: &str) -> anyhow::Result<Child> {
        Command::new("lxc-attach")
            .args(["-n", &self.name, "--", "sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("lxc-attach")
    }
}

impl Drop for Lxc {
    fn drop(&mut self) {
        let _ = Command::new("lxc-stop").args(["-n", &self.name, "-k"]).output();
        let _ = Command::new("lxc-destroy").args(["-n", &self.name, "-f"]).output();
        for root in mounts() {
            kill_below(&root.join(&self.parent));
        }
        for root in mounts() {
            remove_tree(&root.join(&self.parent));
        }
    }
}
