//! A busybox LXC container for a test, with its cgroups placed under a
//! `scaler-test-*` parent, no network but loopback, and the host's
//! `/usr/bin` (stress-ng, fio, iperf3) bind-mounted read-only.

use std::{
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

pub struct Lxc {
    pub name: String,
    /// The `scaler-test-*` parent of its cgroups.
    pub parent: String,
    spawned: Vec<Child>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Lxc {
    /// Creates and starts a container.
    pub fn start() -> Self {
        assert!(
            Command::new("lxc-create").arg("--version").output().is_ok(),
            "lxc is not installed: run `cargo xtask setup`"
        );
        let name = crate::unique_name();
        let parent = crate::unique_name();
        let me = Self { name: name.clone(), parent: parent.clone(), spawned: Vec::new() };
        run(Command::new("lxc-create").args(["-n", &name, "-t", "busybox"]));
        let cfg_path = format!("/var/lib/lxc/{name}/config");
        let cfg = std::fs::read_to_string(&cfg_path).unwrap();
        let mut cfg: String = cfg.lines().filter(|l| !l.starts_with("lxc.net.0.")).map(|l| format!("{l}\n")).collect();
        cfg.push_str(&format!(
            "lxc.net.0.type = empty\n\
             lxc.cgroup.dir.container = {parent}/lxc.payload.{name}\n\
             lxc.cgroup.dir.monitor = {parent}/lxc.monitor.{name}\n\
             lxc.mount.entry = /usr/bin usr/bin none ro,bind,create=dir 0 0\n\
             lxc.mount.entry = /usr/share usr/share none ro,bind,create=dir 0 0\n"
        ));
        std::fs::write(&cfg_path, cfg).unwrap();
        run(Command::new("lxc-start").args(["-n", &name]));
        let up = crate::wait_for(Duration::from_secs(10), || {
            let out = Command::new("lxc-info").args(["-n", &name, "-s"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).contains("RUNNING").then_some(())
        });
        assert!(up.is_some(), "container {name} did not reach RUNNING");
        // `lxc.net.0.type = empty` leaves loopback down.
        me.exec(&["ip", "link", "set", "lo", "up"]);
        me
    }

    /// The container's cgroup path relative to the hierarchy roots.
    pub fn cgroup(&self) -> String {
        format!("/{}/lxc.payload.{}", self.parent, self.name)
    }

    /// Runs a command inside and returns its output (fails the test on error).
    pub fn exec(&self, args: &[&str]) -> Output {
        run(Command::new("lxc-attach").args(["-n", &self.name, "--"]).args(args))
    }

    /// PID (on the host) of the container's init.
    pub fn init_pid(&self) -> u32 {
        let out = run(Command::new("lxc-info").args(["-n", &self.name, "-p", "-H"]));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|e| panic!("lxc-info -p: {e}"))
    }

    /// A host command that runs in the container's network namespace but
    /// stays in the caller's cgroups (a client outside the container that
    /// can reach its loopback services).
    pub fn in_netns(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init_pid().to_string(), "-n", "--"]).args(args);
        cmd
    }

    /// Starts a command inside in the background. Bound it with `timeout`;
    /// stopping the container ends it in any case.
    pub fn spawn(&mut self, args: &[&str]) {
        let child = Command::new("lxc-attach")
            .args(["-n", &self.name, "--"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.spawned.push(child);
    }

    /// Copies a host file into the container's rootfs (e.g. a test helper binary).
    pub fn install(&self, host_path: &str, dest: &str) {
        let target = format!("/var/lib/lxc/{}/rootfs{dest}", self.name);
        std::fs::copy(host_path, &target).unwrap_or_else(|e| panic!("copying {host_path} to {target}: {e}"));
    }

    /// Reads a v1 control file of the container's cgroup.
    pub fn get_v1(&self, ctl: &str, file: &str) -> String {
        let root = crate::cgroup::v1_root(ctl).expect("no such v1 controller");
        let p = root.join(self.cgroup().trim_start_matches('/')).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())).trim().to_owned()
    }

    /// Writes a v1 control file of the container's cgroup (it is ours).
    pub fn set_v1(&self, ctl: &str, file: &str, value: &str) {
        let root = crate::cgroup::v1_root(ctl).expect("no such v1 controller");
        let p = root.join(self.cgroup().trim_start_matches('/')).join(file);
        std::fs::write(&p, value).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
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

impl Drop for Lxc {
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new("lxc-destroy").args(["-n", &self.name, "-f"]).output();
        crate::cgroup::remove_everywhere(&self.parent);
    }
}
