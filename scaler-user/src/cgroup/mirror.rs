//! On hybrid hosts the eBPF counters are keyed by cgroup **v2** id, so a
//! container that exists only in v1 trees (Docker's cgroupfs driver, a
//! hand-made v1 cgroup) would be charged to whatever v2 cgroup its processes
//! sit in. Mirroring creates the same relative path in the v2 tree and moves
//! the container's processes there (v2 directories need no controllers).
//! Children forked later inherit the v2 cgroup; processes attached to the v1
//! cgroup afterwards are moved on the next scan.

use std::{collections::HashSet, io, path::PathBuf};

use super::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("creating v2 mirror {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}: {source}")]
    Procs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn pids(text: &str) -> HashSet<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Ensures `rel` exists in the v2 tree and holds every process of its v1
/// cgroup. Returns how many processes were moved. Processes that exit while
/// being moved are skipped.
pub fn sync(layout: &Layout, rel: &str) -> Result<usize, MirrorError> {
    let Some(v1) =
        ["memory", "cpu", "cpuacct", "blkio"].iter().filter_map(|c| layout.v1_dir(c, rel)).find(|d| d.is_dir())
    else {
        return Ok(0);
    };
    let v2 = layout.v2_dir(rel);
    std::fs::create_dir_all(&v2).map_err(|source| MirrorError::Create { path: v2.clone(), source })?;
    let v1_procs = v1.join("cgroup.procs");
    let want = std::fs::read_to_string(&v1_procs)
        .map(|t| pids(&t))
        .map_err(|source| MirrorError::Procs { path: v1_procs, source })?;
    let have = std::fs::read_to_string(v2.join("cgroup.procs")).map(|t| pids(&t)).unwrap_or_default();
    let mut moved = 0;
    for pid in want.difference(&have) {
        // One write per pid; ESRCH (exited) is fine.
        if std::fs::write(v2.join("cgroup.procs"), pid.to_string()).is_ok() {
            moved += 1;
        }
    }
    Ok(moved)
}

/// Removes a mirror directory once its v1 original is gone (only if empty:
/// rmdir on a cgroup with processes fails, which is what we want).
pub fn remove(layout: &Layout, rel: &str) -> bool {
    std::fs::remove_dir(layout.v2_dir(rel)).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_directory_and_moves_missing_pids_on_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let (v2, mem) = (tmp.path().join("unified"), tmp.path().join("memory"));
        std::fs::create_dir_all(mem.join("docker/abc")).unwrap();
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(mem.join("docker/abc/cgroup.procs"), "10\n11\n").unwrap();
        let layout = Layout { kernfs: false, v2: v2.clone(), v1: [("memory".to_owned(), mem)].into_iter().collect() };
        // On a plain directory each write replaces the file, so one pid remains;
        // on cgroupfs each write appends a process.
        assert_eq!(sync(&layout, "docker/abc").unwrap(), 2);
        assert!(v2.join("docker/abc").is_dir());
        assert_eq!(sync(&layout, "/nope").unwrap(), 0);
    }
}
