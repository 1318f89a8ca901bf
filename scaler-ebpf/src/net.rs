//! Network bytes per cgroup, and per-container rate limits.
//!
//! `cgroup_skb` programs attached once to the root of the cgroup v2
//! hierarchy see every packet of every socket below it. The socket's cgroup
//! (not the CPU's current task: ingress runs in softirq) is the key.
//!
//! Rate limits follow the kernel's HBM sample (host bandwidth manager): a
//! token bucket per container and direction, refilled at the rate. On
//! egress a packet within the bucket passes; one that takes the bucket into
//! debt (by at most one burst) passes with a congestion notification, which
//! makes TCP shrink its window without a drop; deeper debt drops. On ingress
//! a packet beyond the bucket is dropped (TCP senders back off). Containers
//! are found through the socket cgroup's ancestors at the levels user space
//! marked in `NET_LEVELS`, so hosts without limits pay one array lookup.
use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    },
    macros::{cgroup_skb, map},
    maps::{Array, HashMap},
    programs::SkBuffContext,
};
use core::intrinsics::{AtomicOrdering::Relaxed, atomic_xadd};
use scaler_common::{NET_LIMITS_MAX_ENTRIES, NET_MAX_LEVEL, NET_RX, NET_TX, NetLimit};

use crate::counters;

const DROP: i32 = 0;
const PASS: i32 = 1;
/// Pass, and tell the sender's TCP it met congestion (`NET_XMIT_CN`).
const PASS_CN: i32 = 3;

#[map(name = "NET_LIMITS")]
pub static NET_LIMITS: HashMap<u64, NetLimit> = HashMap::with_max_entries(NET_LIMITS_MAX_ENTRIES, 0);

#[map(name = "NET_LEVELS")]
pub static NET_LEVELS: Array<u64> = Array::with_max_entries(1, 0);

/// The nearest limited ancestor, its cgroup v2 id and its limit.
/// `ancestor(level)` gives the id of the ancestor at `level` (0 when there
/// is none); only the levels marked in `NET_LEVELS` are asked.
#[inline(always)]
pub fn nearest_limited(ancestor: impl Fn(i32) -> u64) -> Option<(u64, *mut NetLimit)> {
    let levels = *NET_LEVELS.get(0)?;
    if levels == 0 {
        return None;
    }
    let mut level = NET_MAX_LEVEL as i32;
    while level >= 1 {
        if levels & (1u64 << level) != 0 {
            let id = ancestor(level);
            if id != 0
                && let Some(l) = NET_LIMITS.get_ptr_mut(id)
            {
                return Some((id, l));
            }
        }
        level -= 1;
    }
    None
}

/// The limit of the nearest limited ancestor of the packet's socket.
#[inline(always)]
fn limit_for(ctx: &SkBuffContext) -> Option<*mut NetLimit> {
    // SAFETY: the program's own `__sk_buff`.
    nearest_limited(|level| unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level) }).map(|(_, l)| l)
}

/// Spends `len` bytes from direction `dir` of the bucket; returns the
/// verdict.
///
/// The programs stay within BPF ISA v1 (atomic adds whose result is not
/// used), so no compare-exchange guards the refill: two CPUs refilling the
/// same bucket in the same few nanoseconds can both add the overlapping
/// interval. That can only over-refill, rarely, by at most one interval per
/// extra CPU; the end-to-end test holds a transfer to the rate within 10 %.
#[inline(always)]
fn spend(l: *mut NetLimit, dir: usize, len: u64, egress: bool) -> i32 {
    // SAFETY: `l` points into a map value valid for this run; shared fields
    // are changed with atomic adds or single stores.
    unsafe {
        let rate = (*l).rate_bps[dir];
        if rate == 0 {
            return PASS;
        }
        let burst = (*l).burst[dir] as i64;
        let now = bpf_ktime_get_ns();
        let last_ptr = &raw mut (*l).last_ns[dir];
        let tokens_ptr = &raw mut (*l).tokens[dir];
        let last = core::ptr::read_volatile(last_ptr);
        // Refill at most every 50 us: fewer racy windows, same average rate.
        if now > last + 50_000 {
            core::ptr::write_volatile(last_ptr, now);
            // A fresh bucket (last == 0) or a long pause starts full.
            let elapsed = if last == 0 { 1_000_000_000 } else { (now - last).min(1_000_000_000) };
            atomic_xadd::<i64, i64, { Relaxed }>(tokens_ptr, (elapsed * rate / 1_000_000_000) as i64);
            if core::ptr::read_volatile(tokens_ptr) > burst {
                core::ptr::write_volatile(tokens_ptr, burst);
            }
        }
        atomic_xadd::<i64, i64, { Relaxed }>(tokens_ptr, -(len as i64));
        let left = core::ptr::read_volatile(tokens_ptr);
        if left >= 0 {
            PASS
        } else if egress && left >= -burst {
            PASS_CN
        } else {
            // Not sent: give the bytes back.
            atomic_xadd::<i64, i64, { Relaxed }>(tokens_ptr, len as i64);
            DROP
        }
    }
}

#[inline(always)]
fn handle(ctx: &SkBuffContext, egress: bool) -> i32 {
    let len = u64::from(ctx.len());
    // SAFETY: the program's own `__sk_buff`.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let verdict = match limit_for(ctx) {
        Some(l) => spend(l, if egress { NET_TX } else { NET_RX }, len, egress),
        None => PASS,
    };
    if cgroup_id != 0 {
        match (egress, verdict) {
            (true, DROP) => counters::add(cgroup_id, 1, |c| &mut c.net_tx_dropped),
            (false, DROP) => counters::add(cgroup_id, 1, |c| &mut c.net_rx_dropped),
            (true, _) => {
                counters::add(cgroup_id, len, |c| &mut c.net_tx_bytes);
                counters::add(cgroup_id, 1, |c| &mut c.net_tx_packets);
            }
            (false, _) => {
                counters::add(cgroup_id, len, |c| &mut c.net_rx_bytes);
                counters::add(cgroup_id, 1, |c| &mut c.net_rx_packets);
            }
        }
    }
    verdict
}

#[cgroup_skb(ingress)]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    handle(&ctx, false)
}

// The egress attach type lets the program return "pass with congestion
// notification" (3); the kernel refuses that value otherwise.
#[cgroup_skb(egress)]
pub fn net_egress(ctx: SkBuffContext) -> i32 {
    handle(&ctx, true)
}
