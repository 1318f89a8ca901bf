//! Network bytes per cgroup: `cgroup_skb` programs attached once to the root
//! of the cgroup v2 hierarchy see every packet of every socket below it. The
//! socket's cgroup (not the CPU's current task: ingress runs in softirq) is
//! the key. Packets always pass.
use aya_ebpf::{helpers::generated::bpf_skb_cgroup_id, macros::cgroup_skb, programs::SkBuffContext};

use crate::counters;

const PASS: i32 = 1;

#[cgroup_skb]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    let len = u64::from(ctx.len());
    // SAFETY: the context pointer is the program's own `__sk_buff`.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    if cgroup_id != 0 {
        counters::add(cgroup_id, len, |c| &mut c.net_rx_bytes);
        counters::add(cgroup_id, 1, |c| &mut c.net_rx_packets);
    }
    PASS
}

#[cgroup_skb]
pub fn net_egress(ctx: SkBuffContext) -> i32 {
    let len = u64::from(ctx.len());
    // SAFETY: as above.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    if cgroup_id != 0 {
        counters::add(cgroup_id, len, |c| &mut c.net_tx_bytes);
        counters::add(cgroup_id, 1, |c| &mut c.net_tx_packets);
    }
    PASS
}
