//! A busybox LXC container for a test ([`scaler_testkit::Container`]:
//! cgroups under a `scaler-test-*` parent, loopback only, the host's
//! `/usr/bin` and `/usr/share` bind-mounted read-only), failing the test on
//! error.

use std::process::{Command, Output};

use scaler_testkit::Container;

pub struct Lxc {
    pub name: String,
    /// The `scaler-test-*` parent of its cgroups.
    pub parent: String,
    c: Container,
}

impl Lxc {
    /// Creates and starts a container.
    pub fn start() -> Self {
        let c = Container::start(scaler_testkit::PREFIX).unwrap_or_else(|e| panic!("{e}"));
        Self { name: c.name.clone(), parent: c.parent.clone(), c }
    }

    /// The container's cgroup path relative to the hierarchy roots.
    pub fn cgroup(&self) -> String {
        self.c.cgroup()
    }

    /// Runs a command inside and returns its output (fails the test on error).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.c.exec(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// PID (on the host) of the container's init.
    pub fn init_pid(&self) -> u32 {
        self.c.init_pid().unwrap_or_else(|e| panic!("{e}"))
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
        self.c.spawn(args).unwrap_or_else(|e| panic!("lxc-attach {args:?}: {e}"));
    }

    /// Copies a host file into the container's rootfs (e.g. a test helper binary).
    pub fn install(&self, host_path: &str, dest: &str) {
        let target = format!("/var/lib/lxc/{}/rootfs{dest}", self.name);
        std::fs::copy(host_path, &target).unwrap_or_else(|e| panic!("copying {host_path} to {target}: {e}"));
    }

    fn v1_file(&self, ctl: &str, file: &str) -> std::path::PathBuf {
        let root = crate::cgroup::v1_root(ctl).expect("no such v1 controller");
        root.join(self.cgroup().trim_start_matches('/')).join(file)
    }

    /// Reads a v1 control file of the container's cgroup.
    pub fn get_v1(&self, ctl: &str, file: &str) -> String {
        let p = self.v1_file(ctl, file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())).trim().to_owned()
    }

    /// Writes a v1 control file of the container's cgroup (it is ours).
    pub fn set_v1(&self, ctl: &str, file: &str, value: &str) {
        let p = self.v1_file(ctl, file);
        std::fs::write(&p, value).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }

    /// Stops the container (killing everything in it).
    pub fn stop(&mut self) {
        self.c.stop();
    }
}
