//! History per host, application and container: every round's point kept
//! at full resolution for `history.full_retention_s`, one-minute means for
//! `minute_retention_s`, fifteen-minute means for `quarter_retention_s`.
//! Points are appended in memory ([`series`]) and written to the store in
//! blocks every `history.flush_ms` and at shutdown; a query merges memory,
//! blocks being written, and the store.

pub mod codec;
pub mod prometheus;
pub mod series;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use self::{
    codec::Point,
    series::{Block, Series, TIERS, TierSpec},
};
use super::{
    config::HistoryConfig,
    model::Readings,
    store::{Row, Store, StoreError},
};

/// Entity keys in the store: `h:HOST`, `a:APP`, `c:HOST/CONTAINER`.
pub fn host_key(host: &str) -> String {
    format!("h:{host}")
}
pub fn app_key(app: &str) -> String {
    format!("a:{app}")
}
pub fn container_key(host: &str, name: &str) -> String {
    format!("c:{host}/{name}")
}

/// A queried point: when, at which resolution, and the readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryPoint {
    pub time_ms: u64,
    pub step_ms: u64,
    pub readings: Readings,
}

#[derive(Default)]
struct Inner {
    /// Boxed: a table of 50,000 entities doubles as it grows, and a
    /// series is ~0.4 KiB (the table holds twice as many slots as entries).
    series: HashMap<String, Box<Series>>,
    pending: Vec<Row>,
    /// Rows being written (a batch per flush under way), still answered
    /// from memory: searched only by queries, so kept as written, not
    /// indexed (an index of 100,000 rows cost more than the rows).
    inflight: Vec<Arc<Vec<Row>>>,
}

pub struct History {
    tiers: [TierSpec; TIERS],
    /// Spacing of full-resolution points (the poll period).
    poll_ms: u64,
    store: Arc<Store>,
    inner: Mutex<Inner>,
}

/// Store rows for closed blocks of `entity` (draining `closed`).
fn rows<'a>(entity: &'a str, closed: &'a mut Vec<series::Closed>) -> impl Iterator<Item = Row> + 'a {
    closed.drain(..).map(|c| Row { tier: c.tier, bucket: c.bucket, entity: entity.to_owned(), bytes: c.bytes })
}

fn floor(t: u64, span: u64) -> u64 {
    t - t % span.max(1)
}

impl History {
    pub fn new(cfg: &HistoryConfig, poll_ms: u64, store: Arc<Store>) -> Self {
        Self { tiers: series::tiers(cfg), poll_ms, store, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one round: every entity's readings at `time_ms`. An entity
    /// seen for the first time since start continues its stored blocks.
    pub fn record(&self, time_ms: u64, points: Vec<(String, Readings)>) -> Result<(), StoreError> {
        let new: Vec<String> = {
            let g = self.lock();
            points.iter().filter(|(k, _)| !g.series.contains_key(k)).map(|(k, _)| k.clone()).collect()
        };
        let mut resumed = Vec::with_capacity(new.len());
        for key in new {
            let wanted: Vec<(u8, u64)> =
                (0..TIERS).map(|t| (t as u8, floor(time_ms, self.tiers[t].bucket_ms))).collect();
            let mut open: [Option<Block>; TIERS] = Default::default();
            for (tier, bucket, bytes) in self.store.read_blocks(&key, &wanted)? {
                open[usize::from(tier)] = Some(Block { bucket, bytes: Arc::new(bytes), dirty: false });
            }
            resumed.push((key, Box::new(Series::resume(open))));
        }
        let mut g = self.lock();
        let inner = &mut *g;
        for (k, s) in resumed {
            inner.series.entry(k).or_insert(s);
        }
        let mut closed = Vec::new();
        for (key, readings) in points {
            let Some(s) = inner.series.get_mut(&key) else { continue };
            s.record(&self.tiers, &Point { time_ms, readings }, &mut closed);
            inner.pending.extend(rows(&key, &mut closed));
        }
        Ok(())
    }

    /// Writes closed blocks and the dirty open ones, prunes what is past
    /// retention, and forgets entities gone for longer than the coarsest
    /// step (their partial means written first: a container that comes back
    /// later starts new steps, so nothing is summed twice). Blocking: call
    /// from a blocking thread. Returns the rows written.
    pub fn flush(&self, now_ms: u64) -> Result<usize, StoreError> {
        let idle_ms = self.tiers[TIERS - 1].step_ms.max(self.poll_ms.saturating_mul(2));
        let rows: Arc<Vec<Row>> = {
            let mut g = self.lock();
            let inner = &mut *g;
            let mut closed = Vec::new();
            for (key, s) in &mut inner.series {
                if s.summing() && s.last_ms.saturating_add(idle_ms) <= now_ms {
                    s.finish(&self.tiers, &mut closed);
                    inner.pending.extend(rows(key, &mut closed));
                }
            }
            let mut rows = std::mem::take(&mut inner.pending);
            rows.reserve(inner.series.len());
            for (key, s) in &mut inner.series {
                for (tier, b) in s.open.iter_mut().enumerate() {
                    if let Some(b) = b.as_mut().filter(|b| b.dirty) {
                        b.dirty = false;
                        let bytes = b.bytes.clone();
                        rows.push(Row { tier: tier as u8, bucket: b.bucket, entity: key.clone(), bytes });
                    }
                }
            }
            let rows = Arc::new(rows);
            inner.inflight.push(rows.clone());
            inner.series.retain(|_, s| s.last_ms.saturating_add(idle_ms) > now_ms || s.summing() || !s.is_clean());
            rows
        };
        let result = self.store.write_history(&rows);
        {
            let mut g = self.lock();
            g.inflight.retain(|b| !Arc::ptr_eq(b, &rows));
            if result.is_err() {
                // Keep them for the next flush, before any row closed
                // since (a later copy of the same block must be written
                // last).
                let newer = std::mem::take(&mut g.pending);
                g.pending = rows.iter().cloned().chain(newer).collect();
            }
        }
        // Let go of the blocks before pruning, or the rounds meanwhile
        // would copy every one they append to.
        let written = rows.len();
        drop(rows);
        result?;
        for (t, spec) in self.tiers.iter().enumerate() {
            let before = floor(now_ms.saturating_sub(spec.retention_ms), spec.legacy_bucket_ms);
            self.store.prune(t as u8, before)?;
        }
        Ok(written)
    }

    /// Entities in memory.
    pub fn entities(&self) -> usize {
        self.lock().series.len()
    }

    /// Points of `entity` within `[since_ms, until_ms]`, oldest first: full
    /// resolution where it is kept, then minute means, then quarter means.
    pub fn query(
        &self,
        entity: &str,
        since_ms: u64,
        until_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<QueryPoint>, StoreError> {
        // Each tier answers for the span the finer ones no longer keep.
        let mut windows = [(0u64, 0u64); TIERS];
        let mut hi = until_ms.saturating_add(1);
        for (t, spec) in self.tiers.iter().enumerate() {
            let lo = if t + 1 == TIERS { since_ms } else { since_ms.max(now_ms.saturating_sub(spec.retention_ms)) };
            windows[t] = (lo, hi.max(lo));
            hi = hi.min(lo);
        }
        let mut blocks: Vec<(usize, u64, Vec<u8>)> = Vec::new();
        let mut missing: Vec<(u8, u64)> = Vec::new();
        {
            let g = self.lock();
            let series = g.series.get(entity);
            let pending: Vec<&Row> = g.pending.iter().filter(|r| r.entity == entity).collect();
            // Newest batch first.
            let inflight: Vec<&Row> =
                g.inflight.iter().rev().flat_map(|b| b.iter()).filter(|r| r.entity == entity).collect();
            for (t, &(lo, hi)) in windows.iter().enumerate() {
                let (span, legacy) = (self.tiers[t].bucket_ms, self.tiers[t].legacy_bucket_ms);
                // The larger block of an older store the window starts in.
                let first = floor(lo, span);
                let older = Some(floor(lo, legacy)).filter(|&b| b < first && lo < hi);
                for b in older.into_iter().chain((first..hi).step_by(span as usize)) {
                    let open = series.and_then(|s| s.open[t].as_ref()).filter(|o| o.bucket == b);
                    if let Some(o) = open {
                        blocks.push((t, b, o.bytes.as_ref().clone()));
                    } else if let Some(r) = inflight.iter().find(|r| usize::from(r.tier) == t && r.bucket == b) {
                        blocks.push((t, b, r.bytes.as_ref().clone()));
                    } else if let Some(r) = pending.iter().find(|r| usize::from(r.tier) == t && r.bucket == b) {
                        blocks.push((t, b, r.bytes.as_ref().clone()));
                    } else {
                        missing.push((t as u8, b));
                    }
                }
            }
        }
        for (t, b, bytes) in self.store.read_blocks(entity, &missing)? {
            blocks.push((usize::from(t), b, bytes));
        }
        let mut out = Vec::new();
        for (t, bucket, bytes) in blocks {
            let (lo, hi) = windows[t];
            let step_ms = if t == 0 { self.poll_ms } else { self.tiers[t].step_ms };
            out.extend(
                codec::decode(bucket, &bytes)
                    .into_iter()
                    .filter(|p| p.time_ms >= lo && p.time_ms < hi)
                    .map(|p| QueryPoint { time_ms: p.time_ms, step_ms, readings: p.readings }),
            );
        }
        out.sort_by_key(|p| p.time_ms);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::Reading;

    fn readings(cpu: u64) -> Readings {
        let mut r = Readings::default();
        r[0] = Reading { usage: Some(cpu), current: Some(2000) };
        r
    }

    #[test]
    fn queries_merge_memory_and_store_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = HistoryConfig { full_retention_s: 300, minute_retention_s: 900, ..HistoryConfig::default() };
        let t0 = 1_800_000_000_000u64;
        {
            let h = History::new(&cfg, 1000, Arc::new(Store::open(dir.path()).unwrap()));
            for i in 0..150 {
                h.record(t0 + i * 1000, vec![("a:web".into(), readings(i))]).unwrap();
                if i == 100 {
                    h.flush(t0 + i * 1000).unwrap();
                }
            }
            let now = t0 + 149_000;
            let pts = h.query("a:web", t0, now, now).unwrap();
            assert_eq!(pts.len(), 150, "all still within full retention");
            assert_eq!(pts[149].readings[0].usage, Some(149));
            h.flush(now).unwrap();
        }
        // Reopened later: the store alone answers, and new points append.
        let h = History::new(&cfg, 1000, Arc::new(Store::open(dir.path()).unwrap()));
        let now = t0 + 150_000;
        h.record(now, vec![("a:web".into(), readings(150))]).unwrap();
        let pts = h.query("a:web", t0, now, now).unwrap();
        assert_eq!(pts.len(), 151);
        assert!(pts.windows(2).all(|w| w[0].time_ms < w[1].time_ms));
        // Ten minutes on, the first minutes come from the minute tier.
        let later = t0 + 600_000;
        h.record(later, vec![("a:web".into(), readings(7))]).unwrap();
        let pts = h.query("a:web", t0, later, later).unwrap();
        let coarse: Vec<_> = pts.iter().filter(|p| p.step_ms == 60_000).collect();
        assert!(!coarse.is_empty());
        assert!(pts.iter().any(|p| p.step_ms == 1000 && p.time_ms == later));
        assert!(h.query("a:nope", t0, later, later).unwrap().is_empty());
    }

    #[test]
    fn blocks_of_an_older_store_a_minute_long_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let t0 = 1_800_000_000_000u64; // a multiple of a day
        // What a store written with minute-long full-resolution blocks
        // holds: minute 0 whole in one block.
        let mut bytes = Vec::new();
        for i in 0..60 {
            codec::append(&mut bytes, t0, &Point { time_ms: t0 + i * 1000, readings: readings(i) });
        }
        store.write_history(&[Row { tier: 0, bucket: t0, entity: "a:web".into(), bytes: Arc::new(bytes) }]).unwrap();
        let h = History::new(&HistoryConfig::default(), 1000, store);
        for i in 60..80 {
            h.record(t0 + i * 1000, vec![("a:web".into(), readings(i))]).unwrap();
        }
        let now = t0 + 79_000;
        // A window starting in the middle of the old block.
        let pts = h.query("a:web", t0 + 35_000, now, now).unwrap();
        let cpu: Vec<u64> = pts.iter().filter_map(|p| p.readings[0].usage).collect();
        assert_eq!(cpu, (35..80).collect::<Vec<_>>());
        // Pruning waits for the old block's whole minute to pass (not only
        // its first ten seconds).
        let old_block = || h.store.read_blocks("a:web", &[(0, t0)]).unwrap().len();
        h.flush(t0 + 3_600_000 + 50_000).unwrap();
        assert_eq!(old_block(), 1);
        h.flush(t0 + 3_600_000 + 60_000).unwrap();
        assert_eq!(old_block(), 0);
    }

    #[test]
    fn a_vanished_entity_is_forgotten_after_its_partial_means_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = HistoryConfig::default();
        let h = History::new(&cfg, 1000, Arc::new(Store::open(dir.path()).unwrap()));
        let t0 = 1_800_000_000_000u64; // a multiple of 15 minutes
        // 90 s of a container, then it is gone; another one stays.
        for i in 0..90 {
            h.record(t0 + i * 1000, vec![("c:h/gone".into(), readings(10)), ("c:h/stays".into(), readings(20))])
                .unwrap();
        }
        h.flush(t0 + 90_000).unwrap();
        assert_eq!(h.entities(), 2);
        // Still remembered within the quarter step (it could come back).
        let mut t = t0 + 90_000;
        while t < t0 + 89_000 + 900_000 {
            h.record(t, vec![("c:h/stays".into(), readings(20))]).unwrap();
            t += 30_000;
        }
        h.flush(t - 30_000).unwrap();
        assert_eq!(h.entities(), 2);
        let t = t0 + 89_000 + 900_000;
        h.record(t, vec![("c:h/stays".into(), readings(20))]).unwrap();
        h.flush(t).unwrap();
        assert_eq!(h.entities(), 1, "gone a quarter step: forgotten");
        // Its minute and quarter means of the unfinished steps were written
        // (asked for when the finer tiers no longer keep that time).
        let steps = |now: u64, step: u64| {
            let pts = h.query("c:h/gone", t0, now, now).unwrap();
            assert!(pts.iter().all(|p| p.readings[0].usage == Some(10)));
            pts.iter().filter(|p| p.step_ms == step).map(|p| p.time_ms - t0).collect::<Vec<_>>()
        };
        assert_eq!(steps(t0 + 2 * 3_600_000, 60_000), [0, 60_000]);
        let all = h.query("c:h/gone", t0, t0 + 3 * 86_400_000, t0 + 3 * 86_400_000).unwrap();
        assert_eq!(all.iter().filter(|p| p.step_ms == 900_000).map(|p| p.time_ms - t0).collect::<Vec<_>>(), [0]);
    }
}
