//! A test's own cgroup parent, present in every mounted hierarchy.

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

/// Every cgroup mount (v1 controllers and the v2 tree).
pub fn mounts() -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.get(2) {
                Some(&"cgroup2") => Some(("unified".to_owned(), PathBuf::from(f[1]))),
                Some(&"cgroup") => Some((f[3].split(',').next_back().unwrap_or("").to_owned(), PathBuf::from(f[1]))),
                _ => None,
            }
        })
        .collect()
}

/// The v2 mount point.
pub fn v2_root() -> PathBuf {
    mounts().into_iter().find(|(k, _)| k == "unified").map(|(_, p)| p).expect("no cgroup2 mount")
}

/// Mount point of v1 controller `ctl`, if this host has v1 hierarchies.
pub fn v1_root(ctl: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup") && f[3].split(',').any(|o| o == ctl)).then(|| PathBuf::from(f[1]))
    })
}

/// `scaler-test-<random>` in every hierarchy, children below it, and the
/// processes started in them. Dropping kills those processes (by PID) and
/// removes every directory below the parent, in every hierarchy.
pub struct TestCgroup {
    pub name: String,
    children: Vec<Child>,
}

/// Controllers a test cgroup is created in (besides the v2 tree).
const V1: [&str; 4] = ["cpu", "cpuacct", "memory", "blkio"];

impl TestCgroup {
    pub fn new() -> Self {
        let name = crate::unique_name();
        let me = Self { name, children: Vec::new() };
        me.mkdir("");
        me
    }

    /// Path of `rel` (relative to this parent) in the v2 tree.
    pub fn v2(&self, rel: &str) -> PathBuf {
        v2_root().join(&self.name).join(rel)
    }

    /// Path of `rel` in v1 controller `ctl`.
    pub fn v1(&self, ctl: &str, rel: &str) -> Option<PathBuf> {
        v1_root(ctl).map(|r| r.join(&self.name).join(rel))
    }

    /// Cgroup path relative to the hierarchy roots (`/scaler-test-x/rel`).
    pub fn rel(&self, rel: &str) -> String {
        format!("/{}/{}", self.name, rel).trim_end_matches('/').to_owned()
    }

    fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.v2(rel)).unwrap();
        for ctl in V1 {
            if let Some(p) = self.v1(ctl, rel) {
                std::fs::create_dir_all(p).unwrap();
            }
        }
    }

    /// Creates child `rel` in the v2 tree and the v1 controllers.
    pub fn child(&self, rel: &str) -> String {
        self.mkdir(rel);
        self.rel(rel)
    }

    /// Creates child `rel` only in the v1 controllers (a "v1-only" cgroup).
    pub fn v1_only_child(&self, rel: &str) -> String {
        for ctl in V1 {
            if let Some(p) = self.v1(ctl, rel) {
                std::fs::create_dir_all(p).unwrap();
            }
        }
        self.rel(rel)
    }

    /// Writes a v1 control file (`ctl` = "cpu", file = "cpu.cfs_quota_us").
    pub fn set_v1(&self, ctl: &str, rel: &str, file: &str, value: &str) {
        let p = self.v1(ctl, rel).expect("no such v1 controller").join(file);
        std::fs::write(&p, value).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }

    /// Starts `program args` inside cgroup `rel`: a shell joins the cgroup in
    /// every hierarchy where the directory exists, then `exec`s the program.
    pub fn spawn(&mut self, rel: &str, program: &str, args: &[&str]) -> u32 {
        let mut dirs: Vec<PathBuf> = vec![self.v2(rel)];
        dirs.extend(V1.iter().filter_map(|c| self.v1(c, rel)));
        let joins: String = dirs
            .iter()
            .filter(|d| d.is_dir())
            .map(|d| format!("echo $$ > '{}/cgroup.procs' && ", d.display()))
            .collect();
        let script = format!("{joins}exec \"$0\" \"$@\"");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        std::thread::sleep(Duration::from_millis(50));
        pid
    }

    /// Runs `program args` inside cgroup `rel` to completion; true on success.
    pub fn run(&mut self, rel: &str, program: &str, args: &[&str]) -> bool {
        self.spawn(rel, program, args);
        let mut c = self.children.pop().expect("just spawned");
        c.wait().is_ok_and(|s| s.success())
    }

    /// Waits for every process started here to exit (bounded by their own timeouts).
    pub fn wait_all(&mut self) {
        for c in &mut self.children {
            let _ = c.wait();
        }
    }

    /// Kills and reaps every process started here, and anything they
    /// started inside the test's cgroups.
    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            crate::kill_pid(c.id());
            let _ = c.wait();
        }
        self.children.clear();
        kill_procs_in(&self.name);
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes `dir` and everything below it, deepest first (cgroup directories
/// can only be removed empty). Retries briefly while exiting processes leave.
pub fn remove_tree(dir: &std::path::Path) {
    if !dir.is_dir() {
        return;
    }
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
    eprintln!("warning: could not remove {}", dir.display());
}

/// Every process in `dir` or below it.
fn procs_below(dir: &std::path::Path, out: &mut Vec<i32>) {
    if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            procs_below(&e.path(), out);
        }
    }
}

/// Kills every process left in a test's own cgroups (children of what the
/// test started, e.g. what `timeout` ran), by PID, until none is left.
pub fn kill_procs_in(name: &str) {
    assert!(name.starts_with("scaler-test-"), "refusing to touch {name}");
    for _ in 0..50 {
        let mut pids = Vec::new();
        for (_, root) in mounts() {
            procs_below(&root.join(name), &mut pids);
        }
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: a process inside this test's own cgroup.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes `name` (a `scaler-test-*` parent) from every hierarchy, after
/// killing what still runs in it.
pub fn remove_everywhere(name: &str) {
    assert!(name.starts_with("scaler-test-"), "refusing to remove {name}");
    kill_procs_in(name);
    for (_, root) in mounts() {
        remove_tree(&root.join(name));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.kill_all();
        remove_everywhere(&self.name);
    }
}
