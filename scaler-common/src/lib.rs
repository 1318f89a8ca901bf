//! Types shared by the eBPF programs (`scaler-ebpf`) and user space
//! (`scaler-user`): map names, map keys and values.
//!
//! Everything here is `#[repr(C)]`, made of fixed-width integers with explicit
//! padding, and its size is asserted at compile time, so both sides agree on
//! the layout byte for byte.
#![no_std]

use core::mem::size_of;

/// Per-CPU LRU hash: cgroup v2 id (`u64`) -> [`CgroupCounters`].
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Per-CPU array with one [`CpuSlice`] per CPU: when the current slice of CPU
/// time on that CPU started.
pub const MAP_CPU_SLICE: &str = "CPU_SLICE";
/// Global (read-only data) holding the [`BioOffsets`] found in the kernel's BTF.
pub const GLOBAL_BIO_OFFSETS: &str = "BIO_OFFSETS";
/// Global (read-only data) holding the [`MemcgOffsets`] found in the kernel's BTF.
pub const GLOBAL_MEMCG_OFFSETS: &str = "MEMCG_OFFSETS";
/// The cgroup iterator program that writes the memory charge of the
/// cgroups in [`MAP_MEMCG_WANT`].
pub const PROG_MEMCG_USAGE: &str = "memcg_usage";
/// Hash: memory cgroup directory inode (`u64`) -> `u8` (1): the cgroups
/// whose charge the iterator writes (the kernel's output buffer holds
/// 2,048 records; every other cgroup, dying ones included, is skipped).
pub const MAP_MEMCG_WANT: &str = "MEMCG_WANT";
/// Capacity of [`MAP_MEMCG_WANT`].
pub const MEMCG_WANT_MAX_ENTRIES: u32 = 2048;
/// The [`MemcgRecord::ino`] of the iterator's last record, whose `pages`
/// is then the number of cgroups the walk visited.
pub const MEMCG_TRAILER: u64 = u64::MAX;

/// Hash: container cgroup v2 id (`u64`) -> [`NetLimit`]. Shared by all
/// CPUs; the bucket fields are updated with atomics.
pub const MAP_NET_LIMITS: &str = "NET_LIMITS";
/// Array with one `u64`: bit `n` set when some limited container sits at
/// cgroup level `n` (so packets look up only those ancestors; 0 = no limits,
/// one array lookup per packet).
pub const MAP_NET_LEVELS: &str = "NET_LEVELS";
/// Most containers with a network rate limit.
pub const NET_LIMITS_MAX_ENTRIES: u32 = 4096;
/// Deepest cgroup level a limited container may sit at.
pub const NET_MAX_LEVEL: u32 = 16;
/// Hash: cgroup v2 id (`u64`) -> v2 id of the container it belongs to
/// (`u64`), for every cgroup in every container the agent tracks, innermost
/// container first. User space refreshes it after each discovery scan; the
/// `sock_ops` program uses it to know which container owns a TCP socket
/// (and so which rate to pace it at, when one is set later).
pub const MAP_SOCK_OWNERS: &str = "SOCK_OWNERS";
/// Capacity of [`MAP_SOCK_OWNERS`].
pub const SOCK_OWNERS_MAX_ENTRIES: u32 = 65536;
/// Hash: cgroup v2 id (`u64`) -> when it last raised a memory event
/// (`bpf_ktime_get_ns`, `u64`). Present only for the cgroups of containers
/// whose memory the agent wants to hear about at once (managed, with a
/// policy that raises memory under pressure); user space fills it.
pub const MAP_MEM_WATCH: &str = "MEM_WATCH";
/// Capacity of [`MAP_MEM_WATCH`].
pub const MEM_WATCH_MAX_ENTRIES: u32 = 16384;
/// Ring buffer of cgroup v2 ids (`u64`): a watched cgroup entered memcg
/// reclaim (it pressed on its memory limit). The agent wakes and ticks at
/// once instead of at its next period.
pub const MAP_MEM_EVENTS: &str = "MEM_EVENTS";
/// Bytes of [`MAP_MEM_EVENTS`] (a power of two, a multiple of the page).
pub const MEM_EVENTS_BYTES: u32 = 16384;
/// At most one event per cgroup this often (ns): a cgroup reclaiming
/// steadily at its limit (page cache) must not flood the agent.
pub const MEM_EVENT_MIN_GAP_NS: u64 = 20_000_000;

/// Array of two `u64` counts: cgroup directories made or removed in any
/// hierarchy ([`CGROUP_EVENT_TREE`]) and tasks moved between cgroups
/// ([`CGROUP_EVENT_ATTACH`]). Discovery rescans when one moves instead of
/// walking the trees every second.
pub const MAP_CGROUP_EVENTS: &str = "CGROUP_EVENTS";
/// Index of the mkdir/rmdir count in [`MAP_CGROUP_EVENTS`].
pub const CGROUP_EVENT_TREE: u32 = 0;
/// Index of the task-migration count in [`MAP_CGROUP_EVENTS`].
pub const CGROUP_EVENT_ATTACH: u32 = 1;

/// Direction index in [`NetLimit`] arrays.
pub const NET_RX: usize = 0;
pub const NET_TX: usize = 1;

/// A token bucket per direction for one container. `rate_bps == 0` means
/// that direction is not limited. User space writes `rate_bps` and `burst`
/// (and resets `tokens`/`last_ns` to zero); the kernel refills and spends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetLimit {
    /// Bytes per second allowed, `[rx, tx]`.
    pub rate_bps: [u64; 2],
    /// Most bytes a bucket holds (and how far egress may run into debt
    /// while signalling congestion before packets drop).
    pub burst: [u64; 2],
    /// Bytes available now (negative: in debt), `[rx, tx]`.
    pub tokens: [i64; 2],
    /// When the bucket was last refilled (`bpf_ktime_get_ns`).
    pub last_ns: [u64; 2],
}
const _: () = assert!(size_of::<NetLimit>() == 64);

/// Capacity of [`MAP_COUNTERS`]. LRU: cgroups that stopped doing anything are
/// evicted first when it is full.
pub const COUNTERS_MAX_ENTRIES: u32 = 16384;

/// Monotonic counters for one cgroup v2 id, on one CPU. User space sums the
/// per-CPU values and differences successive reads into rates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    /// Nanoseconds on CPU (from `sched_switch`, flushed by a CPU-clock timer).
    pub cpu_ns: u64,
    /// Bytes received by sockets of this cgroup (`cgroup_skb/ingress`), IP headers included.
    pub net_rx_bytes: u64,
    /// Bytes sent by sockets of this cgroup (`cgroup_skb/egress`), IP headers included.
    pub net_tx_bytes: u64,
    /// Packets received.
    pub net_rx_packets: u64,
    /// Packets sent.
    pub net_tx_packets: u64,
    /// Bytes of read bios submitted by tasks of this cgroup (`block_bio_queue`).
    pub disk_read_bytes: u64,
    /// Bytes of write bios submitted by tasks of this cgroup (`block_bio_queue`).
    pub disk_write_bytes: u64,
    /// Times a task of this cgroup entered memcg reclaim (it pressed on a memory limit).
    pub mem_reclaims: u64,
    /// OOM victims chosen while a task of this cgroup was allocating.
    pub oom_kills: u64,
    /// Packets dropped by the rate limiter (egress).
    pub net_tx_dropped: u64,
    /// Packets dropped by the rate limiter (ingress).
    pub net_rx_dropped: u64,
    /// Reserved, keeps the size a multiple of 16.
    pub _reserved: u64,
}
const _: () = assert!(size_of::<CgroupCounters>() == 96);

/// Number of `u64` fields in [`CgroupCounters`].
pub const COUNTER_FIELDS: usize = size_of::<CgroupCounters>() / 8;

impl CgroupCounters {
    /// The fields in declaration order, so sums and differences are one loop.
    pub const fn to_array(self) -> [u64; COUNTER_FIELDS] {
        let Self {
            cpu_ns,
            net_rx_bytes,
            net_tx_bytes,
            net_rx_packets,
            net_tx_packets,
            disk_read_bytes,
            disk_write_bytes,
            mem_reclaims,
            oom_kills,
            net_tx_dropped,
            net_rx_dropped,
            _reserved,
        } = self;
        [
            cpu_ns,
            net_rx_bytes,
            net_tx_bytes,
            net_rx_packets,
            net_tx_packets,
            disk_read_bytes,
            disk_write_bytes,
            mem_reclaims,
            oom_kills,
            net_tx_dropped,
            net_rx_dropped,
            _reserved,
        ]
    }

    /// Inverse of [`Self::to_array`].
    pub const fn from_array(a: [u64; COUNTER_FIELDS]) -> Self {
        Self {
            cpu_ns: a[0],
            net_rx_bytes: a[1],
            net_tx_bytes: a[2],
            net_rx_packets: a[3],
            net_tx_packets: a[4],
            disk_read_bytes: a[5],
            disk_write_bytes: a[6],
            mem_reclaims: a[7],
            oom_kills: a[8],
            net_tx_dropped: a[9],
            net_rx_dropped: a[10],
            _reserved: a[11],
        }
    }

    /// Field-wise wrapping sum (per-CPU values into one).
    pub fn wrapping_add(self, other: Self) -> Self {
        let (mut a, b) = (self.to_array(), other.to_array());
        let mut i = 0;
        while i < COUNTER_FIELDS {
            a[i] = a[i].wrapping_add(b[i]);
            i += 1;
        }
        Self::from_array(a)
    }
}

/// Start of the CPU slice running now on one CPU (`bpf_ktime_get_ns`, 0 = none yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlice {
    pub start_ns: u64,
    /// The cgroup whose finished slices on this CPU are summed here before
    /// they reach the counter map (0: none), so that a cgroup switching
    /// with the idle task or with itself pays no map lookup per switch.
    pub pending_cgroup: u64,
    /// Their time, ns.
    pub pending_ns: u64,
    /// When the first of them was summed, ns (pending time reaches the map
    /// at least this often: see `PENDING_MAX_NS` in the eBPF crate).
    pub pending_since: u64,
}
const _: () = assert!(size_of::<CpuSlice>() == 32);

/// Byte offsets inside `struct bio`, read from this kernel's BTF at start-up
/// (Rust eBPF has no CO-RE). `valid == 0` disables disk accounting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BioOffsets {
    /// `offsetof(struct bio, bi_opf)` (`u32`: operation in the low 8 bits).
    pub opf: u32,
    /// `offsetof(struct bio, bi_iter) + offsetof(struct bvec_iter, bi_size)` (`u32`, bytes).
    pub size: u32,
    pub valid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BioOffsets>() == 16);

/// Byte offsets the memory-cgroup iterator reads at, found in this kernel's
/// BTF at start-up (Rust eBPF has no CO-RE). `valid == 0` makes the
/// iterator write nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgOffsets {
    /// `offsetof(struct cgroup, subsys) + 8 * memory_cgrp_id`: the memory
    /// controller's `cgroup_subsys_state *`, the first member of its
    /// `struct mem_cgroup`.
    pub css: u32,
    /// `offsetof(struct mem_cgroup, memory.usage)` (`atomic_long_t`, pages).
    pub usage: u32,
    /// `offsetof(struct cgroup, kn)` (`struct kernfs_node *`).
    pub kn: u32,
    /// `offsetof(struct kernfs_node, id)` (`u64`: the directory's inode).
    pub kn_id: u32,
    pub valid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<MemcgOffsets>() == 24);

/// One record the memory-cgroup iterator writes: the cgroup directory's
/// inode in its hierarchy and the pages charged to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgRecord {
    pub ino: u64,
    pub pages: u64,
}
const _: () = assert!(size_of::<MemcgRecord>() == 16);

/// `REQ_OP_MASK` of `include/linux/blk_types.h` (`REQ_OP_BITS = 8`).
pub const REQ_OP_MASK: u32 = 0xff;
pub const REQ_OP_READ: u32 = 0;
pub const REQ_OP_WRITE: u32 = 1;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data: `repr(C)`, integers only, no padding holes.
    unsafe impl aya::Pod for super::CgroupCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuSlice {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BioOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemcgOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetLimit {}
}
