//! What a tick reads from the kernel side: the eBPF counters of each
//! cgroup id, cgroup lifecycle event counts and memory charged.

use std::time::Instant;

use scaler_common::CgroupCounters;

use crate::ebpf::loader::CgroupEvents;

/// Source of per-cgroup-id kernel counters (the eBPF map, or a test double).
pub trait Counters {
    fn read(&self, cgroup_id: u64) -> CgroupCounters;

    /// Counts of cgroup lifecycle events, when the kernel side has them
    /// (then discovery rescans when they move, not every interval).
    fn cgroup_events(&self) -> Option<CgroupEvents> {
        None
    }

    /// When the counters `read` returns were taken, if all at once (a
    /// snapshot of the map); `None`: each at its `read`.
    fn taken_at(&self) -> Option<Instant> {
        None
    }

    /// Bytes charged to the memory cgroup whose directory has inode `ino`,
    /// when the kernel side reads every memory cgroup at once (`None`: the
    /// reader reads the cgroupfs file).
    fn memory_charged(&self, _ino: u64) -> Option<u64> {
        None
    }
}

impl Counters for crate::ebpf::Kernel {
    fn read(&self, cgroup_id: u64) -> CgroupCounters {
        crate::ebpf::Kernel::read(self, cgroup_id)
    }

    fn cgroup_events(&self) -> Option<CgroupEvents> {
        crate::ebpf::Kernel::cgroup_events(self)
    }

    fn taken_at(&self) -> Option<Instant> {
        self.counters_at()
    }

    fn memory_charged(&self, ino: u64) -> Option<u64> {
        crate::ebpf::Kernel::memory_charged(self, ino)
    }
}
