//! One entity's history in memory (pure: no store, no clock). Three tiers:
//! every point (full resolution), one-minute means and fifteen-minute
//! means. Each tier appends to an open block per time bucket; a block whose
//! bucket has passed is closed and handed back for writing.
//!
//! A block's bytes are shared (`Arc`) with the flush writing them, not
//! copied: the next point copies them only if that write still holds them.
//! The coarser tiers gain a point a minute or a quarter of an hour apart:
//! a flush hands their bytes to the store and keeps none, and what they
//! gain next is appended to the stored block (see [`Block::take_for_write`]).

use std::sync::Arc;

use super::codec::{self, Point};
use crate::{
    config::HistoryConfig,
    model::{RESOURCES, Reading, Readings},
};

pub const TIERS: usize = 3;

/// A resolution tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSpec {
    /// Spacing of points (0: every point as recorded).
    pub step_ms: u64,
    /// Points are stored in blocks of this span: 10 to 16 points at the
    /// default poll, so an entity's open blocks (held in memory until their
    /// span has passed) stay below a KiB each.
    pub bucket_ms: u64,
    /// The span of blocks written before 0.1.x stores used smaller ones
    /// (a minute, an hour, a day; each a multiple of `bucket_ms`): a
    /// query also reads the one such block its window starts in, and
    /// pruning waits for it to end.
    pub legacy_bucket_ms: u64,
    /// Blocks older than this are deleted.
    pub retention_ms: u64,
    /// Whether an open block stays whole in memory between flushes. The
    /// full-resolution tier's does: it gains a point every round, and
    /// appending in the store would read each block back at every flush.
    /// The others give their bytes to the store at each flush (held, at
    /// 1,000 hosts RSS reached 332 MiB after fifteen minutes; given up,
    /// 259-298 MiB).
    pub held: bool,
}

pub fn tiers(cfg: &HistoryConfig) -> [TierSpec; TIERS] {
    [
        TierSpec {
            step_ms: 0,
            bucket_ms: 10_000,
            legacy_bucket_ms: 60_000,
            retention_ms: cfg.full_retention_s * 1000,
            held: true,
        },
        TierSpec {
            step_ms: 60_000,
            bucket_ms: 900_000,
            legacy_bucket_ms: 3_600_000,
            retention_ms: cfg.minute_retention_s * 1000,
            held: false,
        },
        TierSpec {
            step_ms: 900_000,
            bucket_ms: 14_400_000,
            legacy_bucket_ms: 86_400_000,
            retention_ms: cfg.quarter_retention_s * 1000,
            held: false,
        },
    ]
}

/// The block being appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub bucket: u64,
    /// The block's points, or with `after_stored` only those appended
    /// since the store (or a write under way) took the ones before.
    pub bytes: Arc<Vec<u8>>,
    /// Changed since it was last written.
    pub dirty: bool,
    pub after_stored: bool,
}

impl Block {
    /// An open block whose points so far are in the store, if any (none
    /// in memory).
    pub fn stored(bucket: u64) -> Self {
        Self { bucket, bytes: Arc::default(), dirty: false, after_stored: true }
    }

    /// What a flush writes of this dirty block, and whether it is to be
    /// appended to the stored block (else it replaces it). A block of a
    /// tier not `held` gives up its bytes: what it gains next is appended.
    pub fn take_for_write(&mut self, held: bool) -> (Arc<Vec<u8>>, bool) {
        self.dirty = false;
        let append = self.after_stored;
        if held {
            return (self.bytes.clone(), append);
        }
        self.after_stored = true;
        (std::mem::take(&mut self.bytes), append)
    }
}

/// A block whose bucket has passed: written once more, then only read from
/// the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub tier: u8,
    pub bucket: u64,
    pub bytes: Arc<Vec<u8>>,
    /// Appended to the stored block (see [`Block::after_stored`]).
    pub append: bool,
}

/// Sums for one step of a downsampled tier (saturating: a step holds at
/// most a quarter of an hour of points, far from `u64::MAX` for any real
/// reading).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accum {
    step_start: u64,
    n: [[u32; 2]; RESOURCES.len()],
    sum: [[u64; 2]; RESOURCES.len()],
}

impl Accum {
    fn new(step_start: u64) -> Self {
        Self { step_start, n: Default::default(), sum: Default::default() }
    }

    fn add(&mut self, r: &Readings) {
        for (i, reading) in r.iter().enumerate() {
            for (j, v) in [reading.usage, reading.current].into_iter().enumerate() {
                if let Some(v) = v {
                    self.n[i][j] += 1;
                    self.sum[i][j] = self.sum[i][j].saturating_add(v);
                }
            }
        }
    }

    fn mean(&self) -> Point {
        let mut readings = Readings::default();
        for (i, r) in readings.iter_mut().enumerate() {
            let m = |j: usize| self.sum[i][j].checked_div(u64::from(self.n[i][j]));
            *r = Reading { usage: m(0), current: m(1) };
        }
        Point { time_ms: self.step_start, readings }
    }
}

/// One entity's tiers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Series {
    pub open: [Option<Block>; TIERS],
    acc: [Option<Accum>; TIERS - 1],
    /// Time of the newest point recorded.
    pub last_ms: u64,
}

fn floor(t: u64, span: u64) -> u64 {
    t - t % span.max(1)
}

impl Series {
    /// A series continuing `existing` blocks (what the store holds for the
    /// current buckets, so a restart appends rather than overwrites).
    pub fn resume(existing: [Option<Block>; TIERS]) -> Self {
        Self { open: existing, ..Self::default() }
    }

    /// Records a point; blocks it closes are pushed to `closed`.
    pub fn record(&mut self, tiers: &[TierSpec; TIERS], p: &Point, closed: &mut Vec<Closed>) {
        self.last_ms = self.last_ms.max(p.time_ms);
        self.push(0, tiers, p, closed);
        for t in 1..TIERS {
            let step = tiers[t].step_ms;
            let start = floor(p.time_ms, step);
            let emit = match &self.acc[t - 1] {
                Some(a) if start > a.step_start => Some(a.mean()),
                _ => None,
            };
            if let Some(m) = emit {
                self.push(t, tiers, &m, closed);
            }
            let acc = self.acc[t - 1].get_or_insert_with(|| Accum::new(start));
            if start > acc.step_start {
                *acc = Accum::new(start);
            }
            acc.add(&p.readings);
        }
    }

    fn push(&mut self, tier: usize, tiers: &[TierSpec; TIERS], p: &Point, closed: &mut Vec<Closed>) {
        let bucket = floor(p.time_ms, tiers[tier].bucket_ms);
        let slot = &mut self.open[tier];
        if let Some(b) = slot.as_ref()
            && b.bucket != bucket
            && let Some(old) = slot.take()
        {
            // Written again only if it changed since the last flush.
            if old.dirty {
                closed.push(Closed {
                    tier: tier as u8,
                    bucket: old.bucket,
                    bytes: old.bytes,
                    append: old.after_stored,
                });
            }
        }
        let b = slot.get_or_insert_with(|| Block {
            bucket,
            bytes: Arc::new(Vec::with_capacity(if tiers[tier].held { 256 } else { 0 })),
            dirty: true,
            after_stored: false,
        });
        codec::append(Arc::make_mut(&mut b.bytes), b.bucket, p);
        b.dirty = true;
    }

    /// Ends the downsampled steps still being summed (the entity is gone):
    /// their means go into the open blocks, to be written by the next
    /// flush. Call only once no later point can fall in those steps.
    pub fn finish(&mut self, tiers: &[TierSpec; TIERS], closed: &mut Vec<Closed>) {
        for t in 1..TIERS {
            if let Some(a) = self.acc[t - 1].take() {
                self.push(t, tiers, &a.mean(), closed);
            }
        }
    }

    /// Whether a step is still being summed.
    pub fn summing(&self) -> bool {
        self.acc.iter().any(Option::is_some)
    }

    /// Whether everything recorded has been handed out for writing.
    pub fn is_clean(&self) -> bool {
        self.open.iter().flatten().all(|b| !b.dirty)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn point(t: u64, cpu: u64) -> Point {
        let mut r = Readings::default();
        r[0] = Reading { usage: Some(cpu), current: Some(1000) };
        Point { time_ms: t, readings: r }
    }

    #[test]
    fn full_resolution_blocks_close_every_ten_seconds() {
        let tiers = tiers(&HistoryConfig::default());
        let mut s = Series::default();
        let mut closed = Vec::new();
        for i in 0..95 {
            s.record(&tiers, &point(i * 1000, i), &mut closed);
        }
        // Nine blocks of ten points closed; the tenth open with five.
        let full: Vec<_> = closed.iter().filter(|c| c.tier == 0).collect();
        assert_eq!(full.len(), 9);
        for (k, c) in full.iter().enumerate() {
            assert_eq!(c.bucket, k as u64 * 10_000);
            assert_eq!(codec::decode(c.bucket, &c.bytes).len(), 10);
        }
        let open = s.open[0].as_ref().unwrap();
        assert_eq!((open.bucket, codec::decode(open.bucket, &open.bytes).len()), (90_000, 5));
    }

    #[test]
    fn downsampled_tiers_hold_means() {
        let tiers = tiers(&HistoryConfig::default());
        let mut s = Series::default();
        let mut closed = Vec::new();
        // Two minutes: CPU 0..59 then 60..119, and one point of the third.
        for i in 0..121 {
            s.record(&tiers, &point(i * 1000, i), &mut closed);
        }
        let minute = s.open[1].as_ref().unwrap();
        let pts = codec::decode(minute.bucket, &minute.bytes);
        assert_eq!(pts.len(), 2);
        assert_eq!((pts[0].time_ms, pts[0].readings[0].usage), (0, Some(29)));
        assert_eq!((pts[1].time_ms, pts[1].readings[0].usage), (60_000, Some(89)));
        assert_eq!(pts[1].readings[0].current, Some(1000));
        assert_eq!(pts[1].readings[1], Reading::default());
        // The quarter tier has emitted nothing yet.
        assert!(s.open[2].is_none());
        assert!(!s.is_clean());
    }

    #[test]
    fn finishing_writes_the_partial_means() {
        let tiers = tiers(&HistoryConfig::default());
        let mut s = Series::default();
        let mut closed = Vec::new();
        // 90 s of points: minute 0 emitted, minute 1 and quarter 0 summing.
        for i in 0..90 {
            s.record(&tiers, &point(i * 1000, i), &mut closed);
        }
        assert!(s.summing());
        s.finish(&tiers, &mut closed);
        assert!(!s.summing());
        let minute = s.open[1].as_ref().unwrap();
        let pts = codec::decode(minute.bucket, &minute.bytes);
        assert_eq!(
            pts.iter().map(|p| (p.time_ms, p.readings[0].usage)).collect::<Vec<_>>(),
            [(0, Some(29)), (60_000, Some(74))]
        );
        let quarter = s.open[2].as_ref().unwrap();
        let pts = codec::decode(quarter.bucket, &quarter.bytes);
        assert_eq!(pts.iter().map(|p| (p.time_ms, p.readings[0].usage)).collect::<Vec<_>>(), [(0, Some(44))]);
        assert!(!s.is_clean());
        // Nothing more to finish.
        let before = s.clone();
        s.finish(&tiers, &mut closed);
        assert_eq!(s, before);
    }

    #[test]
    fn resumes_existing_blocks() {
        let tiers = tiers(&HistoryConfig::default());
        let mut bytes = Vec::new();
        codec::append(&mut bytes, 0, &point(1_000, 5));
        let mut s = Series::resume([
            Some(Block { bucket: 0, bytes: Arc::new(bytes), dirty: false, after_stored: false }),
            None,
            None,
        ]);
        assert!(s.is_clean());
        s.record(&tiers, &point(2_000, 6), &mut Vec::new());
        let b = s.open[0].as_ref().unwrap();
        assert_eq!(codec::decode(0, &b.bytes).len(), 2);
    }
}
