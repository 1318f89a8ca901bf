//! Local test hosts for the deploy tests: network namespaces
//! (`scaler-test-<hex>`) on a bridge in the root namespace (one veth pair
//! each), with their own address in a private /24 and their own `sshd`
//! (Debian's openssh-server) that lets in a test key as root. sshd enters
//! only the network namespace (`nsenter --net`): what runs through it sees
//! this machine's /sys, cgroups and files.
//!
//! [`TestNet`] owns the bridge and the /24; [`TestHost`] owns a namespace,
//! its veth and its sshd. Dropping a host stops every process inside its
//! namespace (by PID, from `ip netns pids`: sshd, and whatever was started
//! through it), then deletes the namespace; dropping the net deletes the
//! bridge. Both hold their files in temporary directories.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Runs a command, panicking with its stderr if it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program}: {e} (is it installed?)"));
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails with a clear message unless `ip`, `sshd`, `ssh` and `ssh-keygen`
/// are here.
pub fn require_tools() {
    for (tool, package) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh", "openssh-client"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
    ] {
        assert!(Path::new(tool).exists(), "{tool} is missing: apt-get install {package}");
    }
    assert!(
        Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success()),
        "`ip` is missing: apt-get install iproute2"
    );
}

/// An ed25519 key pair in `dir`: (private key path, public key line).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    sh("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key.to_str().unwrap()]);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public)
}

/// A bridge (`st<hex>br`) with `10.231.X.1/24`, X random among the /24s
/// this machine does not use.
pub struct TestNet {
    pub bridge: String,
    pub subnet: [u8; 3],
    hex: String,
    next: u8,
    made_run_sshd: bool,
}

impl TestNet {
    pub fn new() -> Self {
        let hex = crate::unique_name().trim_start_matches("scaler-test-").to_owned();
        let used = sh("ip", &["-4", "-o", "addr"]) + &sh("ip", &["-4", "route"]);
        let seed = u8::from_str_radix(&hex[..2], 16).unwrap();
        let x = (0..=255u8)
            .map(|k| seed.wrapping_add(k))
            .find(|x| !used.contains(&format!("10.231.{x}.")))
            .expect("every 10.231.X.0/24 is in use on this machine");
        let bridge = format!("st{hex}br");
        sh("ip", &["link", "add", &bridge, "type", "bridge"]);
        let me = Self { bridge, subnet: [10, 231, x], hex, next: 2, made_run_sshd: false };
        sh("ip", &["addr", "add", &format!("{}/24", me.addr(1)), "dev", &me.bridge]);
        sh("ip", &["link", "set", &me.bridge, "up"]);
        me
    }

    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], host)
    }

    /// An address in the /24 that no host has (nothing answers there).
    pub fn unused_addr(&self) -> Ipv4Addr {
        self.addr(250)
    }

    /// A new host on this net, running sshd that accepts `authorized_key`.
    pub fn host(&mut self, authorized_key: &str) -> TestHost {
        if !Path::new("/run/sshd").is_dir() {
            // sshd's privilege separation directory (the package's service
            // creates it at boot); removed again on drop if made here.
            std::fs::create_dir_all("/run/sshd").unwrap();
            self.made_run_sshd = true;
        }
        let n = self.next;
        self.next += 1;
        TestHost::new(self, n, authorized_key)
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        if self.made_run_sshd {
            let _ = std::fs::remove_dir("/run/sshd");
        }
    }
}

/// A namespace with one address and an sshd on port 22.
pub struct TestHost {
    pub ns: String,
    pub addr: Ipv4Addr,
    veth: String,
    sshd: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl TestHost {
    fn new(net: &TestNet, n: u8, authorized_key: &str) -> Self {
        let ns = crate::unique_name();
        let veth = format!("st{}h{n}", net.hex);
        let addr = net.addr(n);
        let dir = tempfile::tempdir().unwrap();
        sh("ip", &["netns", "add", &ns]);
        let mut me = Self { ns, addr, veth, sshd: None, dir };
        // The pair: our end on the bridge, the other end is eth0 inside.
        sh("ip", &["link", "add", &me.veth, "type", "veth", "peer", "name", "eth0", "netns", &me.ns]);
        sh("ip", &["link", "set", &me.veth, "master", &net.bridge, "up"]);
        me.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        me.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        me.exec_ok(&["ip", "link", "set", "lo", "up"]);
        me.start_sshd(authorized_key);
        me
    }

    /// `ip netns exec NS args...`, panicking on failure; returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.ns];
        a.extend_from_slice(args);
        sh("ip", &a)
    }

    fn start_sshd(&mut self, authorized_key: &str) {
        let d = self.dir.path();
        sh("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", d.join("host_key").to_str().unwrap()]);
        std::fs::write(d.join("authorized_keys"), authorized_key).unwrap();
        let config = format!(
            "ListenAddress {addr}:22\n\
             HostKey {d}/host_key\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             # The key file sits under /tmp (world-writable): skip the ownership walk.\n\
             StrictModes no\n\
             AllowTcpForwarding yes\n\
             PrintMotd no\n\
             Subsystem sftp internal-sftp\n",
            addr = self.addr,
            d = d.display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        // nsenter, not `ip netns exec`: only the network namespace changes.
        // `ip netns exec` also remounts /sys in a mount namespace of its
        // own, which hides /sys/fs/cgroup from the agents started through sshd.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // nsenter execs sshd: same PID, whose /proc/PID/net is the namespace's.
        let tcp = PathBuf::from(format!("/proc/{}/net/tcp", child.id()));
        self.sshd = Some(child);
        let listening = crate::wait_for(Duration::from_secs(10), || {
            if let Some(Ok(Some(status))) = self.sshd.as_mut().map(Child::try_wait) {
                panic!("sshd in {} exited with {status}: {}", self.ns, self.sshd_log());
            }
            let t = std::fs::read_to_string(&tcp).ok()?;
            t.lines().any(|l| l.contains(":0016 ") && l.split_whitespace().nth(3) == Some("0A")).then_some(())
        });
        assert!(listening.is_some(), "sshd in {} never listened: {}", self.ns, self.sshd_log());
    }

    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Every process in this namespace (sshd, sessions, what they started).
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip").args(["netns", "pids", &self.ns]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Stops everything in the namespace: SIGTERM (an agent detaches its
    /// eBPF programs and exits), SIGKILL after 5 s.
    pub fn kill_all(&mut self) {
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            for pid in self.pids() {
                // SAFETY: a process inside this test's own namespace.
                unsafe {
                    libc::kill(pid, signal);
                }
            }
            if let Some(c) = self.sshd.as_mut() {
                let _ = crate::wait_for(Duration::from_secs(5), || c.try_wait().ok().flatten());
            }
            if crate::wait_for(Duration::from_secs(5), || self.pids().is_empty().then_some(())).is_some() {
                break;
            }
        }
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip").args(["link", "del", &self.veth]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
