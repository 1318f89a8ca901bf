//! The host's cgroup mounts, and removing a `scaler-test-*` tree from all of
//! them (killing what still runs in it first).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// Every cgroup mount: (`unified` or the v1 hierarchy's last controller, path).
pub fn mounts() -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match (f.get(1), f.get(2), f.get(3)) {
                (Some(p), Some(&"cgroup2"), _) => Some(("unified".to_owned(), PathBuf::from(p))),
                (Some(p), Some(&"cgroup"), Some(o)) => {
                    Some((o.split(',').next_back().unwrap_or("").to_owned(), PathBuf::from(p)))
                }
                _ => None,
            }
        })
        .collect()
}

/// The v2 mount point, if any.
pub fn v2_root() -> Option<PathBuf> {
    mounts().into_iter().find(|(k, _)| k == "unified").map(|(_, p)| p)
}

/// The mount point of v1 controller `ctl`, if this host has v1 hierarchies.
pub fn v1_root(ctl: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup") && f.get(3)?.split(',').any(|o| o == ctl)).then(|| PathBuf::from(f[1]))
    })
}

/// Removes `dir` and everything below it, deepest first (a cgroup directory
/// goes only when empty); retries briefly while exiting processes leave.
/// False if it is still there.
pub fn remove_tree(dir: &Path) -> bool {
    if !dir.is_dir() {
        return true;
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
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Every process in `dir` or below it.
pub fn procs_below(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            procs_below(&e.path(), out);
        }
    }
}

/// Kills, by PID, every process left in the `scaler-test-*` tree `name` in
/// any hierarchy (what the caller's processes started), until none is left.
pub fn kill_procs_in(name: &str) {
    assert!(name.starts_with(crate::PREFIX), "refusing to touch {name}");
    for _ in 0..50 {
        let mut pids = Vec::new();
        for (_, root) in mounts() {
            procs_below(&root.join(name), &mut pids);
        }
        if pids.is_empty() {
            return;
        }
        pids.into_iter().for_each(crate::kill_pid);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the `scaler-test-*` tree `name` from every hierarchy after
/// killing what still runs in it; warns on what stays.
pub fn remove_everywhere(name: &str) {
    assert!(name.starts_with(crate::PREFIX) && !name.contains('/'), "refusing to remove {name}");
    kill_procs_in(name);
    for (_, root) in mounts() {
        let dir = root.join(name);
        if !remove_tree(&dir) {
            eprintln!("warning: could not remove {}", dir.display());
        }
    }
}
