//! Where the cgroup hierarchies are: a pure cgroup v2 host (one `cgroup2`
//! mount, usually `/sys/fs/cgroup`) or a hybrid host (v1 controllers under
//! `/sys/fs/cgroup/<ctl>` plus a controller-less v2 tree, e.g.
//! `/sys/fs/cgroup/unified`). Everything else takes a [`Layout`], so tests
//! point it at a fake tree in a temporary directory.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup v2 hierarchy is mounted (need a cgroup2 mount, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified)")]
    NoV2,
}

/// The v1 controllers this project reads or writes.
pub const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "blkio", "cpuset"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Mount point of the cgroup v2 hierarchy. The eBPF counters are keyed by
    /// the ids (inode numbers) of directories under it.
    pub v2: PathBuf,
    /// Mount point of each v1 controller (empty on pure v2 hosts).
    pub v1: BTreeMap<String, PathBuf>,
    /// The hierarchies are real cgroup file systems (false for fake trees in
    /// tests, where removed files stay readable through open handles).
    pub kernfs: bool,
}

impl Layout {
    /// A pure v2 layout rooted at `v2`.
    pub fn pure_v2(v2: impl Into<PathBuf>) -> Self {
        Self { v2: v2.into(), v1: BTreeMap::new(), kernfs: false }
    }

    /// Reads `/proc/self/mounts`.
    pub fn detect() -> Result<Self, LayoutError> {
        let path = Path::new("/proc/self/mounts");
        let text = std::fs::read_to_string(path).map_err(|source| LayoutError::Read { path: path.into(), source })?;
        Self::from_mounts(&text)
    }

    /// Parses a mount table in `/proc/mounts` format.
    pub fn from_mounts(text: &str) -> Result<Self, LayoutError> {
        let mut v2 = None;
        let mut v1 = BTreeMap::new();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(_dev), Some(dir), Some(fstype), Some(opts)) = (f.next(), f.next(), f.next(), f.next()) else {
                continue;
            };
            let dir = unescape_mount_path(dir);
            match fstype {
                // The first cgroup2 mount wins (later ones are bind mounts).
                "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(dir)),
                "cgroup" => {
                    for opt in opts.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            v1.entry(opt.to_owned()).or_insert_with(|| PathBuf::from(&dir));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Self { v2: v2.ok_or(LayoutError::NoV2)?, v1, kernfs: true })
    }

    pub fn is_hybrid(&self) -> bool {
        !self.v1.is_empty()
    }

    /// Directory of cgroup `rel` in the v2 tree.
    pub fn v2_dir(&self, rel: &str) -> PathBuf {
        join_rel(&self.v2, rel)
    }

    /// Root of the hierarchy the memory controller lives in: its v1 mount
    /// on a hybrid host, else the v2 one.
    pub fn memory_root(&self) -> PathBuf {
        self.v1.get("memory").cloned().unwrap_or_else(|| self.v2.clone())
    }

    /// Directory of cgroup `rel` in v1 controller `ctl`, if that controller is mounted.
    pub fn v1_dir(&self, ctl: &str, rel: &str) -> Option<PathBuf> {
        self.v1.get(ctl).map(|root| join_rel(root, rel))
    }
}

/// `root/rel`, where `rel` is a cgroup path relative to a hierarchy root
/// (a leading `/` is ignored).
pub fn join_rel(root: &Path, rel: &str) -> PathBuf {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() { root.to_path_buf() } else { root.join(rel) }
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal =
            b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(v) if b[i] == b'\\' => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn hybrid_mounts() {
        let l = Layout::from_mounts(HYBRID).unwrap();
        assert!(l.is_hybrid());
        assert_eq!(l.v2, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(l.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(l.v1.len(), 5);
        assert_eq!(l.v1_dir("memory", "/lxc.payload.a").unwrap(), PathBuf::from("/sys/fs/cgroup/memory/lxc.payload.a"));
        assert_eq!(l.v2_dir(""), PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(l.memory_root(), PathBuf::from("/sys/fs/cgroup/memory"), "the v1 memory controller");
    }

    #[test]
    fn comounted_v1_and_pure_v2() {
        let l = Layout::from_mounts(
            "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\ncgroup2 /mnt/with\\040space cgroup2 rw 0 0\n",
        )
        .unwrap();
        assert_eq!(l.v1["cpu"], l.v1["cpuacct"]);
        assert_eq!(l.v2, PathBuf::from("/mnt/with space"));
        let pure = Layout::from_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n").unwrap();
        assert!(!pure.is_hybrid());
        assert_eq!(pure.memory_root(), PathBuf::from("/sys/fs/cgroup"), "memory lives in the v2 tree");
        assert_eq!(l.memory_root(), l.v2, "no v1 memory controller: the v2 tree");
    }

    #[test]
    fn no_v2_is_an_error() {
        assert!(matches!(Layout::from_mounts("proc /proc proc rw 0 0\n"), Err(LayoutError::NoV2)));
    }
}
