//! `--dry-run`: every host's steps, with their scripts and what they read
//! on stdin, printed instead of run.

use super::{
    hosts::{Install, Service},
    plan::{self, Action, DeployOptions, Mode, Payload, Shown, Step},
    scripts,
};

/// Deploy steps for `--dry-run`: a host whose service is `auto` shows both
/// variants of the steps that differ.
pub fn deploy_variants(i: &Install, o: &DeployOptions) -> Vec<(Option<&'static str>, Step)> {
    let mut out = vec![(None, plan::connect())];
    match i.service {
        Service::Systemd => out.extend(plan::deploy(i, Mode::Systemd, o).into_iter().map(|s| (None, s))),
        Service::Supervisor => out.extend(plan::deploy(i, Mode::Supervisor, o).into_iter().map(|s| (None, s))),
        Service::Auto => {
            for (a, b) in plan::deploy(i, Mode::Systemd, o).into_iter().zip(plan::deploy(i, Mode::Supervisor, o)) {
                // The health checks differ only in where the log is read on failure.
                let same = match (&a.action, &b.action) {
                    (Action::Health { endpoint: x, .. }, Action::Health { endpoint: y, .. }) => x == y,
                    _ => a == b,
                };
                if same {
                    out.push((None, a));
                } else {
                    out.push((Some("systemd hosts"), a));
                    out.push((Some("other hosts"), b));
                }
            }
        }
    }
    out
}

pub fn print_preamble() {
    println!(
        "each script runs on its host as root: `ssh ... USER@ADDRESS -- sh -c SCRIPT` (`sudo -n sh -c` for other users)"
    );
    println!("a host's steps share one SSH connection (ControlMaster; socket in a private temporary directory)");
    println!("shell helpers, prepended to the scripts that use them:");
    for l in scripts::HELPERS.lines() {
        println!("  $ {l}");
    }
}

pub fn print_host(i: &Install, steps: &[(Option<&'static str>, Step)]) {
    println!(
        "\nhost {} ({}): {} in {}, state in {}, service {}{}",
        i.name,
        i.ssh.destination(),
        i.role.name(),
        i.prefix,
        i.state_dir,
        i.service,
        if i.service == Service::Auto { " (systemd if /run/systemd/system exists, else the supervisor)" } else { "" }
    );
    println!("  ssh: {}", i.ssh.display());
    let mut n = 0;
    for (variant, s) in steps {
        let label = match variant {
            Some(v) => format!("{} [{v}]", s.name),
            None => s.name.to_owned(),
        };
        if !matches!(variant, Some("other hosts")) {
            n += 1;
        }
        match &s.action {
            Action::Remote { script, input, unless } => {
                let stdin = match input {
                    Payload::None => String::new(),
                    Payload::File(p) => format!(" < {}", p.display()),
                    // Certificates are issued by the real run only.
                    Payload::Text { what, text, .. } if text.is_empty() => format!(" < {what} (issued by the run)"),
                    Payload::Text { what, text, .. } => format!(" < {what} ({} bytes)", text.len()),
                };
                println!("  {n}. {label}{stdin}");
                if let Some(check) = unless {
                    println!("       skipped when this prints `same`:");
                    for l in check.lines() {
                        println!("       ? {l}");
                    }
                }
                if let Payload::Text { text, shown, .. } = input {
                    let shown = match shown {
                        Shown::Full => text.clone(),
                        Shown::Redacted => redact(text),
                        Shown::Summary => String::new(),
                    };
                    for l in shown.lines() {
                        println!("       < {l}");
                    }
                }
                let script = match script.strip_prefix(scripts::HELPERS) {
                    Some(rest) => {
                        println!("       $ <shell helpers ours, gone, stop: shown at the top>");
                        rest
                    }
                    None => script,
                };
                for l in script.lines() {
                    println!("       $ {l}");
                }
            }
            Action::Health { endpoint, expect_host, timeout, .. } => println!(
                "  {n}. {label}: GET {} until 200 with \"status\": \"ok\"{} (up to {} s)",
                endpoint.show("/healthz"),
                expect_host.as_ref().map(|h| format!(", \"host\": {h:?}")).unwrap_or_default(),
                timeout.as_secs()
            ),
            Action::Call { endpoint, method, path, body, token, .. } => println!(
                "  {n}. {label}: {method} {}{}{}",
                endpoint.show(path),
                body.as_deref().map(|b| format!(" {}", redact_json(b))).unwrap_or_default(),
                if token.is_some() { " with Authorization: Bearer ***" } else { "" }
            ),
        }
    }
}

/// TOML text with every `token = ...` value hidden.
fn redact(toml_text: &str) -> String {
    toml_text
        .lines()
        .map(|l| if l.trim_start().starts_with("token") && l.contains('=') { "token = \"***\"" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

fn redact_json(body: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if v.get("token").is_some() {
        v["token"] = "***".into();
    }
    v.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hidden_in_the_plan() {
        assert_eq!(redact("[agent]\ntoken = \"s3cret\"\nx = 1"), "[agent]\ntoken = \"***\"\nx = 1");
        assert_eq!(redact_json(r#"{"url":"u","token":"s3cret"}"#), r#"{"token":"***","url":"u"}"#);
    }
}
