//! Every memory cgroup's charge in one `read()`: a cgroup iterator
//! (`iter/cgroup`) that user space links to the root of the hierarchy the
//! memory controller lives in and reads once per tick, instead of a
//! `memory.current` / `memory.usage_in_bytes` `pread` per container.
//!
//! Each visited cgroup whose directory inode is in `MEMCG_WANT` (the
//! containers the agent tracks) writes one [`MemcgRecord`]: that inode and
//! `mem_cgroup.memory.usage` in pages, the counter both cgroupfs files print
//! (times the page size) for any cgroup but the root. The walk ends with a
//! trailer record (`MEMCG_TRAILER`) with the stop call's sequence number
//! (the last visited cgroup's, from 0: the cgroups visited less one, dying
//! ones included), so user space can tell when the walk costs more than the
//! files it replaces. Rust eBPF has no CO-RE, so the offsets come from
//! this kernel's BTF, written into `MEMCG_OFFSETS` by the loader.
use aya_ebpf::{
    bindings::seq_file,
    helpers::{bpf_probe_read_kernel, generated::bpf_seq_write},
    macros::map,
    maps::HashMap,
};
use scaler_common::{MEMCG_TRAILER, MEMCG_WANT_MAX_ENTRIES, MemcgOffsets, MemcgRecord};

#[map(name = "MEMCG_WANT")]
static MEMCG_WANT: HashMap<u64, u8> = HashMap::with_max_entries(MEMCG_WANT_MAX_ENTRIES, 0);

#[unsafe(no_mangle)]
static MEMCG_OFFSETS: MemcgOffsets = MemcgOffsets { css: 0, usage: 0, kn: 0, kn_id: 0, valid: 0, _pad: 0 };

/// `struct bpf_iter_meta` (stable uAPI-facing layout).
#[repr(C)]
struct IterMeta {
    seq: *mut seq_file,
    session_id: u64,
    seq_num: u64,
}

/// `struct bpf_iter__cgroup`: the iterator's context.
#[repr(C)]
struct IterCgroup {
    meta: *mut IterMeta,
    cgroup: *const u8,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/cgroup")]
pub fn memcg_usage(ctx: *mut core::ffi::c_void) -> i32 {
    // SAFETY: the kernel passes a `bpf_iter__cgroup`; every other read is a
    // probe read at offsets from BTF (a bad one fails and writes nothing).
    unsafe { write_record(ctx as *const IterCgroup) };
    0
}

unsafe fn write_record(ctx: *const IterCgroup) -> Option<()> {
    // SAFETY: a global in read-only data, set by the loader.
    let off: MemcgOffsets = unsafe { core::ptr::read_volatile(&MEMCG_OFFSETS) };
    if off.valid == 0 {
        return None;
    }
    // SAFETY: the context's fields, as the verifier checks them.
    let (meta, cgroup) = unsafe { ((*ctx).meta, (*ctx).cgroup) };
    if meta.is_null() {
        return None;
    }
    let record = if cgroup.is_null() {
        // The walk is over (the call at its end): how far it went.
        // SAFETY: `meta` as the verifier types it.
        MemcgRecord { ino: MEMCG_TRAILER, pages: unsafe { (*meta).seq_num } }
    } else {
        // SAFETY: probe reads of kernel memory; a map lookup by value.
        let kn: u64 = unsafe { bpf_probe_read_kernel(cgroup.wrapping_add(off.kn as usize) as *const u64) }.ok()?;
        if kn == 0 {
            return None;
        }
        let ino: u64 =
            unsafe { bpf_probe_read_kernel((kn as *const u8).wrapping_add(off.kn_id as usize) as *const u64) }.ok()?;
        unsafe { MEMCG_WANT.get(&ino) }?;
        let css: u64 = unsafe { bpf_probe_read_kernel(cgroup.wrapping_add(off.css as usize) as *const u64) }.ok()?;
        if css == 0 {
            return None;
        }
        let pages: u64 =
            unsafe { bpf_probe_read_kernel((css as *const u8).wrapping_add(off.usage as usize) as *const u64) }.ok()?;
        MemcgRecord { ino, pages }
    };
    // SAFETY: `meta->seq` as the verifier types it; the record lives on
    // the stack for the call.
    unsafe {
        let seq = (*meta).seq;
        bpf_seq_write(seq, &record as *const MemcgRecord as *const _, size_of::<MemcgRecord>() as u32);
    }
    Some(())
}
