//! scaler's kernel side: per-cgroup usage counters.
//!
//! Every program adds to one per-CPU LRU hash keyed by the cgroup **v2** id of
//! the task (or socket) that caused the event. User space sums the per-CPU
//! values, rolls leaf cgroups up into containers and turns counters into rates.
//! Nothing here logs or allocates: these run on the scheduler and network hot
//! paths.
#![no_std]
#![no_main]
// `atomic_xadd`: core's atomics lack `fetch_add` on the BPF target.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod cgroups;
mod counters;
mod cpu;
mod disk;
mod mem;
mod memiter;
mod net;
mod pacing;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
