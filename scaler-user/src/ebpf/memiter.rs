//! Every memory cgroup's charge in one read: the `memcg_usage` cgroup
//! iterator (`scaler-ebpf/src/memiter.rs`), linked to the root of the
//! hierarchy the memory controller lives in (`/sys/fs/cgroup/memory` on a
//! hybrid host, the v2 mount on a pure v2 one).
//!
//! aya 0.14 links iterators without target information, which for a cgroup
//! iterator means the v2 root, where a hybrid host has no memory
//! controller; so the link is made here with `BPF_LINK_CREATE` and the
//! hierarchy's directory as `cgroup_fd`. Each reading opens a new iterator
//! on the link (`BPF_ITER_CREATE`) and reads it to the end.
//!
//! The walk starts at the tracked containers' deepest common ancestor
//! (linked again when that moves): the machine's own memory cgroups, and
//! the dying ones elsewhere, are not visited (on a systemd host with its
//! containers under `/docker` or `/machine.slice`, most of them).

use std::{
    collections::HashMap,
    fs::File,
    io::Read,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{Ebpf, maps::MapData};
use scaler_common::{
    MAP_MEMCG_WANT, MEMCG_TRAILER, MEMCG_WANT_MAX_ENTRIES, MemcgOffsets, MemcgRecord, PROG_MEMCG_USAGE,
};
use tracing::{debug, info};

use super::btf::{Btf, BtfError};

/// `bpf(2)` commands and constants (`include/uapi/linux/bpf.h`).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;
/// `BPF_CGROUP_ITER_DESCENDANTS_PRE`: the root, then every cgroup below.
const DESCENDANTS_PRE: u32 = 2;
/// Ticks the files are read instead after a walk that was not worth it or
/// failed (then the walk is tried again: 10 s at the default tick).
const BACKOFF_TICKS: u32 = 50;
/// What a walk costs besides its visits, in visits: the iterator's file
/// made, read and closed took about 50 µs on the test VM, at 1.7 µs a
/// visit (measured: 70 µs a walk of 11 cgroups, 224 µs of 101).
const WALK_FIXED_VISITS: u64 = 30;

/// `union bpf_attr` as `BPF_LINK_CREATE` reads it for an iterator.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _pad: u32,
}

/// `union bpf_iter_link_info`, its cgroup member.
#[repr(C)]
struct CgroupIterInfo {
    order: u32,
    cgroup_fd: u32,
    cgroup_id: u64,
}

/// `union bpf_attr` for `BPF_ITER_CREATE`.
#[repr(C)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// The offsets the iterator reads at, from this kernel's BTF.
pub fn offsets(btf: &Btf) -> Result<MemcgOffsets, BtfError> {
    let memory_id = btf.enum_value("memory_cgrp_id").ok_or_else(|| BtfError::NoMember {
        strukt: "enum cgroup_subsys_id".into(),
        member: "memory_cgrp_id".into(),
    })?;
    let subsys = btf.offset_of("cgroup", &["subsys"])?;
    // The iterator reads `struct mem_cgroup` at the css pointer.
    let css_in_memcg = btf.offset_of("mem_cgroup", &["css"])?;
    if css_in_memcg != 0 {
        return Err(BtfError::NoMember { strukt: "mem_cgroup (css first)".into(), member: "css".into() });
    }
    let index = u32::try_from(memory_id).unwrap_or(u32::MAX).min(64);
    Ok(MemcgOffsets {
        css: subsys + 8 * index,
        usage: btf.offset_of("mem_cgroup", &["memory", "usage"])?,
        kn: btf.offset_of("cgroup", &["kn"])?,
        kn_id: btf.offset_of("kernfs_node", &["id"])?,
        valid: 1,
        _pad: 0,
    })
}

/// Why the iterator is not used (the agent then reads the memory files).
#[derive(Debug, thiserror::Error)]
pub enum MemIterError {
    #[error("program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("opening {path}: {source}")]
    Root {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BPF_LINK_CREATE: {0}")]
    Link(#[source] std::io::Error),
    #[error("map {MAP_MEMCG_WANT}: {0}")]
    Map(String),
}

/// The linked iterator and its last reading.
pub struct MemcgIter {
    link: OwnedFd,
    prog_fd: OwnedFd,
    /// The hierarchy's root, and where the linked walk starts.
    root: PathBuf,
    start: PathBuf,
    page: u64,
    buf: Vec<u8>,
    /// Directory inode -> bytes charged, at the last [`MemcgIter::refresh`].
    charged: HashMap<u64, u64>,
    /// The cgroups the iterator writes, and what was written to the map.
    want: aya::maps::HashMap<MapData, u64, u8>,
    want_written: std::collections::HashSet<u64>,
    /// Cgroups the last walk visited (dying ones included).
    pub visited: u64,
    /// Ticks left before the walk is tried again.
    backoff: u32,
    max_visits: u64,
    /// The last walk visited too many cgroups (files are read).
    set_aside: bool,
}

fn bpf(cmd: libc::c_long, attr: *const u8, size: usize) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` points at `size` initialised bytes laid out as the
    // kernel's `union bpf_attr` for `cmd`; the result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Links the iterator program to walk the cgroup at `dir` and below.
fn link_at(prog_fd: &OwnedFd, dir: &Path) -> Result<OwnedFd, MemIterError> {
    let dir = File::open(dir).map_err(|source| MemIterError::Root { path: dir.display().to_string(), source })?;
    let info = CgroupIterInfo { order: DESCENDANTS_PRE, cgroup_fd: dir.as_raw_fd() as u32, cgroup_id: 0 };
    let attr = LinkCreateAttr {
        prog_fd: prog_fd.as_raw_fd() as u32,
        target_fd: 0,
        attach_type: BPF_TRACE_ITER,
        flags: 0,
        iter_info: &info as *const CgroupIterInfo as u64,
        iter_info_len: size_of::<CgroupIterInfo>() as u32,
        _pad: 0,
    };
    bpf(BPF_LINK_CREATE, (&attr as *const LinkCreateAttr).cast(), size_of::<LinkCreateAttr>())
        .map_err(MemIterError::Link)
}

/// The deepest directory holding every one of `dirs`, `root` or below it
/// (`root` itself when one lies elsewhere).
fn common_ancestor<'a>(root: &Path, dirs: impl Iterator<Item = &'a PathBuf>) -> PathBuf {
    let mut common: Option<PathBuf> = None;
    for d in dirs {
        if !d.starts_with(root) {
            return root.to_owned();
        }
        common = Some(match common {
            None => d.clone(),
            Some(c) => c.components().zip(d.components()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect(),
        });
    }
    common.filter(|c| c.starts_with(root)).unwrap_or_else(|| root.to_owned())
}

impl MemcgIter {
    /// Loads the iterator program and links it to the hierarchy at `root`.
    /// `max_visits`: the walk is worth it while it visits at most this many
    /// cgroups per container it serves (a visit costs about 1 µs on the
    /// test VM, a `pread` 4.5-5).
    pub fn attach(bpf_obj: &mut Ebpf, btf: &aya::Btf, root: &Path, max_visits: u64) -> Result<Self, MemIterError> {
        let prog: &mut aya::programs::Iter =
            bpf_obj.program_mut(PROG_MEMCG_USAGE).ok_or(aya::programs::ProgramError::NotLoaded)?.try_into()?;
        prog.load("cgroup", btf)?;
        let prog_fd = prog.fd()?.as_fd().try_clone_to_owned().map_err(MemIterError::Link)?;
        let want = bpf_obj.take_map(MAP_MEMCG_WANT).ok_or_else(|| MemIterError::Map("missing".into()))?;
        let want = aya::maps::HashMap::try_from(want).map_err(|e| MemIterError::Map(e.to_string()))?;
        let link = link_at(&prog_fd, root)?;
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        Ok(Self {
            link,
            prog_fd,
            root: root.to_owned(),
            start: root.to_owned(),
            page,
            buf: vec![0; 64 * 1024],
            charged: HashMap::new(),
            want,
            want_written: Default::default(),
            visited: 0,
            backoff: 0,
            max_visits,
            set_aside: false,
        })
    }

    /// Makes the iterator write exactly the cgroups in `want` (directory
    /// inode -> path; beyond the map's capacity the rest read their
    /// files), from a walk starting at their deepest common ancestor.
    pub fn sync_want(&mut self, want: &HashMap<u64, PathBuf>) {
        let gone: Vec<u64> = self.want_written.iter().filter(|i| !want.contains_key(i)).copied().collect();
        for ino in gone {
            let _ = self.want.remove(&ino);
            self.want_written.remove(&ino);
        }
        for &ino in want.keys() {
            if self.want_written.len() >= MEMCG_WANT_MAX_ENTRIES as usize {
                break;
            }
            if !self.want_written.contains(&ino) && self.want.insert(ino, 1, 0).is_ok() {
                self.want_written.insert(ino);
            }
        }
        if want.is_empty() {
            return;
        }
        let start = common_ancestor(&self.root, want.values());
        if start != self.start {
            match link_at(&self.prog_fd, &start) {
                Ok(link) => {
                    debug!(start = %start.display(), "the memory cgroup walk starts here");
                    (self.link, self.start) = (link, start);
                }
                Err(e) => debug!(start = %start.display(), "linking the memory cgroup walk: {e}"),
            }
        }
    }

    /// Reads the charge of every wanted cgroup now, unless the walk is set
    /// aside: true when this tick's figures are fresh. A walk that visits
    /// more than `max_visits` cgroups per wanted one, counting its own
    /// cost as [`WALK_FIXED_VISITS`] more (a host full of dying memory
    /// cgroups, which the walk visits too, or one with a handful of
    /// containers), or fails, is set aside for [`BACKOFF_TICKS`] ticks, in
    /// which the files are read.
    pub fn refresh(&mut self) -> std::io::Result<bool> {
        if self.backoff > 0 || self.want_written.is_empty() {
            self.backoff = self.backoff.saturating_sub(1);
            return Ok(false);
        }
        if let Err(e) = self.walk() {
            self.backoff = BACKOFF_TICKS;
            return Err(e);
        }
        let wanted = self.want_written.len() as u64;
        let costly = self.visited + WALK_FIXED_VISITS > self.max_visits.saturating_mul(wanted);
        if costly {
            self.backoff = BACKOFF_TICKS;
        }
        // Said when it changes, not at every trial walk.
        if costly != self.set_aside {
            self.set_aside = costly;
            match costly {
                true => info!(
                    visited = self.visited,
                    wanted,
                    "the memory cgroup walk costs more than the files it replaces: files read, the walk tried every 50 ticks"
                ),
                false => info!(visited = self.visited, wanted, "the memory cgroup walk is worth it again"),
            }
        }
        Ok(true)
    }

    fn walk(&mut self) -> std::io::Result<()> {
        let attr = IterCreateAttr { link_fd: self.link.as_raw_fd() as u32, flags: 0 };
        let iter = bpf(BPF_ITER_CREATE, (&attr as *const IterCreateAttr).cast(), size_of::<IterCreateAttr>())?;
        let mut file = File::from(iter);
        self.charged.clear();
        let mut carry = 0;
        loop {
            let n = file.read(&mut self.buf[carry..])?;
            if n == 0 {
                break;
            }
            let filled = carry + n;
            let whole = filled - filled % size_of::<MemcgRecord>();
            for r in self.buf[..whole].chunks_exact(size_of::<MemcgRecord>()) {
                let word = |i: usize| u64::from_ne_bytes(r[i..i + 8].try_into().unwrap_or([0; 8]));
                match word(0) {
                    // The stop call's sequence number is the last
                    // cgroup's (the first is 0); the start is always shown.
                    MEMCG_TRAILER => self.visited = word(8) + 1,
                    ino => {
                        self.charged.insert(ino, word(8).saturating_mul(self.page));
                    }
                }
            }
            self.buf.copy_within(whole..filled, 0);
            carry = filled - whole;
        }
        Ok(())
    }

    /// Bytes charged to the memory cgroup whose directory has inode `ino`,
    /// at the last reading (`None`: not seen then).
    pub fn charged(&self, ino: u64) -> Option<u64> {
        self.charged.get(&ino).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_starts_at_the_deepest_common_ancestor_within_the_root() {
        let root = Path::new("/sys/fs/cgroup/memory");
        let p = |s: &str| PathBuf::from(s);
        let two = [p("/sys/fs/cgroup/memory/docker/aaa"), p("/sys/fs/cgroup/memory/docker/bbb")];
        assert_eq!(common_ancestor(root, two.iter()), p("/sys/fs/cgroup/memory/docker"));
        // One container: its own directory (the walk includes where it starts).
        assert_eq!(common_ancestor(root, two[..1].iter()), two[0]);
        // Nested: the outer one.
        let nested = [p("/sys/fs/cgroup/memory/lxc.payload.a"), p("/sys/fs/cgroup/memory/lxc.payload.a/inner")];
        assert_eq!(common_ancestor(root, nested.iter()), nested[0]);
        // Siblings at the root, or a path elsewhere: the root.
        let siblings = [p("/sys/fs/cgroup/memory/lxc.payload.a"), p("/sys/fs/cgroup/memory/lxc.payload.b")];
        assert_eq!(common_ancestor(root, siblings.iter()), root);
        let elsewhere = [p("/sys/fs/cgroup/memory/docker/aaa"), p("/tmp/x")];
        assert_eq!(common_ancestor(root, elsewhere.iter()), root);
        // A prefix of a name is not an ancestor.
        let names = [p("/sys/fs/cgroup/memory/ab/c"), p("/sys/fs/cgroup/memory/abd/c")];
        assert_eq!(common_ancestor(root, names.iter()), root);
        assert_eq!(common_ancestor(root, [].iter()), root);
    }
}
