//! Demand traces: CSV `time_s,container,resource,demand`.
//!
//! - The first non-comment line is the header `time_s,container,resource,demand`.
//! - Blank lines and lines starting with `#` are skipped.
//! - `time_s`: seconds, a non-negative decimal with at most 3 fractional
//!   digits (millisecond precision).
//! - `container`: a non-empty name without commas.
//! - `resource`: `cpu`, `mem`, `disk_read`, `disk_write`, `net_rx`, `net_tx`.
//! - `demand`: a non-negative integer in the resource's base unit
//!   (millicores, bytes, bytes/s).
//!
//! Demand is piecewise constant: a row holds until the next row of the same
//! container and resource; before its first row a series demands 0. Times
//! of one series must not decrease; a repeated time replaces the earlier
//! row. The trace lasts until its latest time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::resource::{MAX_AMOUNT, Resource, ResourceError};

/// The header line every trace starts with.
pub const HEADER: &str = "time_s,container,resource,demand";

/// Error from parsing a trace; each names the line (1-based) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The header is missing or different.
    #[error("line {line}: expected header `{HEADER}`, found {found:?}")]
    Header {
        /// Line number.
        line: usize,
        /// What was there.
        found: String,
    },
    /// Not four comma-separated fields.
    #[error("line {line}: expected 4 comma-separated fields (time_s,container,resource,demand), found {found}")]
    FieldCount {
        /// Line number.
        line: usize,
        /// Fields found.
        found: usize,
    },
    /// `time_s` is not a valid time.
    #[error("line {line}: time_s {value:?} is invalid: {reason}")]
    Time {
        /// Line number.
        line: usize,
        /// The field.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The container name is empty.
    #[error("line {line}: container name is empty")]
    Container {
        /// Line number.
        line: usize,
    },
    /// The resource is unknown.
    #[error("line {line}")]
    Resource {
        /// Line number.
        line: usize,
        /// Why.
        #[source]
        source: ResourceError,
    },
    /// `energy` is not a demand.
    #[error("line {line}: resource energy cannot be a demand (power follows from cpu)")]
    EnergyDemand {
        /// Line number.
        line: usize,
    },
    /// `demand` is not a non-negative integer.
    #[error("line {line}: demand {value:?} is not a non-negative integer of at most 2^52 base units")]
    Demand {
        /// Line number.
        line: usize,
        /// The field.
        value: String,
    },
    /// Time went backwards within one series.
    #[error("line {line}: time {time_ms} ms of {container}/{resource} is before the previous row's {previous_ms} ms")]
    TimeOrder {
        /// Line number.
        line: usize,
        /// Container.
        container: String,
        /// Resource.
        resource: Resource,
        /// This row's time.
        time_ms: u64,
        /// The previous row's time.
        previous_ms: u64,
    },
    /// No data rows.
    #[error("trace has no data rows")]
    Empty,
}

/// A parsed trace: for each container and resource, `(time_ms, demand)`
/// points in time order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    series: BTreeMap<String, BTreeMap<Resource, Vec<(u64, u64)>>>,
    end_ms: u64,
}

fn parse_time(s: &str) -> Result<u64, &'static str> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected seconds as digits, optionally with up to 3 decimals");
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
        return Err("expected digits after the decimal point");
    }
    if frac.len() > 3 {
        return Err("more than millisecond precision (at most 3 decimals)");
    }
    let secs: u64 = int.parse().map_err(|_| "too large")?;
    let mut ms: u64 = 0;
    for (i, b) in frac.bytes().chain(std::iter::repeat(b'0')).take(3).enumerate() {
        ms += u64::from(b - b'0') * [100, 10, 1][i];
    }
    secs.checked_mul(1000).and_then(|v| v.checked_add(ms)).filter(|v| *v <= MAX_AMOUNT).ok_or("too large")
}

impl Trace {
    /// Parse CSV text.
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut trace = Trace::default();
        let mut header_seen = false;
        let mut rows = 0usize;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if !header_seen {
                let normalised: String = l.split(',').map(str::trim).collect::<Vec<_>>().join(",");
                if normalised != HEADER {
                    return Err(TraceError::Header { line, found: l.to_owned() });
                }
                header_seen = true;
                continue;
            }
            let fields: Vec<&str> = l.split(',').map(str::trim).collect();
            let [time, container, resource, demand] = fields[..] else {
                return Err(TraceError::FieldCount { line, found: fields.len() });
            };
            let time_ms =
                parse_time(time).map_err(|reason| TraceError::Time { line, value: time.to_owned(), reason })?;
            if container.is_empty() {
                return Err(TraceError::Container { line });
            }
            let resource: Resource = resource.parse().map_err(|source| TraceError::Resource { line, source })?;
            if resource == Resource::Energy {
                return Err(TraceError::EnergyDemand { line });
            }
            let demand: u64 = demand
                .parse()
                .ok()
                .filter(|d| *d <= MAX_AMOUNT)
                .ok_or_else(|| TraceError::Demand { line, value: demand.to_owned() })?;
            trace.push(line, container, resource, time_ms, demand)?;
            rows += 1;
        }
        if rows == 0 {
            return Err(TraceError::Empty);
        }
        Ok(trace)
    }

    fn push(
        &mut self,
        line: usize,
        container: &str,
        resource: Resource,
        time_ms: u64,
        demand: u64,
    ) -> Result<(), TraceError> {
        let points = self.series.entry(container.to_owned()).or_default().entry(resource).or_default();
        match points.last_mut() {
            Some(&mut (prev, _)) if prev > time_ms => {
                return Err(TraceError::TimeOrder {
                    line,
                    container: container.to_owned(),
                    resource,
                    time_ms,
                    previous_ms: prev,
                });
            }
            Some(last) if last.0 == time_ms => last.1 = demand,
            _ => points.push((time_ms, demand)),
        }
        self.end_ms = self.end_ms.max(time_ms);
        Ok(())
    }

    /// Build a trace from points (for generators and tests).
    pub fn from_points(points: impl IntoIterator<Item = (String, Resource, u64, u64)>) -> Result<Trace, TraceError> {
        let mut t = Trace::default();
        for (i, (c, r, time_ms, demand)) in points.into_iter().enumerate() {
            t.push(i + 1, &c, r, time_ms, demand)?;
        }
        Ok(t)
    }

    /// The latest time in the trace, ms: the simulation runs `[0, end)`.
    pub fn end_ms(&self) -> u64 {
        self.end_ms
    }

    /// Container names, sorted.
    pub fn containers(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// The resources with demand for `container`.
    pub fn resources(&self, container: &str) -> Vec<Resource> {
        self.series.get(container).map(|m| m.keys().copied().collect()).unwrap_or_default()
    }

    /// The points of one series.
    pub fn series(&self, container: &str, resource: Resource) -> Option<&[(u64, u64)]> {
        self.series.get(container).and_then(|m| m.get(&resource)).map(Vec::as_slice)
    }

    /// Demand of one series at `t_ms` (0 before its first point).
    pub fn demand_at(&self, container: &str, resource: Resource, t_ms: u64) -> u64 {
        let Some(points) = self.series(container, resource) else {
            return 0;
        };
        match points.partition_point(|&(t, _)| t <= t_ms) {
            0 => 0,
            i => points[i - 1].1,
        }
    }

    /// The trace as CSV text (rows sorted by time, then container, resource).
    pub fn to_csv(&self) -> String {
        let mut rows: Vec<(u64, &str, Resource, u64)> = Vec::new();
        for (c, m) in &self.series {
            for (r, points) in m {
                rows.extend(points.iter().map(|&(t, d)| (t, c.as_str(), *r, d)));
            }
        }
        rows.sort_unstable();
        let mut out = String::with_capacity(rows.len() * 28 + 40);
        out.push_str(HEADER);
        out.push('\n');
        for (t, c, r, d) in rows {
            let _ = if t % 1000 == 0 {
                writeln!(out, "{},{c},{r},{d}", t / 1000)
            } else {
                writeln!(out, "{}.{:03},{c},{r},{d}", t / 1000, t % 1000)
            };
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OK: &str = "# a comment\ntime_s,container,resource,demand\n0,a,cpu,100\n1.5,a,cpu,300\n\n2,b,mem,1024\n";

    #[test]
    fn parses_and_holds_values() {
        let t = Trace::parse(OK).unwrap();
        assert_eq!(t.end_ms(), 2000);
        assert_eq!(t.containers().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(t.demand_at("a", Resource::Cpu, 0), 100);
        assert_eq!(t.demand_at("a", Resource::Cpu, 1499), 100);
        assert_eq!(t.demand_at("a", Resource::Cpu, 1500), 300);
        assert_eq!(t.demand_at("b", Resource::Mem, 1000), 0);
        assert_eq!(t.demand_at("b", Resource::Cpu, 1000), 0);
        let again = Trace::parse(&t.to_csv()).unwrap();
        assert_eq!(again, t);
    }

    fn err(body: &str) -> TraceError {
        Trace::parse(&format!("{HEADER}\n{body}")).unwrap_err()
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_fault() {
        let cases: [(&str, &str); 9] = [
            ("0,a,cpu", "line 2: expected 4 comma-separated fields"),
            ("x,a,cpu,1", "line 2: time_s \"x\" is invalid"),
            ("-1,a,cpu,1", "line 2: time_s \"-1\""),
            ("1.2345,a,cpu,1", "more than millisecond precision"),
            ("1,,cpu,1", "line 2: container name is empty"),
            ("1,a,gpu,1", "line 2: unknown resource \"gpu\""),
            ("1,a,energy,1", "line 2: resource energy cannot be a demand"),
            ("1,a,cpu,1.5", "line 2: demand \"1.5\" is not a non-negative integer"),
            ("1,a,cpu,-3", "line 2: demand \"-3\""),
        ];
        for (body, want) in cases {
            // The message with its sources, as `anyhow`'s `{:#}` prints it.
            let e = err(body);
            let e = match std::error::Error::source(&e) {
                Some(src) => format!("{e}: {src}"),
                None => e.to_string(),
            };
            assert!(e.contains(want), "{body:?}: {e}");
        }
        let e = err("5,a,cpu,1\n4,a,cpu,2").to_string();
        assert!(e.starts_with("line 3: time 4000 ms of a/cpu"), "{e}");
    }

    #[test]
    fn header_and_emptiness() {
        let e = Trace::parse("\n\ntime,c,r,d\n").unwrap_err();
        assert!(matches!(e, TraceError::Header { line: 3, .. }));
        assert_eq!(Trace::parse(HEADER).unwrap_err(), TraceError::Empty);
        assert_eq!(Trace::parse("").unwrap_err(), TraceError::Empty);
    }
}
