//! A bounded per-container history in a compact form (resources and the
//! signals the policies act on, about 140 bytes a point), so hundreds of
//! containers can keep a minute or more, and `scaler record` can write what
//! a policy saw, tick by tick.

use std::collections::VecDeque;

use super::{Reading, Resources, Sample};

const NONE: u64 = u64::MAX;

fn pack(v: Option<u64>) -> u64 {
    v.unwrap_or(NONE)
}

fn unpack(v: u64) -> Option<u64> {
    (v != NONE).then_some(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    time_ms: u64,
    interval_ms: u32,
    mem_waiting: u8,
    usage: [u64; 6],
    current: [u64; 6],
    cpu_throttled_usec: u64,
    mem_stall_usec: u64,
    oom_kills: u64,
    mem_reclaims: u64,
    mem_refault_bytes: u64,
    mem_refault_stall_usec: u64,
}

/// A history point is what `/v1/stats/{name}/history` serves.
pub use scaler_api::wire::{HistoryPoint, PointSignals};

#[derive(Debug, Clone)]
pub struct History {
    points: VecDeque<Point>,
    cap: usize,
}

impl History {
    pub fn new(cap: usize) -> Self {
        Self { points: VecDeque::with_capacity(cap.min(1024)), cap: cap.max(1) }
    }

    pub fn push(&mut self, s: &Sample) {
        if self.points.len() == self.cap {
            self.points.pop_front();
        }
        let r = s.resources.as_array();
        self.points.push_back(Point {
            time_ms: s.time_ms,
            interval_ms: u32::try_from(s.interval_ms).unwrap_or(u32::MAX),
            mem_waiting: match s.signals.mem_waiting {
                None => 2,
                Some(w) => u8::from(w),
            },
            usage: r.map(|x| pack(x.usage)),
            current: r.map(|x| pack(x.current)),
            cpu_throttled_usec: pack(s.signals.cpu_throttled_usec),
            mem_stall_usec: pack(s.signals.mem_stall_usec),
            oom_kills: pack(s.signals.oom_kills),
            mem_reclaims: s.signals.mem_reclaims,
            mem_refault_bytes: pack(s.signals.mem_refault_bytes),
            mem_refault_stall_usec: pack(s.signals.mem_refault_stall_usec),
        });
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Points newer than `since_ms`, oldest first, at most the last `limit`.
    pub fn since(&self, since_ms: u64, limit: usize) -> Vec<HistoryPoint> {
        let start = self.points.partition_point(|p| p.time_ms <= since_ms);
        let skip = (self.points.len() - start).saturating_sub(limit);
        self.points
            .iter()
            .skip(start + skip)
            .map(|p| {
                let r = |i: usize| Reading { usage: unpack(p.usage[i]), current: unpack(p.current[i]) };
                HistoryPoint {
                    time_ms: p.time_ms,
                    interval_ms: u64::from(p.interval_ms),
                    signals: PointSignals {
                        cpu_throttled_usec: unpack(p.cpu_throttled_usec),
                        mem_stall_usec: unpack(p.mem_stall_usec),
                        oom_kills: unpack(p.oom_kills),
                        mem_waiting: (p.mem_waiting < 2).then_some(p.mem_waiting == 1),
                        mem_reclaims: p.mem_reclaims,
                        mem_refault_bytes: unpack(p.mem_refault_bytes),
                        mem_refault_stall_usec: unpack(p.mem_refault_stall_usec),
                    },
                    resources: Resources {
                        cpu: r(0),
                        mem: r(1),
                        disk_read: r(2),
                        disk_write: r(3),
                        net_rx: r(4),
                        net_tx: r(5),
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: u64, cpu: u64) -> Sample {
        let mut x = Sample { time_ms: t, ..Default::default() };
        x.resources.cpu = Reading { usage: Some(cpu), current: None };
        x
    }

    #[test]
    fn bounded_ordered_and_filtered() {
        let mut h = History::new(3);
        for t in 1..=5 {
            h.push(&s(t * 100, t));
        }
        assert_eq!(h.len(), 3);
        let all = h.since(0, usize::MAX);
        assert_eq!(all.iter().map(|p| p.time_ms).collect::<Vec<_>>(), vec![300, 400, 500]);
        assert_eq!(all[0].resources.cpu, Reading { usage: Some(3), current: None });
        assert_eq!(h.since(300, usize::MAX).len(), 2);
        assert_eq!(h.since(0, 1)[0].time_ms, 500);
        assert!(h.since(500, 10).is_empty());
        let mut x = s(600, 6);
        x.interval_ms = 200;
        x.signals.cpu_throttled_usec = Some(5);
        x.signals.oom_kills = Some(2);
        x.signals.mem_waiting = Some(true);
        x.signals.mem_refault_bytes = Some(4096);
        h.push(&x);
        let last = h.since(500, 1)[0];
        assert_eq!(last.interval_ms, 200);
        assert_eq!(
            last.signals,
            PointSignals {
                cpu_throttled_usec: Some(5),
                mem_stall_usec: None,
                oom_kills: Some(2),
                mem_waiting: Some(true),
                mem_reclaims: 0,
                mem_refault_bytes: Some(4096),
                mem_refault_stall_usec: None,
            }
        );
        assert_eq!(all[0].signals.oom_kills, None);
    }
}
