//! Which managed containers need their cgroupfs files this tick.
//!
//! A managed container whose resources are all far from their limits, and
//! on which the kernel reported no pressure, gives its policy nothing to
//! act on between two full readings: its CPU usage comes from the eBPF
//! counters every tick anyway, and the cgroupfs counters it would read
//! (throttling, refaults, stalls, OOM kills) are cumulative, so reading
//! them a second later loses nothing, it only dates it later. Such a
//! container is *quiet*: it is read as a watched container is (in full
//! once per `agent.watched_full_read_ms`, 5 s), with its memory charged
//! every tick (growth toward the limit must never be seen late: from the
//! kernel's one read of every memory cgroup, or one small file). A limit
//! changed outside scaler is seen at the next full reading (5 s; 1 s once
//! in play). Counters read after a gap are spread over the time they cover
//! (`build_sample`), so a rate stays a rate.
//!
//! It is *in play*, and read every tick for [`HOT_TICKS`] ticks after the
//! last sign, when:
//! - its eBPF CPU use this tick reaches half its CPU limit (throttling
//!   becomes possible), or its memory charged reached half its limit at the
//!   last reading;
//! - the kernel saw it enter memory-cgroup reclaim this tick (eBPF: it is
//!   pressing on its memory limit, however quiet it looked), or an OOM kill;
//! - its last sample showed throttling, tasks waiting at the limit, memory
//!   stall, or refaults;
//! - a resource it subscribed has no known limit, or the kernel side cannot
//!   see it (a v1-only cgroup: its CPU usage comes from cgroupfs).
//!
//! Memory growing from far below its limit is seen at the tick it passes
//! half the limit, and the container is then read in full every tick, as
//! before; CPU throttling below half the limit (bursts within a period) is
//! seen at the next full reading.

use scaler_common::CgroupCounters;

use crate::{
    cgroup::reader::{CgroupStats, Depth},
    sample::Sample,
};

/// Ticks a container stays read in full after its last sign of being in
/// play (1 s at the default 200 ms tick).
pub const HOT_TICKS: u64 = 5;

/// What this tick is for each kind of reading (see [`depth`]).
pub struct TickKinds {
    /// Watched and quiet containers are read in full.
    pub full: bool,
    /// Watched containers read their memory charged.
    pub mem: bool,
    /// Managed containers in play are read in full.
    pub managed_full: bool,
}

/// How deep a container is read this tick: `hot` is `None` for a watched
/// one, else whether the managed one is in play (within [`HOT_TICKS`] of
/// its last sign).
pub fn depth(hot: Option<bool>, tick: &TickKinds) -> Depth {
    match hot {
        Some(true) if tick.managed_full => Depth::Full,
        Some(true) => Depth::Signals,
        // Quiet: as a watched container, with its memory charged every
        // tick (growth toward the limit is what must never be seen late).
        Some(false) | None if tick.full => Depth::Full,
        Some(false) => Depth::Usage,
        None if tick.mem => Depth::Usage,
        None => Depth::Carry,
    }
}

/// What decides whether a managed container is in play this tick.
pub struct Signs<'a> {
    /// The kernel side sees its CPU, network and disk.
    pub kernel_sees: bool,
    /// Its eBPF counters' increase since the last tick.
    pub delta: &'a CgroupCounters,
    /// Over how long (ns).
    pub interval_ns: u64,
    /// Its last reading.
    pub last: Option<&'a CgroupStats>,
    /// Its last sample showed pressure (see [`pressed`]).
    pub pressed: bool,
    /// The limits scaler keeps on it.
    pub limits: &'a [(policies::Resource, Option<u64>)],
}

/// Whether the container is in play (see the module's documentation).
pub fn in_play(s: &Signs) -> bool {
    use policies::Resource;
    if !s.kernel_sees || s.pressed || s.delta.mem_reclaims > 0 || s.delta.oom_kills > 0 {
        return true;
    }
    let Some(last) = s.last else { return true };
    s.limits.iter().any(|&(r, limit)| match (r, limit) {
        (Resource::Cpu, Some(mc)) => {
            let used_mc = u128::from(s.delta.cpu_ns) * 1000 / u128::from(s.interval_ns.max(1));
            used_mc * 2 >= u128::from(mc)
        }
        (Resource::Mem, Some(bytes)) => last.mem_charged.is_none_or(|c| c.saturating_mul(2) >= bytes),
        (Resource::Cpu | Resource::Mem, None) => true,
        // Disk and network come from the eBPF counters every tick.
        _ => false,
    })
}

/// The sample shows the container pressing on a limit: throttled, tasks
/// waiting, memory stall, or cache read back after eviction. (Reclaim is
/// not looked at here: [`in_play`] saw the same tick's count.)
pub fn pressed(s: &Sample) -> bool {
    let g = &s.signals;
    let some = |v: Option<u64>| v.is_some_and(|v| v > 0);
    some(g.cpu_throttled_usec)
        || some(g.cpu_nr_throttled)
        || g.mem_waiting == Some(true)
        || some(g.mem_stall_usec)
        || some(g.mem_refault_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use policies::Resource;

    fn signs<'a>(delta: &'a CgroupCounters, last: &'a CgroupStats, limits: &'a [(Resource, Option<u64>)]) -> Signs<'a> {
        Signs { kernel_sees: true, delta, interval_ns: 200_000_000, last: Some(last), pressed: false, limits }
    }

    #[test]
    fn far_from_its_limits_and_unpressed_is_quiet() {
        let idle = CgroupCounters { cpu_ns: 1_000_000, ..Default::default() }; // 5 millicores
        let last = CgroupStats { mem_charged: Some(1 << 20), ..Default::default() };
        let limits = [(Resource::Cpu, Some(100)), (Resource::Mem, Some(16 << 20)), (Resource::NetTx, None)];
        assert!(!in_play(&signs(&idle, &last, &limits)));

        // Half the CPU limit used: throttling becomes possible.
        let busy = CgroupCounters { cpu_ns: 10_000_000, ..Default::default() }; // 50 millicores
        assert!(in_play(&signs(&busy, &last, &limits)));
        // Half the memory limit charged.
        let full = CgroupStats { mem_charged: Some(8 << 20), ..Default::default() };
        assert!(in_play(&signs(&idle, &full, &limits)));
        // The kernel saw it reclaim at its limit.
        let reclaim = CgroupCounters { mem_reclaims: 1, ..idle };
        assert!(in_play(&signs(&reclaim, &last, &limits)));
        // Pressure in its last sample, a v1-only cgroup, an unknown limit.
        assert!(in_play(&Signs { pressed: true, ..signs(&idle, &last, &limits) }));
        assert!(in_play(&Signs { kernel_sees: false, ..signs(&idle, &last, &limits) }));
        assert!(in_play(&signs(&idle, &last, &[(Resource::Mem, None)])));
        assert!(in_play(&Signs { last: None, ..signs(&idle, &last, &limits) }));
    }

    #[test]
    fn pressure_in_a_sample_is_seen() {
        let mut s = Sample::default();
        assert!(!pressed(&s));
        s.signals.cpu_throttled_usec = Some(0);
        s.signals.mem_stall_usec = Some(0);
        assert!(!pressed(&s), "zero is no pressure");
        s.signals.mem_refault_bytes = Some(4096);
        assert!(pressed(&s));
        let w = Sample { signals: scaler_api::wire::Signals { mem_waiting: Some(true), ..Default::default() }, ..s };
        assert!(pressed(&w));
    }
}
