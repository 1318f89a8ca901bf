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
    closed.drain(..).map(|c| Row {
        tier: c.tier,
        bucket: c.bucket,
        entity: entity.to_owned(),
        bytes: c.bytes,
        append: c.append,
    })
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
            let bucket = |t: usize| floor(time_ms, self.tiers[t].bucket_ms);
            // A tier not held in memory appends to what the store has.
            let mut open: [Option<Block>; TIERS] =
                std::array::from_fn(|t| (!self.tiers[t].held).then(|| Block::stored(bucket(t))));
            let wanted: Vec<(u8, u64)> =
                (0..TIERS).filter(|&t| self.tiers[t].held).map(|t| (t as u8, bucket(t))).collect();
            for (tier, bucket, bytes) in self.store.read_blocks(&key, &wanted)? {
                open[usize::from(tier)] =
                    Some(Block { bucket, bytes: Arc::new(bytes), dirty: false, after_stored: false });
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
                        let (bytes, append) = b.take_for_write(self.tiers[tier].held);
                        rows.push(Row { tier: tier as u8, bucket: b.bucket, entity: key.clone(), bytes, append });
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
        // Blocks the store is asked for, and what memory has after each.
        let mut missing: Vec<(u8, u64)> = Vec::new();
        let mut after: Vec<Vec<u8>> = Vec::new();
        {
            let g = self.lock();
            let series = g.series.get(entity);
            // Each block's parts in memory, newest first: the open block,
            // rows not yet written (oldest first in `pending`), then the
            // batches being written (oldest first in `inflight`).
            let rows: Vec<&Row> = g
                .pending
                .iter()
                .rev()
                .chain(g.inflight.iter().rev().flat_map(|b| b.iter().rev()))
                .filter(|r| r.entity == entity)
                .collect();
            for (t, &(lo, hi)) in windows.iter().enumerate() {
                let (span, legacy) = (self.tiers[t].bucket_ms, self.tiers[t].legacy_bucket_ms);
                // The larger block of an older store the window starts in.
                let first = floor(lo, span);
                let older = Some(floor(lo, legacy)).filter(|&b| b < first && lo < hi);
                for b in older.into_iter().chain((first..hi).step_by(span as usize)) {
                    let open = series.and_then(|s| s.open[t].as_ref()).filter(|o| o.bucket == b);
                    let parts = open.map(|o| (o.bytes.as_slice(), o.after_stored)).into_iter().chain(
                        rows.iter()
                            .filter(|r| usize::from(r.tier) == t && r.bucket == b)
                            .map(|r| (r.bytes.as_slice(), r.append)),
                    );
                    // Up to the newest part that is a whole block.
                    let (mut newest_first, mut whole) = (Vec::new(), false);
                    for (bytes, append) in parts {
                        newest_first.push(bytes);
                        if !append {
                            whole = true;
                            break;
                        }
                    }
                    let bytes: Vec<u8> = newest_first.into_iter().rev().flatten().copied().collect();
                    if whole {
                        blocks.push((t, b, bytes));
                    } else {
                        missing.push((t as u8, b));
                        after.push(bytes);
                    }
                }
            }
        }
        // In the order asked, those missing skipped.
        let mut stored = self.store.read_blocks(entity, &missing)?.into_iter().peekable();
        for (&(t, b), tail) in missing.iter().zip(after) {
            let mut bytes =
                stored.next_if(|(st, sb, _)| (*st, *sb) == (t, b)).map(|(_, _, head)| head).unwrap_or_default();
            bytes.extend_from_slice(&tail);
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
    fn coarse_tiers_appended_in_the_store_answer_as_blocks_held_whole_would() {
        let cfg = HistoryConfig { full_retention_s: 120, minute_retention_s: 1200, ..HistoryConfig::default() };
        let (dir, whole_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let open = |d: &tempfile::TempDir| Arc::new(Store::open(d.path()).unwrap());
        let mut h = History::new(&cfg, 5000, open(&dir));
        // The reference keeps every tier's open block whole in memory.
        let mut whole = History::new(&cfg, 5000, open(&whole_dir));
        whole.tiers.iter_mut().for_each(|t| t.held = true);
        let t0 = 1_800_000_000_000u64; // a multiple of four hours
        let mut compared = 0;
        // Fifty minutes at a point every 5 s, a flush every 10 s, a
        // restart at 23 minutes (after a flush: the minute step being
        // summed is lost, as in any restart).
        for i in 0..600u64 {
            let now = t0 + i * 5000;
            for x in [&h, &whole] {
                x.record(now, vec![("c:h/web".into(), readings(i % 37))]).unwrap();
            }
            if i % 2 == 1 {
                for x in [&h, &whole] {
                    x.flush(now).unwrap();
                }
                // After a flush the coarser tiers hold no points in memory.
                let g = h.lock();
                let s = &g.series["c:h/web"];
                assert!(s.open[1..].iter().flatten().all(|b| b.bytes.is_empty() && b.after_stored), "{i}");
            }
            if i == 275 {
                drop((h, whole));
                h = History::new(&cfg, 5000, open(&dir));
                whole = History::new(&cfg, 5000, open(&whole_dir));
                whole.tiers.iter_mut().for_each(|t| t.held = true);
            }
            // Queried between flushes too (rows not yet written).
            if i % 7 == 0 || i % 2 == 0 && i > 590 {
                let (a, b) = (h.query("c:h/web", t0, now, now).unwrap(), whole.query("c:h/web", t0, now, now).unwrap());
                assert_eq!(a, b, "at {i}");
                compared += usize::from(a.iter().any(|p| p.step_ms == 60_000));
            }
        }
        assert!(compared > 40, "{compared}");
        // The minute tier's stored block for 15-30 minutes holds its means
        // from both sides of the restart (appended, not overwritten).
        let quarter = 900_000;
        let got = h.store.read_blocks("c:h/web", &[(1, t0 + quarter)]).unwrap();
        let mins: Vec<u64> = codec::decode(t0 + quarter, &got[0].2).iter().map(|p| (p.time_ms - t0) / 60_000).collect();
        assert!(mins.contains(&21) && mins.contains(&24) && mins.len() >= 13, "{mins:?}");
        assert!(mins.windows(2).all(|w| w[0] < w[1]), "{mins:?}");
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
        store
            .write_history(&[Row {
                tier: 0,
                bucket: t0,
                entity: "a:web".into(),
                bytes: Arc::new(bytes),
                append: false,
            }])
            .unwrap();
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
