//! A `scaler agent` process on a free loopback port, with its config, state
//! and log in a directory of its own; stopped (SIGTERM, then SIGKILL after
//! 5 s) on drop.

use std::{
    io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct AgentProcess {
    child: Option<Child>,
    /// Config, state (unless the config names another) and log.
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: PathBuf,
}

/// `config` (TOML) with `listen` (and `state_dir` in `dir`, unless the
/// config has one) added to its `[agent]` table.
pub fn with_listen(config: &str, port: u16, dir: &Path) -> String {
    let mut head = format!("[agent]\nlisten = \"127.0.0.1:{port}\"");
    if !config.contains("state_dir") {
        head.push_str(&format!("\nstate_dir = \"{}\"", dir.join("state").display()));
    }
    if config.contains("[agent]") { config.replacen("[agent]", &head, 1) } else { format!("{head}\n{config}") }
}

impl AgentProcess {
    /// Starts `bin agent` in `dir` with `config` (see [`with_listen`]),
    /// logging at `log_level`, and waits (up to 20 s) for `/healthz`.
    pub fn start(bin: &Path, dir: tempfile::TempDir, config: &str, log_level: &str) -> io::Result<Self> {
        let port = crate::free_port()?;
        let cfg_path = dir.path().join("agent.toml");
        std::fs::write(&cfg_path, with_listen(config, port, dir.path()))?;
        let log = dir.path().join("agent.log");
        let child = Command::new(bin)
            .args(["agent", "--config"])
            .arg(&cfg_path)
            .env("SCALER_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| crate::error(format!("starting {}: {e}", bin.display())))?;
        let mut me = Self { child: Some(child), dir, addr: format!("127.0.0.1:{port}"), log };
        let mut exited = None;
        let up = crate::wait_for(Duration::from_secs(20), || {
            if let Some(Ok(Some(status))) = me.child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return Some(false);
            }
            // Over TLS, the plain request is answered "use https://": up.
            let up = crate::http::ok(&me.addr, "GET", "/healthz", None).is_ok()
                || crate::http::request(&me.addr, "GET", "/healthz", None)
                    .is_ok_and(|(s, body)| s == 400 && body.contains("speaks HTTPS"));
            up.then_some(true)
        });
        match (up, exited) {
            (Some(true), _) => Ok(me),
            (_, Some(status)) => Err(crate::error(format!("agent exited with {status}: {}", me.log()))),
            _ => Err(crate::error(format!("agent did not answer /healthz: {}", me.log()))),
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        crate::read_log(&self.log)
    }

    /// Its PID (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL (a crash), reaped; the directory stays.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::kill_pid(c.id());
            let _ = c.wait();
        }
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::stop(&mut c, Duration::from_secs(5));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_state_go_into_the_agent_table() {
        let d = Path::new("/d");
        assert_eq!(
            with_listen("tick_ms = 5\n", 7, d),
            "[agent]\nlisten = \"127.0.0.1:7\"\nstate_dir = \"/d/state\"\ntick_ms = 5\n"
        );
        let c = with_listen("[discovery]\nx = 1\n[agent]\ntick_ms = 5\n", 7, d);
        assert_eq!(c, "[discovery]\nx = 1\n[agent]\nlisten = \"127.0.0.1:7\"\nstate_dir = \"/d/state\"\ntick_ms = 5\n");
        assert!(!with_listen("[agent]\nstate_dir = \"/s\"\n", 7, d).contains("/d/state"));
    }
}
