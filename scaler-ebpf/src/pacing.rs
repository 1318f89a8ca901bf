//! Transmit rate limits for TCP through TCP's own pacing.
//!
//! Policing cannot hold TCP to a rate on fast local paths: with round trips
//! of microseconds a window-based sender ignores congestion notifications,
//! and a packet dropped on egress is a local drop that stalls the socket
//! until a timer fires (measured: a 10 MiB/s policer held iperf3 to 2 MiB/s).
//! Instead this `sock_ops` program sets `SO_MAX_PACING_RATE` on the sockets
//! of a limited container: TCP then spaces its own packets at that rate
//! (internal pacing, no qdisc needed).
//!
//! Every TCP socket of a container the agent tracks is marked with its
//! owner when it connects or listens (in the owning task's context, so the
//! task's cgroup is the current one: the nearest limited ancestor, else the
//! container `SOCK_OWNERS` names for that cgroup). An accepted socket is
//! created in softirq context, where the current task is unrelated, so
//! listeners are also recorded by (network namespace, port) and a passively
//! established socket takes its listener's owner. Marked sockets are paced
//! at their owner's transmit rate, re-read every round trip from
//! `NET_LIMITS`, so a limit set or changed later reaches connections that
//! already exist within one RTT, including those of a server container that
//! was listening before it was subscribed. The `cgroup_skb` policer stays as
//! the backstop for other traffic and for sockets older than the agent.
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie,
        bpf_setsockopt,
    },
    macros::{map, sock_ops},
    maps::{HashMap, LruHashMap},
    programs::SockOpsContext,
};
use scaler_common::{NET_TX, SOCK_OWNERS_MAX_ENTRIES};

use crate::net::{NET_LIMITS, nearest_limited};

const SOL_SOCKET: i32 = 1;
const SO_MAX_PACING_RATE: i32 = 47;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;
/// `~0U`: no pacing limit.
const UNLIMITED: u32 = u32::MAX;

/// The container that owns a socket and the pacing rate last set on it.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockOwner {
    container: u64,
    rate: u32,
    _pad: u32,
}

/// Socket cookie -> its owner.
#[map(name = "SOCK_CONTAINER")]
static SOCK_CONTAINER: LruHashMap<u64, SockOwner> = LruHashMap::with_max_entries(65536, 0);

/// Cgroup v2 id -> container it belongs to (written by user space).
#[map(name = "SOCK_OWNERS")]
static SOCK_OWNERS: HashMap<u64, u64> = HashMap::with_max_entries(SOCK_OWNERS_MAX_ENTRIES, 0);

/// `[network namespace cookie, local port]` of a listening socket -> its
/// owner, for the sockets it accepts.
#[map(name = "LISTENERS")]
static LISTENERS: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(16384, 0);

/// The nearest limited ancestor of the current task's cgroup.
#[inline(always)]
fn current_container() -> Option<u64> {
    // SAFETY: plain helper call.
    nearest_limited(|level| unsafe { bpf_get_current_ancestor_cgroup_id(level) }).map(|(id, _)| id)
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

/// The container owning a socket the current task creates: the nearest
/// limited ancestor, else the tracked container its cgroup belongs to.
#[inline(always)]
fn current_owner() -> Option<u64> {
    if let Some(id) = current_container() {
        return Some(id);
    }
    // SAFETY: plain helper call; a map value read once.
    unsafe { SOCK_OWNERS.get(&bpf_get_current_cgroup_id()).copied() }
}

#[inline(always)]
fn listener_key(ctx: &SockOpsContext) -> [u64; 2] {
    // SAFETY: the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.ops.cast()) };
    [netns, u64::from(ctx.local_port())]
}

/// Marks the socket as `container`'s, paces it at its rate and asks for
/// round-trip and state callbacks.
#[inline(always)]
fn adopt(ctx: &SockOpsContext, cookie: u64, container: u64) {
    let rate = tx_rate(container);
    let _ = SOCK_CONTAINER.insert(cookie, SockOwner { container, rate, _pad: 0 }, 0);
    set_pacing(ctx, rate);
    let _ = ctx.set_cb_flags((BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

#[sock_ops]
pub fn tcp_pacing(ctx: SockOpsContext) -> u32 {
    // SAFETY: the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            if let Some(id) = current_owner() {
                adopt(&ctx, cookie, id);
            }
        }
        BPF_SOCK_OPS_TCP_LISTEN_CB => {
            let key = listener_key(&ctx);
            match current_owner() {
                Some(id) => {
                    let _ = LISTENERS.insert(&key, &id, 0);
                    adopt(&ctx, cookie, id);
                }
                // The port now belongs to a socket outside any container.
                None => {
                    let _ = LISTENERS.remove(&key);
                }
            }
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            // SAFETY: a map value read once.
            if let Some(id) = unsafe { LISTENERS.get(&listener_key(&ctx)) } {
                adopt(&ctx, cookie, *id);
            }
        }
        BPF_SOCK_OPS_RTT_CB => {
            if let Some(owner) = SOCK_CONTAINER.get_ptr_mut(cookie) {
                // SAFETY: a map value pointer valid for this run; only this
                // socket's callbacks (serialised by its lock) touch it.
                unsafe {
                    let rate = tx_rate((*owner).container);
                    if rate != (*owner).rate {
                        (*owner).rate = rate;
                        set_pacing(&ctx, rate);
                    }
                }
            }
        }
        BPF_SOCK_OPS_STATE_CB => {
            // args[0] is the old state, args[1] the new one.
            // SAFETY: reading the context's argument array.
            let (old, new) = unsafe { ((*ctx.ops).__bindgen_anon_1.args[0], (*ctx.ops).__bindgen_anon_1.args[1]) };
            if new == TCP_CLOSE {
                if old == TCP_LISTEN
                    && let Some(owner) = SOCK_CONTAINER.get_ptr(cookie)
                {
                    let key = listener_key(&ctx);
                    // SAFETY: map value pointers valid for this run.
                    if unsafe { LISTENERS.get(&key).copied() == Some((*owner).container) } {
                        let _ = LISTENERS.remove(&key);
                    }
                }
                let _ = SOCK_CONTAINER.remove(&cookie);
            }
        }
        _ => {}
    }
    1
}
