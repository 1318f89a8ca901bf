//! Memory events per cgroup (the level itself is read from cgroupfs):
//! entering memcg reclaim means a task pressed on its memory limit; an OOM
//! victim marked while a task of the cgroup was allocating is an OOM kill.
//!
//! For the cgroups user space watches (`MEM_WATCH`), entering reclaim also
//! sends the cgroup id to user space (`MEM_EVENTS`), at most once per
//! `MEM_EVENT_MIN_GAP_NS`: the agent then ticks at once, and a container
//! whose memory grows faster than a tick gets its raise in milliseconds.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{HashMap, RingBuf},
    programs::BtfTracePointContext,
};
use scaler_common::{MEM_EVENT_MIN_GAP_NS, MEM_EVENTS_BYTES, MEM_WATCH_MAX_ENTRIES};

use crate::counters;

#[map(name = "MEM_WATCH")]
static MEM_WATCH: HashMap<u64, u64> = HashMap::with_max_entries(MEM_WATCH_MAX_ENTRIES, 0);

#[map(name = "MEM_EVENTS")]
static MEM_EVENTS: RingBuf = RingBuf::with_byte_size(MEM_EVENTS_BYTES, 0);

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim(_ctx: BtfTracePointContext) -> i32 {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    counters::add(cgroup_id, 1, |c| &mut c.mem_reclaims);
    if let Some(last) = MEM_WATCH.get_ptr_mut(&cgroup_id) {
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: a pointer from a successful lookup, valid for this run.
        let last = unsafe { &mut *last };
        if now.wrapping_sub(*last) >= MEM_EVENT_MIN_GAP_NS {
            *last = now;
            let _ = MEM_EVENTS.output::<u64>(cgroup_id, 0);
        }
    }
    0
}

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(_ctx: BtfTracePointContext) -> i32 {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    counters::add(cgroup_id, 1, |c| &mut c.oom_kills);
    0
}
