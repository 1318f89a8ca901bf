//! Cgroup lifecycle: how many cgroup directories were made or removed (in
//! any hierarchy) and how many tasks moved between cgroups. User space reads
//! the two counts each tick and walks the cgroup trees only when they moved,
//! instead of every second.
use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::Array,
    programs::BtfTracePointContext,
};
use scaler_common::{CGROUP_EVENT_ATTACH, CGROUP_EVENT_TREE};

#[map(name = "CGROUP_EVENTS")]
static CGROUP_EVENTS: Array<u64> = Array::with_max_entries(2, 0);

#[inline(always)]
fn bump(index: u32) {
    if let Some(p) = CGROUP_EVENTS.get_ptr_mut(index) {
        // SAFETY: a pointer into the array, valid for this program run; the
        // add is atomic (several CPUs may make cgroups at once).
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, 1);
        }
    }
}

#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(_ctx: BtfTracePointContext) -> i32 {
    bump(CGROUP_EVENT_TREE);
    0
}

#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir(_ctx: BtfTracePointContext) -> i32 {
    bump(CGROUP_EVENT_TREE);
    0
}

#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(_ctx: BtfTracePointContext) -> i32 {
    bump(CGROUP_EVENT_ATTACH);
    0
}
