//! A busybox LXC container with its cgroups under a `scaler-test-*` parent,
//! no network but loopback, and the host's `/usr/bin` (stress-ng, fio,
//! iperf3, ...) and `/usr/share` bind-mounted read-only. Destroyed on drop.

use std::{
    io,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

pub struct Container {
    pub name: String,
    /// The `scaler-test-*` parent of its cgroups.
    pub parent: String,
    spawned: Vec<Child>,
}

/// Runs `cmd`; its output, or an error with what it printed.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.output().map_err(|e| crate::error(format!("running {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(crate::error(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

impl Container {
    /// Creates and starts a container named `prefix-<random>`.
    pub fn start(prefix: &str) -> io::Result<Self> {
        if Command::new("lxc-create").arg("--version").output().is_err() {
            return Err(crate::error("lxc is not installed: run `cargo xtask setup`"));
        }
        let me = Self { name: crate::unique(prefix), parent: crate::unique(prefix), spawned: Vec::new() };
        run(Command::new("lxc-create").args(["-n", &me.name, "-t", "busybox"]))?;
        let cfg_path = format!("/var/lib/lxc/{}/config", me.name);
        let cfg = std::fs::read_to_string(&cfg_path)?;
        let mut cfg: String = cfg.lines().filter(|l| !l.starts_with("lxc.net.0.")).map(|l| format!("{l}\n")).collect();
        cfg.push_str(&format!(
            "lxc.net.0.type = empty\n\
             lxc.cgroup.dir.container = {p}/lxc.payload.{n}\n\
             lxc.cgroup.dir.monitor = {p}/lxc.monitor.{n}\n\
             lxc.mount.entry = /usr/bin usr/bin none ro,bind,create=dir 0 0\n\
             lxc.mount.entry = /usr/share usr/share none ro,bind,create=dir 0 0\n",
            p = me.parent,
            n = me.name
        ));
        std::fs::write(&cfg_path, cfg)?;
        run(Command::new("lxc-start").args(["-n", &me.name]))?;
        let up = crate::wait_for(Duration::from_secs(10), || {
            let out = Command::new("lxc-info").args(["-n", &me.name, "-s"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).contains("RUNNING").then_some(())
        });
        if up.is_none() {
            return Err(crate::error(format!("container {} did not reach RUNNING", me.name)));
        }
        // `lxc.net.0.type = empty` leaves loopback down.
        me.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(me)
    }

    /// The container's cgroup path relative to the hierarchy roots.
    pub fn cgroup(&self) -> String {
        format!("/{}/lxc.payload.{}", self.parent, self.name)
    }

    /// `lxc-attach` running `args` inside (output to nowhere unless set).
    pub fn attach(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("lxc-attach");
        cmd.args(["-n", &self.name, "--"]).args(args);
        cmd
    }

    /// Runs `args` inside to completion; its output.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        run(&mut self.attach(args))
    }

    /// Starts `args` inside in the background; waited for when the
    /// container stops. Bound it with `timeout`.
    pub fn spawn(&mut self, args: &[&str]) -> io::Result<u32> {
        let child = self.attach(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let pid = child.id();
        self.spawned.push(child);
        Ok(pid)
    }

    /// PID (on the host) of the container's init.
    pub fn init_pid(&self) -> io::Result<u32> {
        let out = run(Command::new("lxc-info").args(["-n", &self.name, "-p", "-H"]))?;
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| crate::error(format!("lxc-info -p: {e}")))
    }

    /// Stops the container (killing everything in it).
    pub fn stop(&mut self) {
        let _ = Command::new("lxc-stop").args(["-n", &self.name, "-k"]).output();
        for c in &mut self.spawned {
            let _ = c.wait();
        }
        self.spawned.clear();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new("lxc-destroy").args(["-n", &self.name, "-f"]).output();
        crate::cgroupfs::remove_everywhere(&self.parent);
    }
}
