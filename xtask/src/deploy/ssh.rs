//! The system `ssh` client: one process per step, never a prompt.
//!
//! Host keys: ssh's own known_hosts (or `--known-hosts FILE`) with
//! `StrictHostKeyChecking=accept-new`. `BatchMode` cannot answer a prompt, so
//! `accept-new` is the strictest setting that works unattended on a first
//! deploy: a new host's key is pinned on first contact, and a host whose key
//! has changed is refused (ssh's "REMOTE HOST IDENTIFICATION HAS CHANGED"
//! becomes the step's error). A fresh known_hosts per deploy would pin
//! nothing, and `StrictHostKeyChecking=no` would accept any impostor.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// How to reach one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssh {
    pub user: String,
    pub address: String,
    pub port: u16,
    pub key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub connect_timeout_s: u64,
    /// Where the run's shared connections live (`ControlPath`): one SSH
    /// connection per host for all of its steps, closed by [`Ssh::close`].
    pub control_dir: Option<PathBuf>,
}

/// What a remote command reads on its standard input.
pub enum Input<'a> {
    None,
    File(&'a std::path::Path),
    Bytes(&'a [u8]),
}

impl Ssh {
    /// `user@address`, with brackets around an IPv6 address.
    pub fn destination(&self) -> String {
        if self.address.contains(':') {
            format!("{}@[{}]", self.user, self.address)
        } else {
            format!("{}@{}", self.user, self.address)
        }
    }

    /// Options common to every connection.
    pub fn options(&self) -> Vec<String> {
        let mut o = Vec::new();
        if let Some(k) = &self.key {
            o.extend(["-i".into(), k.display().to_string(), "-o".into(), "IdentitiesOnly=yes".into()]);
        }
        o.extend(["-p".into(), self.port.to_string()]);
        for opt in [
            "BatchMode=yes".to_owned(),
            "StrictHostKeyChecking=accept-new".to_owned(),
            format!("ConnectTimeout={}", self.connect_timeout_s),
            // A host that vanishes mid-step fails the step within 15 s.
            "ServerAliveInterval=5".to_owned(),
            "ServerAliveCountMax=3".to_owned(),
            // Errors only: no "Permanently added ... to the list of known hosts".
            "LogLevel=ERROR".to_owned(),
        ] {
            o.extend(["-o".into(), opt]);
        }
        if let Some(kh) = &self.known_hosts {
            o.extend(["-o".into(), format!("UserKnownHostsFile={}", kh.display())]);
        }
        if let Some(d) = &self.control_dir {
            for opt in [
                "ControlMaster=auto".to_owned(),
                format!("ControlPath={}/%C", d.display()),
                // The master outlives a crashed run by at most this long.
                "ControlPersist=60".to_owned(),
            ] {
                o.extend(["-o".into(), opt]);
            }
        }
        o
    }

    /// Ends the shared connection, if one was opened.
    pub fn close(&self) {
        if self.control_dir.is_some() {
            let _ = Command::new("ssh")
                .args(self.options())
                .args(["-O", "exit"])
                .arg(self.destination())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// The remote command line: `script` run by `sh` as root (through
    /// `sudo -n` when the user is not root).
    pub fn remote_command(&self, script: &str) -> String {
        let sudo = if self.user == "root" { "" } else { "sudo -n " };
        format!("{sudo}sh -c {}", quote(script))
    }

    /// The `ssh` argv (without the program) that runs `script`.
    pub fn argv(&self, script: &str) -> Vec<String> {
        let mut a = self.options();
        a.extend([self.destination(), "--".into(), self.remote_command(script)]);
        a
    }

    /// The `ssh ...` prefix shown by `--dry-run`.
    pub fn display(&self) -> String {
        let mut parts = vec!["ssh".to_owned()];
        parts.extend(self.options().iter().map(|s| quote_if_needed(s)));
        parts.push(self.destination());
        parts.join(" ")
    }

    /// Runs `script` on the host and returns its standard output. The error
    /// is ssh's own message (connection, key) or the script's stderr.
    pub fn run(&self, script: &str, input: Input<'_>) -> anyhow::Result<String> {
        let mut cmd = Command::new("ssh");
        cmd.args(self.argv(script)).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(match input {
            Input::None => Stdio::null(),
            Input::File(p) => Stdio::from(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?),
            Input::Bytes(_) => Stdio::piped(),
        });
        let mut child = cmd.spawn().context("starting ssh (is openssh-client installed?)")?;
        if let (Input::Bytes(b), Some(mut stdin)) = (input, child.stdin.take()) {
            // The scripts read all of their input before writing anything,
            // so writing first cannot deadlock on a full stdout pipe.
            let _ = stdin.write_all(b);
        }
        let out = child.wait_with_output().context("waiting for ssh")?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            // 255: ssh itself failed (unreachable, key refused, host key changed).
            Some(255) if !stderr.is_empty() => {
                let msg = last_lines(&stderr, 6);
                bail!("{}{msg}", if msg.starts_with("ssh: ") { "" } else { "ssh: " })
            }
            Some(code) if !stderr.is_empty() => bail!("exit status {code}: {}", last_lines(&stderr, 12)),
            _ => bail!("ssh {} ended with {}", self.destination(), out.status),
        }
    }

    /// Runs `talk` on a connection to `target` (host:port as seen from the
    /// host, e.g. `127.0.0.1:8470`) through the SSH connection (`ssh -W`,
    /// no tool needed on the host), within `timeout`.
    pub fn tunnel(
        &self,
        target: &str,
        timeout: Duration,
        talk: impl FnOnce(Duplex) -> anyhow::Result<Vec<u8>> + Send + 'static,
    ) -> anyhow::Result<Vec<u8>> {
        let mut child = Command::new("ssh")
            .args(self.options())
            .args(["-W", target])
            .arg(self.destination())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ssh -W")?;
        let stdin = child.stdin.take().context("ssh stdin")?;
        let stdout = child.stdout.take().context("ssh stdout")?;
        let mut stderr = child.stderr.take().context("ssh stderr")?;
        let (tx, rx) = mpsc::channel();
        // The talk keeps stdin open until the response is read: a
        // half-closed connection may make the server drop the request.
        std::thread::spawn(move || {
            let _ = tx.send(talk(Duplex { stdin, stdout }));
        });
        let got = rx.recv_timeout(timeout);
        // Done, or out of time: either way ssh goes (its pipes close).
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        match got {
            Ok(Ok(buf)) if !buf.is_empty() => Ok(buf),
            Ok(Ok(_)) => bail!("no answer from {target} through ssh: {}", last_lines(err.trim(), 3)),
            Ok(Err(e)) => Err(e.context(format!("through ssh -W to {target}: {}", last_lines(err.trim(), 3)))),
            Err(_) => bail!("no answer from {target} through ssh within {timeout:?}"),
        }
    }
}

/// `ssh -W`'s pipes as one connection.
pub struct Duplex {
    stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stdin.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.flush()
    }
}

/// The last `n` lines of `s`, joined with "; " when there are several.
fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

/// Single-quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn quote_if_needed(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c)) { s.to_owned() } else { quote(s) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ssh(user: &str) -> Ssh {
        Ssh {
            user: user.into(),
            address: "10.0.0.2".into(),
            port: 2222,
            key: Some("/k/id".into()),
            known_hosts: Some("/tmp/kh".into()),
            connect_timeout_s: 5,
            control_dir: None,
        }
    }

    #[test]
    fn argv_is_batch_mode_with_key_port_and_known_hosts() {
        let a = ssh("root").argv("echo 'hi'");
        let s = a.join(" ");
        for want in
            ["-i /k/id", "-p 2222", "BatchMode=yes", "StrictHostKeyChecking=accept-new", "UserKnownHostsFile=/tmp/kh"]
        {
            assert!(s.contains(want), "{want} missing from {s}");
        }
        assert_eq!(a[a.len() - 2..], ["--".to_owned(), r"sh -c 'echo '\''hi'\'''".to_owned()]);
        assert!(a.contains(&"root@10.0.0.2".to_owned()));
    }

    #[test]
    fn non_root_users_go_through_sudo_and_ipv6_gets_brackets() {
        let mut s = ssh("deploy");
        assert!(s.remote_command("true").starts_with("sudo -n sh -c "));
        s.address = "fd00::2".into();
        assert_eq!(s.destination(), "deploy@[fd00::2]");
    }

    #[test]
    fn quoting_survives_a_shell() {
        let nasty = r#"a'b"c $HOME `x` \n"#;
        let out = Command::new("sh").arg("-c").arg(format!("printf %s {}", quote(nasty))).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b; c");
    }
}
