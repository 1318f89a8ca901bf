//! A test's own cgroup parent, present in every mounted hierarchy
//! ([`scaler_testkit::OwnCgroup`], failing the test on error).

use std::{path::PathBuf, time::Duration};

use scaler_testkit::OwnCgroup;
pub use scaler_testkit::cgroupfs::{kill_procs_in, mounts, remove_everywhere, v1_root};

/// The v2 mount point.
pub fn v2_root() -> PathBuf {
    scaler_testkit::cgroupfs::v2_root().expect("no cgroup2 mount")
}

/// Removes `dir` and everything below it, deepest first; warns on failure.
pub fn remove_tree(dir: &std::path::Path) {
    if !scaler_testkit::cgroupfs::remove_tree(dir) {
        eprintln!("warning: could not remove {}", dir.display());
    }
}

/// `scaler-test-<random>` in every hierarchy, children below it, and the
/// processes started in them; all removed on drop.
pub struct TestCgroup {
    pub name: String,
    own: OwnCgroup,
}

impl TestCgroup {
    pub fn new() -> Self {
        let own = OwnCgroup::new(scaler_testkit::PREFIX).unwrap();
        Self { name: own.name.clone(), own }
    }

    /// Path of `rel` (relative to this parent) in the v2 tree.
    pub fn v2(&self, rel: &str) -> PathBuf {
        self.own.v2(rel).expect("no cgroup2 mount")
    }

    /// Path of `rel` in v1 controller `ctl`.
    pub fn v1(&self, ctl: &str, rel: &str) -> Option<PathBuf> {
        self.own.v1(ctl, rel)
    }

    /// Cgroup path relative to the hierarchy roots (`/scaler-test-x/rel`).
    pub fn rel(&self, rel: &str) -> String {
        self.own.rel(rel)
    }

    /// Creates child `rel` in the v2 tree and the v1 controllers.
    pub fn child(&self, rel: &str) -> String {
        self.own.mkdir(rel).unwrap();
        self.rel(rel)
    }

    /// Creates child `rel` only in the v1 controllers (a "v1-only" cgroup).
    pub fn v1_only_child(&self, rel: &str) -> String {
        self.own.mkdir_v1_only(rel).unwrap();
        self.rel(rel)
    }

    /// Writes a v1 control file (`ctl` = "cpu", file = "cpu.cfs_quota_us").
    pub fn set_v1(&self, ctl: &str, rel: &str, file: &str, value: &str) {
        self.own.set_v1(ctl, rel, file, value).unwrap();
    }

    /// Starts `program args` inside cgroup `rel` (joined in every hierarchy
    /// where the directory exists).
    pub fn spawn(&mut self, rel: &str, program: &str, args: &[&str]) -> u32 {
        let pid = self.own.spawn(rel, program, args).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        pid
    }

    /// Runs `program args` inside cgroup `rel` to completion; true on success.
    pub fn run(&mut self, rel: &str, program: &str, args: &[&str]) -> bool {
        self.own.spawn(rel, program, args).unwrap();
        let mut c = self.own.take_last().expect("just spawned");
        c.wait().is_ok_and(|s| s.success())
    }

    /// Waits for every process started here to exit (bounded by their own timeouts).
    pub fn wait_all(&mut self) {
        self.own.wait_all();
    }

    /// Kills and reaps every process started here, and anything they
    /// started inside the test's cgroups.
    pub fn kill_all(&mut self) {
        self.own.kill_all();
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}
