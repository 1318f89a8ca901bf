//! The byte format of a history block: the points of one entity within one
//! time bucket, appended one after the other. A point is the varint of its
//! time after the bucket start, then for each resource `usage` and
//! `current` as the varint of `value + 1` (0 = none). About 20-30 bytes a
//! point: small enough to keep a minute of every container in memory.

use crate::model::{RESOURCES, Reading, Readings};

/// One point in time of one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub time_ms: u64,
    pub readings: Readings,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    put_varint(out, v.map_or(0, |v| v.min(u64::MAX - 1) + 1));
}

fn get_opt(bytes: &[u8], pos: &mut usize) -> Option<Option<u64>> {
    get_varint(bytes, pos).map(|v| v.checked_sub(1))
}

/// Appends `p` to a block starting at `bucket_ms` (`p.time_ms >= bucket_ms`;
/// an earlier time is stored as the bucket start).
pub fn append(out: &mut Vec<u8>, bucket_ms: u64, p: &Point) {
    put_varint(out, p.time_ms.saturating_sub(bucket_ms));
    for r in &p.readings {
        put_opt(out, r.usage);
        put_opt(out, r.current);
    }
}

/// The points of a block. A truncated tail (a torn write cannot happen in
/// redb, but a block from a newer format could be longer) ends the list.
pub fn decode(bucket_ms: u64, bytes: &[u8]) -> Vec<Point> {
    let mut out = Vec::new();
    let mut pos = 0;
    'points: while pos < bytes.len() {
        let Some(dt) = get_varint(bytes, &mut pos) else { break };
        let mut readings = Readings::default();
        for r in readings.iter_mut().take(RESOURCES.len()) {
            let (Some(usage), Some(current)) = (get_opt(bytes, &mut pos), get_opt(bytes, &mut pos)) else {
                break 'points;
            };
            *r = Reading { usage, current };
        }
        out.push(Point { time_ms: bucket_ms.saturating_add(dt), readings });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_none_and_extremes() {
        let mut a = Readings::default();
        a[0] = Reading { usage: Some(0), current: None };
        a[1] = Reading { usage: Some(u64::MAX - 1), current: Some(1 << 40) };
        let mut b = Readings::default();
        b[6] = Reading { usage: Some(12_345), current: Some(15_000) };
        let pts = [Point { time_ms: 1_000, readings: a }, Point { time_ms: 61_000, readings: b }];
        let mut bytes = Vec::new();
        for p in &pts {
            append(&mut bytes, 1_000, p);
        }
        assert_eq!(decode(1_000, &bytes), pts);
        // A truncated block keeps the whole points only.
        assert_eq!(decode(1_000, &bytes[..bytes.len() - 1]), pts[..1]);
        assert!(decode(0, &[]).is_empty());
    }

    #[test]
    fn a_typical_point_is_small() {
        let mut r = Readings::default();
        r[0] = Reading { usage: Some(512), current: Some(750) };
        r[1] = Reading { usage: Some(300 << 20), current: Some(1 << 30) };
        let mut bytes = Vec::new();
        append(&mut bytes, 0, &Point { time_ms: 59_000, readings: r });
        assert!(bytes.len() <= 30, "{}", bytes.len());
    }
}
