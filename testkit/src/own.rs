//! A cgroup parent of the caller's own (`scaler-test-*`) in the v2 tree and
//! the v1 controllers, its children, and the processes started in them.
//! Dropping kills those processes (by PID) and removes every directory
//! below the parent, in every hierarchy.

use std::{
    io,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use crate::cgroupfs::{remove_everywhere, v1_root, v2_root};

/// v1 controllers a cgroup is created in, besides the v2 tree.
pub const V1: [&str; 4] = ["cpu", "cpuacct", "memory", "blkio"];

pub struct OwnCgroup {
    pub name: String,
    children: Vec<Child>,
}

impl OwnCgroup {
    /// `prefix-<random>` (the prefix starts with `scaler-test`), created in
    /// every hierarchy.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let me = Self { name: crate::unique(prefix), children: Vec::new() };
        me.mkdir("")?;
        Ok(me)
    }

    /// Path of `rel` (relative to this parent) in the v2 tree.
    pub fn v2(&self, rel: &str) -> Option<PathBuf> {
        v2_root().map(|r| r.join(&self.name).join(rel))
    }

    /// Path of `rel` in v1 controller `ctl`.
    pub fn v1(&self, ctl: &str, rel: &str) -> Option<PathBuf> {
        v1_root(ctl).map(|r| r.join(&self.name).join(rel))
    }

    /// The cgroup path of `rel` relative to the hierarchy roots
    /// (`/scaler-test-x/rel`; the parent itself for "").
    pub fn rel(&self, rel: &str) -> String {
        format!("/{}/{}", self.name, rel).trim_end_matches('/').to_owned()
    }

    fn create(dirs: impl IntoIterator<Item = PathBuf>) -> io::Result<()> {
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(|e| crate::error(format!("creating {}: {e}", d.display())))?;
        }
        Ok(())
    }

    /// Creates child `rel` in the v2 tree and the v1 controllers.
    pub fn mkdir(&self, rel: &str) -> io::Result<()> {
        Self::create(self.v2(rel).into_iter().chain(V1.iter().filter_map(|c| self.v1(c, rel))))
    }

    /// Creates child `rel` only in the v1 controllers (a "v1-only" cgroup).
    pub fn mkdir_v1_only(&self, rel: &str) -> io::Result<()> {
        Self::create(V1.iter().filter_map(|c| self.v1(c, rel)))
    }

    /// Writes a v1 control file (`ctl` = "cpu", `file` = "cpu.cfs_quota_us").
    pub fn set_v1(&self, ctl: &str, rel: &str, file: &str, value: &str) -> io::Result<()> {
        let p = self.v1(ctl, rel).ok_or_else(|| crate::error(format!("no v1 {ctl} hierarchy")))?.join(file);
        std::fs::write(&p, value).map_err(|e| crate::error(format!("writing {}: {e}", p.display())))
    }

    /// A command that runs `program args` inside child `rel`: a shell joins
    /// the cgroup in every hierarchy where the directory exists, then
    /// `exec`s the program. Output goes nowhere unless the caller says.
    pub fn command(&self, rel: &str, program: &str, args: &[&str]) -> Command {
        let dirs = self.v2(rel).into_iter().chain(V1.iter().filter_map(|c| self.v1(c, rel)));
        let joins: String =
            dirs.filter(|d| d.is_dir()).map(|d| format!("echo $$ > '{}/cgroup.procs' && ", d.display())).collect();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("{joins}exec \"$0\" \"$@\"")).arg(program).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    /// Starts `program args` in child `rel`; it is killed on drop.
    pub fn spawn(&mut self, rel: &str, program: &str, args: &[&str]) -> io::Result<u32> {
        let child = self
            .command(rel, program, args)
            .spawn()
            .map_err(|e| crate::error(format!("starting {program} in {}: {e}", self.rel(rel))))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Removes child `rel` from every hierarchy, killing (by PID) what runs
    /// in it first, and reaps the processes started here that have ended.
    pub fn remove(&mut self, rel: &str) -> io::Result<()> {
        if rel.is_empty() || rel.split('/').any(|s| s == "..") {
            return Err(crate::error(format!("{rel:?} is not a child")));
        }
        let dirs: Vec<PathBuf> = self.v2(rel).into_iter().chain(V1.iter().filter_map(|c| self.v1(c, rel))).collect();
        for _ in 0..50 {
            let mut pids = Vec::new();
            dirs.iter().for_each(|d| crate::cgroupfs::procs_below(d, &mut pids));
            if pids.is_empty() {
                break;
            }
            pids.into_iter().for_each(crate::kill_pid);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        match dirs.iter().find(|d| !crate::cgroupfs::remove_tree(d)) {
            Some(d) => Err(crate::error(format!("could not remove {}", d.display()))),
            None => Ok(()),
        }
    }

    /// Takes back the last process started (to wait for it).
    pub fn take_last(&mut self) -> Option<Child> {
        self.children.pop()
    }

    /// Waits for every process started here to exit.
    pub fn wait_all(&mut self) {
        for c in &mut self.children {
            let _ = c.wait();
        }
    }

    /// Kills and reaps every process started here, and anything they
    /// started inside these cgroups.
    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            crate::kill_pid(c.id());
            let _ = c.wait();
        }
        self.children.clear();
        crate::cgroupfs::kill_procs_in(&self.name);
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        self.kill_all();
        remove_everywhere(&self.name);
    }
}
