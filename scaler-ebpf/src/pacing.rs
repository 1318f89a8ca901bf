//! Transmit rate limits for TCP through TCP's own pacing.
//!
//! Policing cannot hold TCP to a rate on fast local paths: with round trips
//! of microseconds a window-based sender ignores congestion notifications,
//! and a packet dropped on egress is a local drop that stalls the socket
//! until a timer fires (measured: a 10 MiB/s policer held iperf3 to 2 MiB/s).
//! Instead this `sock_ops` program sets `SO_MAX_PACING_RATE` on the sockets
//! of a limited container: TCP then spaces its own packets at that rate
//! (internal pacing, no qdisc needed). The rate is set when a socket
//! connects or listens (in the owning task's context, so its cgroup is the
//! current one; accepted sockets inherit it from their listener) and
//! refreshed every round trip from `NET_LIMITS`, so a changed limit reaches
//! established connections within one RTT. The `cgroup_skb` policer stays as
//! the backstop for other traffic.
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_socket_cookie, bpf_setsockopt},
    macros::{map, sock_ops},
    maps::LruHashMap,
    programs::SockOpsContext,
};
use scaler_common::{NET_MAX_LEVEL, NET_TX};

use crate::net::{NET_LEVELS, NET_LIMITS};

const SOL_SOCKET: i32 = 1;
const SO_MAX_PACING_RATE: i32 = 47;
const TCP_CLOSE: u32 = 7;
/// `~0U`: no pacing limit.
const UNLIMITED: u32 = u32::MAX;

/// Socket cookie -> id of the limited container that owns it.
#[map(name = "SOCK_CONTAINER")]
static SOCK_CONTAINER: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// The nearest limited ancestor of the current task's cgroup.
#[inline(always)]
fn current_container() -> Option<u64> {
    let levels = *NET_LEVELS.get(0)?;
    if levels == 0 {
        return None;
    }
    let mut level = NET_MAX_LEVEL as i32;
    while level >= 1 {
        if levels & (1u64 << level) != 0 {
            // SAFETY: plain helper call.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
            if id != 0 && NET_LIMITS.get_ptr(id).is_some() {
                return Some(id);
            }
        }
        level -= 1;
    }
    None
}

/// The transmit rate of container `id` as a pacing rate (0 = unlimited).
#[inline(always)]
fn tx_rate(id: u64) -> u32 {
    match NET_LIMITS.get_ptr(id) {
        // SAFETY: a map value pointer valid for this run.
        Some(l) => match unsafe { (*l).rate_bps[NET_TX] } {
            0 => UNLIMITED,
            r => r.min(u64::from(UNLIMITED - 1)) as u32,
        },
        None => UNLIMITED,
    }
}

#[inline(always)]
fn set_pacing(ctx: &SockOpsContext, rate: u32) {
    let mut v = rate;
    // SAFETY: the program's own context; a 4-byte option value on the stack.
    unsafe {
        bpf_setsockopt(
            ctx.ops.cast(),
            SOL_SOCKET,
            SO_MAX_PACING_RATE,
            (&raw mut v).cast(),
            core::mem::size_of::<u32>() as i32,
        );
    }
}

#[sock_ops]
pub fn tcp_pacing(ctx: SockOpsContext) -> u32 {
    // SAFETY: the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB | BPF_SOCK_OPS_TCP_LISTEN_CB => {
            if let Some(id) = current_container() {
                let _ = SOCK_CONTAINER.insert(cookie, id, 0);
                set_pacing(&ctx, tx_rate(id));
                let _ = ctx.set_cb_flags((BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
            }
        }
        BPF_SOCK_OPS_RTT_CB => {
            // SAFETY: a map value read once.
            if let Some(id) = unsafe { SOCK_CONTAINER.get(cookie) } {
                set_pacing(&ctx, tx_rate(*id));
            }
        }
        BPF_SOCK_OPS_STATE_CB => {
            // args[1] is the new state.
            // SAFETY: reading the context's argument array.
            if unsafe { (*ctx.ops).__bindgen_anon_1.args[1] } == TCP_CLOSE {
                let _ = SOCK_CONTAINER.remove(cookie);
            }
        }
        _ => {}
    }
    1
}
