//! The shared counter map and the one way programs add to it.
use aya_ebpf::{macros::map, maps::LruPerCpuHashMap};
use scaler_common::{COUNTERS_MAX_ENTRIES, CgroupCounters};

#[map(name = "COUNTERS")]
pub static COUNTERS: LruPerCpuHashMap<u64, CgroupCounters> =
    LruPerCpuHashMap::with_max_entries(COUNTERS_MAX_ENTRIES, 0);

const BPF_NOEXIST: u64 = 1;

/// Returns this CPU's counters for `cgroup_id`, creating a zeroed entry on
/// first use. `None` only if the map refuses the insert.
#[inline(always)]
pub fn counters_for(cgroup_id: u64) -> Option<*mut CgroupCounters> {
    if let Some(ptr) = COUNTERS.get_ptr_mut(cgroup_id) {
        return Some(ptr);
    }
    // Another program on this CPU may have inserted it meanwhile: NOEXIST
    // then fails harmlessly and the lookup below finds theirs.
    let _ = COUNTERS.insert(cgroup_id, CgroupCounters::default(), BPF_NOEXIST);
    COUNTERS.get_ptr_mut(cgroup_id)
}

/// Adds `value` to the field chosen by `field` of `cgroup_id`'s counters.
///
/// Per-CPU values, so only code on this CPU touches them; the add is a plain
/// read-modify-write. The one interleaving possible (softirq network
/// accounting interrupting a task's egress accounting on the same CPU) touches
/// different fields except for `net_tx_*`, where a lost update costs one
/// packet's bytes, far below the 5 % the tests hold us to.
#[inline(always)]
pub fn add(cgroup_id: u64, value: u64, field: fn(&mut CgroupCounters) -> &mut u64) {
    if let Some(ptr) = counters_for(cgroup_id) {
        // SAFETY: the pointer comes from a successful map lookup and stays
        // valid for this program run; the value is per-CPU.
        let c = unsafe { &mut *ptr };
        let slot = field(c);
        *slot = slot.wrapping_add(value);
    }
}
