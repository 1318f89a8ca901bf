//! Disk bytes per cgroup from `block_bio_queue`, which runs in the context of
//! the task submitting the bio (direct and synchronous I/O land in the right
//! cgroup; buffered writeback is submitted by kernel flushers, which is why
//! user space combines this with the cgroupfs I/O statistics).
//!
//! Rust eBPF has no CO-RE, so the offsets of `bi_opf` and `bi_iter.bi_size`
//! come from this kernel's BTF, found by user space at start-up and written
//! into `BIO_OFFSETS` before load.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_probe_read_kernel},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use scaler_common::{BioOffsets, REQ_OP_MASK, REQ_OP_READ, REQ_OP_WRITE};

use crate::counters;

#[unsafe(no_mangle)]
static BIO_OFFSETS: BioOffsets = BioOffsets { opf: 0, size: 0, valid: 0, _pad: 0 };

#[btf_tracepoint(function = "block_bio_queue")]
pub fn block_bio_queue(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: a global in read-only data, set by the loader.
    let offsets: BioOffsets = unsafe { core::ptr::read_volatile(&BIO_OFFSETS) };
    if offsets.valid == 0 {
        return 0;
    }
    let bio: *const u8 = ctx.arg(0);
    // SAFETY: probe reads of kernel memory at offsets taken from BTF; a bad
    // read returns an error and nothing is counted.
    let opf = match unsafe { bpf_probe_read_kernel(bio.wrapping_add(offsets.opf as usize) as *const u32) } {
        Ok(v) => v,
        Err(_) => return 0,
    };
    let size = match unsafe { bpf_probe_read_kernel(bio.wrapping_add(offsets.size as usize) as *const u32) } {
        Ok(v) => u64::from(v),
        Err(_) => return 0,
    };
    if size == 0 {
        return 0;
    }
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // Discards, flushes and zeroing are not data transfers: not counted.
    match opf & REQ_OP_MASK {
        REQ_OP_READ => counters::add(cgroup_id, size, |c| &mut c.disk_read_bytes),
        REQ_OP_WRITE => counters::add(cgroup_id, size, |c| &mut c.disk_write_bytes),
        _ => {}
    }
    0
}
