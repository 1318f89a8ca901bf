//! CPU time per cgroup.
//!
//! `sched_switch` runs in the context of the task leaving the CPU: the time
//! since the slice started on this CPU belongs to the current task's cgroup.
//! A task that never leaves the CPU (a lone CPU burner) would show nothing
//! until it does, so a CPU-clock perf event on every CPU flushes the running
//! slice the same way a few hundred times a second; user space then sees CPU
//! time at most one timer period late. The idle task (pid 0) is never charged.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, perf_event},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, PerfEventContext},
};
use scaler_common::CpuSlice;

use crate::counters;

#[map(name = "CPU_SLICE")]
static CPU_SLICE: PerCpuArray<CpuSlice> = PerCpuArray::with_max_entries(1, 0);

/// Pending time reaches the counter map at least this often (and at every
/// CPU-clock flush), whatever the switches: user space sees CPU time at
/// most this late.
const PENDING_MAX_NS: u64 = 4_000_000;

/// Charges the slice that ends now to the current task's cgroup. Finished
/// slices of one cgroup are summed per CPU and written to the map when
/// another cgroup runs, when `force` (the CPU-clock flush), or when the sum
/// is older than [`PENDING_MAX_NS`]: most switches (a task and the idle
/// task in turn, threads of one container) then cost no map lookup.
#[inline(always)]
fn flush_current_slice(force: bool) {
    let Some(slice) = CPU_SLICE.get_ptr_mut(0) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: valid per-CPU array slot for this run.
    let slice = unsafe { &mut *slice };
    let start = slice.start_ns;
    slice.start_ns = now;
    // The low 32 bits of pid_tgid are the thread id; 0 is this CPU's idle task.
    let pid = bpf_get_current_pid_tgid() as u32;
    if start != 0 && pid != 0 && now > start {
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        if slice.pending_cgroup != cgroup_id {
            write_pending(slice);
            slice.pending_cgroup = cgroup_id;
            slice.pending_since = now;
        }
        slice.pending_ns += now - start;
    }
    if force || now.wrapping_sub(slice.pending_since) > PENDING_MAX_NS {
        write_pending(slice);
    }
}

#[inline(always)]
fn write_pending(slice: &mut CpuSlice) {
    if slice.pending_ns != 0 && slice.pending_cgroup != 0 {
        counters::add(slice.pending_cgroup, slice.pending_ns, |c| &mut c.cpu_ns);
    }
    slice.pending_ns = 0;
    slice.pending_cgroup = 0;
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(_ctx: BtfTracePointContext) -> i32 {
    flush_current_slice(false);
    0
}

/// Does nothing. Attached beside `sched_switch` only with `[agent]
/// bpf_stats_floor` (`cargo xtask bench sampling` sets it): its run time
/// per event is what any program on this tracepoint costs here, the floor
/// under `sched_switch`'s own.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[perf_event]
pub fn cpu_clock(_ctx: PerfEventContext) -> u32 {
    flush_current_slice(true);
    0
}
