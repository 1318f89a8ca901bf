//! Sums over containers (application and host totals), pure.

use serde::Serialize;

use super::model::{AGENT_RESOURCES, RESOURCES, Reading, Readings};

/// One resource summed over containers. Each field sums the containers that
/// have a value (an unlimited container adds nothing to `current`, an
/// unsubscribed one nothing to `min`/`max`); `None` when none has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    pub usage: Option<u64>,
    pub current: Option<u64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

fn add(a: &mut Option<u64>, v: Option<u64>) {
    if let Some(v) = v {
        *a = Some(a.unwrap_or(0).saturating_add(v));
    }
}

/// A container's contribution: its readings (with `energy.usage` = its
/// power) and its subscription bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Part {
    pub readings: Readings,
    pub bounds: [Option<(u64, u64)>; AGENT_RESOURCES],
}

/// Per-resource totals over `parts`.
pub fn totals<'a>(parts: impl IntoIterator<Item = &'a Part>) -> [Total; RESOURCES.len()] {
    let mut out = [Total::default(); RESOURCES.len()];
    for p in parts {
        for (i, t) in out.iter_mut().enumerate() {
            add(&mut t.usage, p.readings[i].usage);
            add(&mut t.current, p.readings[i].current);
            if let Some(Some((min, max))) = p.bounds.get(i) {
                add(&mut t.min, Some(*min));
                add(&mut t.max, Some(*max));
            }
        }
    }
    out
}

/// The readings of a set of totals (for history).
pub fn readings(t: &[Total; RESOURCES.len()]) -> Readings {
    let mut r = Readings::default();
    for (out, t) in r.iter_mut().zip(t) {
        *out = Reading { usage: t.usage, current: t.current };
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_what_is_present() {
        let mut a = Part::default();
        a.readings[0] = Reading { usage: Some(500), current: Some(750) };
        a.readings[1] = Reading { usage: Some(100), current: None };
        a.bounds[0] = Some((100, 2000));
        let mut b = Part::default();
        b.readings[0] = Reading { usage: Some(250), current: Some(1000) };
        b.readings[1] = Reading { usage: Some(50), current: Some(1 << 30) };
        let t = totals([&a, &b]);
        assert_eq!(t[0], Total { usage: Some(750), current: Some(1750), min: Some(100), max: Some(2000) });
        assert_eq!(t[1], Total { usage: Some(150), current: Some(1 << 30), min: None, max: None });
        assert_eq!(t[2], Total::default());
        assert_eq!(readings(&t)[0], Reading { usage: Some(750), current: Some(1750) });
        assert_eq!(totals([]), [Total::default(); RESOURCES.len()]);
    }
}
