//! Counters into rates. Pure: the tests drive it with made-up readings.

use scaler_common::{COUNTER_FIELDS, CgroupCounters};

/// Within this distance of `u64::MAX`, a smaller reading means the counter
/// wrapped; further away, it means the counter started over (a cgroup id
/// reused after its entry was evicted, a recreated cgroup).
const WRAP_WINDOW: u64 = 1 << 48;

/// Increase of a monotonic counter from `prev` to `cur`.
pub fn counter_delta(prev: u64, cur: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else if prev > u64::MAX - WRAP_WINDOW {
        cur.wrapping_sub(prev)
    } else {
        cur
    }
}

/// Optional counters: no delta unless both readings exist.
pub fn opt_delta(prev: Option<u64>, cur: Option<u64>) -> Option<u64> {
    Some(counter_delta(prev?, cur?))
}

/// Increase of a container's counters between two readings of its cgroup
/// subtree ((cgroup id, counters), in the order its ids are kept: an id is
/// looked for at its own index first). A child cgroup that appeared since
/// `prev` counts from zero (it is new, all it did is new); one that vanished
/// contributes nothing (its last increments are lost with it, but the total
/// never goes backwards).
pub fn subtree_delta(prev: &[(u64, CgroupCounters)], cur: &[(u64, CgroupCounters)]) -> CgroupCounters {
    let mut total = [0u64; COUNTER_FIELDS];
    for (i, (id, now)) in cur.iter().enumerate() {
        let now = now.to_array();
        let before = match prev.get(i) {
            Some((p, c)) if p == id => Some(c),
            _ => prev.iter().find(|(p, _)| p == id).map(|(_, c)| c),
        };
        let before = before.map_or([0; COUNTER_FIELDS], |c| c.to_array());
        for i in 0..COUNTER_FIELDS {
            total[i] = total[i].wrapping_add(counter_delta(before[i], now[i]));
        }
    }
    CgroupCounters::from_array(total)
}

/// `delta` units over `interval_ns` as units per second.
pub fn per_second(delta: u64, interval_ns: u64) -> u64 {
    if interval_ns == 0 {
        return 0;
    }
    (u128::from(delta) * 1_000_000_000 / u128::from(interval_ns)).min(u128::from(u64::MAX)) as u64
}

/// CPU nanoseconds over `interval_ns` as millicores (1000 = one busy core).
pub fn millicores(cpu_ns: u64, interval_ns: u64) -> u64 {
    if interval_ns == 0 {
        return 0;
    }
    (u128::from(cpu_ns) * 1000 / u128::from(interval_ns)).min(u128::from(u64::MAX)) as u64
}

/// Bytes per page, the unit of `workingset_refault_file`.
pub fn page_bytes() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1))
}

/// The share of `io_stall_us` due to re-reading evicted cache: the stall
/// times refaulted bytes over bytes read (all of it when reads are not
/// counted, none without refaults).
pub fn refault_stall(refault_bytes: u64, read_bytes: Option<u64>, io_stall_us: u64) -> u64 {
    match read_bytes {
        _ if refault_bytes == 0 => 0,
        Some(read) if read > refault_bytes => {
            u64::try_from(u128::from(io_stall_us) * u128::from(refault_bytes) / u128::from(read)).unwrap_or(0)
        }
        _ => io_stall_us,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn c(cpu_ns: u64, rx: u64) -> CgroupCounters {
        CgroupCounters { cpu_ns, net_rx_bytes: rx, ..Default::default() }
    }

    #[test]
    fn deltas_handle_wrap_and_reset() {
        assert_eq!(counter_delta(10, 25), 15);
        assert_eq!(counter_delta(u64::MAX - 4, 5), 10, "wrapped past u64::MAX");
        assert_eq!(counter_delta(1_000_000, 300), 300, "counter restarted from zero");
        assert_eq!(opt_delta(Some(1), None), None);
        assert_eq!(opt_delta(Some(1), Some(4)), Some(3));
    }

    #[test]
    fn subtree_new_and_vanished_children() {
        let prev = [(1, c(100, 10)), (2, c(50, 0)), (3, c(7, 7))];
        // id 2 vanished, id 4 is a new child (at 2's index), id 3 moved.
        let cur = [(1, c(160, 30)), (4, c(40, 5)), (3, c(7, 7))];
        let d = subtree_delta(&prev, &cur);
        assert_eq!((d.cpu_ns, d.net_rx_bytes), (100, 25));
        // Another order: each id still meets its own reading.
        let d = subtree_delta(&prev, &[(3, c(8, 7)), (1, c(160, 30))]);
        assert_eq!((d.cpu_ns, d.net_rx_bytes), (61, 20));
        let wrapped = [(9, c(u64::MAX - 9, 0))];
        let after = [(9, c(10, 0))];
        assert_eq!(subtree_delta(&wrapped, &after).cpu_ns, 20);
    }

    #[test]
    fn rates() {
        assert_eq!(millicores(100_000_000, 200_000_000), 500);
        assert_eq!(millicores(400_000_000, 200_000_000), 2000);
        assert_eq!(millicores(1, 0), 0);
        assert_eq!(per_second(1_000_000, 200_000_000), 5_000_000);
        assert_eq!(per_second(u64::MAX, 1), u64::MAX);
    }
}
