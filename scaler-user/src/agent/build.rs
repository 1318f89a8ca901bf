//! A sample from two readings of a container: the eBPF counters' increase
//! and its cgroupfs files before and after.

use std::time::Duration;

use scaler_common::CgroupCounters;

use crate::{
    cgroup::reader::CgroupStats,
    config::DiskSource,
    sample::{
        Reading, Resources, Sample, Signals, Totals,
        rates::{counter_delta, millicores, opt_delta, page_bytes, per_second, refault_stall},
    },
};

/// Everything one sample is computed from.
pub struct SampleInput<'a> {
    pub time_ms: u64,
    pub interval: Duration,
    /// eBPF counter increase over the interval, summed over the subtree.
    pub kernel: CgroupCounters,
    pub prev: &'a CgroupStats,
    pub cur: &'a CgroupStats,
    /// False for a cgroup with no v2 directory: its CPU time then comes from
    /// cgroupfs accounting and it has no network counts.
    pub kernel_sees: bool,
    pub disk_source: DiskSource,
}

/// Combines the eBPF delta and two cgroupfs readings into a sample, carrying
/// the cumulative `totals` forward. Disk sources are combined on cumulative
/// counts (the larger of the two), so bytes that one source sees a tick
/// later than the other are never counted twice.
pub fn build_sample(i: &SampleInput, totals: &Totals) -> Sample {
    let (d, prev, cur) = (&i.kernel, i.prev, i.cur);
    let ns = i.interval.as_nanos().max(1) as u64;
    let cg_cpu_ns = opt_delta(prev.cpu_usage_ns, cur.cpu_usage_ns);
    let cg_io = prev.io.zip(cur.io).map(|(p, c)| (counter_delta(p.read, c.read), counter_delta(p.write, c.write)));
    let cpu_ns = if i.kernel_sees { Some(d.cpu_ns) } else { cg_cpu_ns };

    let mut t = *totals;
    t.cpu_usec += cpu_ns.unwrap_or(0) / 1000;
    t.cpu_cgroupfs_usec = cg_cpu_ns.map(|v| totals.cpu_cgroupfs_usec.unwrap_or(0) + v / 1000);
    if i.kernel_sees {
        t.net_rx_bytes += d.net_rx_bytes;
        t.net_tx_bytes += d.net_tx_bytes;
        t.disk_read_ebpf_bytes += d.disk_read_bytes;
        t.disk_write_ebpf_bytes += d.disk_write_bytes;
    }
    t.disk_read_cgroupfs_bytes = cg_io.map(|x| totals.disk_read_cgroupfs_bytes.unwrap_or(0) + x.0);
    t.disk_write_cgroupfs_bytes = cg_io.map(|x| totals.disk_write_cgroupfs_bytes.unwrap_or(0) + x.1);
    let combine = |ebpf: u64, cg: Option<u64>| match i.disk_source {
        DiskSource::Ebpf => ebpf,
        DiskSource::Cgroupfs => cg.unwrap_or(0),
        DiskSource::Auto => cg.map_or(ebpf, |c| c.max(ebpf)),
    };
    t.disk_read_bytes = combine(t.disk_read_ebpf_bytes, t.disk_read_cgroupfs_bytes).max(totals.disk_read_bytes);
    t.disk_write_bytes = combine(t.disk_write_ebpf_bytes, t.disk_write_cgroupfs_bytes).max(totals.disk_write_bytes);
    let disk_available = i.kernel_sees || cg_io.is_some();

    let rate = |v: u64| per_second(v, ns);
    let kernel = |v: u64| i.kernel_sees.then(|| rate(v));
    // Counters read less often than every tick (a quiet managed container,
    // a watched one) grew over longer than the interval: their increase is
    // spread over the time it covers, so that "this much per interval"
    // stays true (a second of throttling must not land in one tick).
    let span = match (prev.signals_at, cur.signals_at) {
        (Some(p), Some(c)) if c > p => c.duration_since(p),
        _ => i.interval,
    };
    let share = |v: Option<u64>| {
        v.map(|v| if span > i.interval { (u128::from(v) * i.interval.as_nanos() / span.as_nanos()) as u64 } else { v })
    };
    let stall = |p: Option<crate::cgroup::parse::Psi>, c: Option<crate::cgroup::parse::Psi>| {
        share(opt_delta(p.map(|x| x.some.total_us), c.map(|x| x.some.total_us)))
    };
    let io_stall = stall(prev.psi_io, cur.psi_io);
    let refault_bytes =
        share(opt_delta(prev.mem_refault_file, cur.mem_refault_file)).map(|p| p.saturating_mul(page_bytes()));
    Sample {
        time_ms: i.time_ms,
        interval_ms: i.interval.as_millis() as u64,
        resources: Resources {
            cpu: Reading { usage: cpu_ns.map(|v| millicores(v, ns)), current: cur.cpu_quota.map(|q| q.millicores()) },
            mem: Reading { usage: cur.mem_working_set(), current: cur.mem_limit },
            disk_read: Reading {
                usage: disk_available.then(|| rate(t.disk_read_bytes - totals.disk_read_bytes)),
                current: cur.io_limits.read_bps,
            },
            disk_write: Reading {
                usage: disk_available.then(|| rate(t.disk_write_bytes - totals.disk_write_bytes)),
                current: cur.io_limits.write_bps,
            },
            net_rx: Reading { usage: kernel(d.net_rx_bytes), current: None },
            net_tx: Reading { usage: kernel(d.net_tx_bytes), current: None },
        },
        signals: Signals {
            cpu_cgroupfs: share(cg_cpu_ns).map(|v| millicores(v, ns)),
            cpu_throttled_usec: share(opt_delta(prev.cpu_throttled_ns, cur.cpu_throttled_ns)).map(|v| v / 1000),
            cpu_nr_throttled: share(opt_delta(prev.cpu_nr_throttled, cur.cpu_nr_throttled)),
            mem_charged: cur.mem_charged,
            mem_reclaims: d.mem_reclaims,
            oom_kills: cur.oom_kills,
            mem_waiting: cur.mem_waiting,
            mem_stall_usec: stall(prev.psi_mem, cur.psi_mem),
            cpu_stall_usec: stall(prev.psi_cpu, cur.psi_cpu),
            io_stall_usec: io_stall,
            mem_refault_bytes: refault_bytes,
            mem_refault_stall_usec: refault_bytes
                .map(|b| refault_stall(b, share(cg_io.map(|x| x.0)), io_stall.unwrap_or(0))),
            disk_read_ebpf: kernel(d.disk_read_bytes),
            disk_write_ebpf: kernel(d.disk_write_bytes),
            disk_read_cgroupfs: cg_io.map(|x| rate(x.0)),
            disk_write_cgroupfs: cg_io.map(|x| rate(x.1)),
        },
        totals: t,
    }
}
