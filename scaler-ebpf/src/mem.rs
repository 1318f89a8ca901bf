//! Memory events per cgroup (the level itself is read from cgroupfs):
//! entering memcg reclaim means a task pressed on its memory limit; an OOM
//! victim marked while a task of the cgroup was allocating is an OOM kill.
use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::counters;

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim(_ctx: BtfTracePointContext) -> i32 {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    counters::add(cgroup_id, 1, |c| &mut c.mem_reclaims);
    0
}

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(_ctx: BtfTracePointContext) -> i32 {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    counters::add(cgroup_id, 1, |c| &mut c.oom_kills);
    0
}
