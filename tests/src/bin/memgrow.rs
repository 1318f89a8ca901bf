//! `memgrow RATE_MIB_S PEAK_MIB HOLD_S LOW_MIB HOLD2_S`: grows resident
//! memory at RATE MiB/s up to PEAK (touching every page), holds it, shrinks
//! to LOW, holds again, exits. A memory workload whose growth the agent can
//! follow.
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<u64> = std::env::args().skip(1).filter_map(|x| x.parse().ok()).collect();
    let [rate, peak, hold, low, hold2] = a[..] else {
        eprintln!("usage: memgrow RATE_MIB_S PEAK_MIB HOLD_S LOW_MIB HOLD2_S");
        std::process::exit(2);
    };
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let start = Instant::now();
    while (chunks.len() as u64) < peak {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while (chunks.len() as u64) < due.min(peak) {
            // Non-zero bytes so every page is really resident.
            chunks.push(vec![0xa5; 1 << 20]);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(hold));
    chunks.truncate(low as usize);
    chunks.shrink_to_fit();
    std::thread::sleep(Duration::from_secs(hold2));
    std::hint::black_box(&chunks);
}
