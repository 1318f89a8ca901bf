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
//!
//! A *recorded* trace (`scaler record`, header [`RECORDED_HEADER`]) has
//! seven more columns, what the agent measured and had in force at each
//! tick: `interval_ms`, `usage`, `limit` (empty: unlimited),
//! `throttled_us`, `stall_us`, `oom_kills` (since the cgroup was created;
//! empty: unknown), `waiting` (0 or 1), `reclaims`, `refault_bytes` and
//! `refault_stall_us` (recordings made before the last three columns
//! existed read as zeros there). The simulator uses its demand
//! like any trace; [`crate::planner::replay`] feeds the rest to the planner
//! to check that it makes the agent's decisions.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::resource::{MAX_AMOUNT, Resource, ResourceError};

/// The header line every trace starts with.
pub const HEADER: &str = "time_s,container,resource,demand";

/// The header of a recorded trace.
pub const RECORDED_HEADER: &str = "time_s,container,resource,demand,interval_ms,usage,limit,throttled_us,stall_us,\
oom_kills,waiting,reclaims,refault_bytes,refault_stall_us";

/// The headers of recorded traces written before the `reclaims` column,
/// then before the refault columns (read as zeros).
pub const RECORDED_HEADERS_OLD: [&str; 2] = [
    "time_s,container,resource,demand,interval_ms,usage,limit,throttled_us,stall_us,oom_kills,waiting",
    "time_s,container,resource,demand,interval_ms,usage,limit,throttled_us,stall_us,oom_kills,waiting,reclaims",
];

/// What the agent measured and had in force for one resource at one tick
/// (a row of a recorded trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// When the counters were read, ms.
    pub time_ms: u64,
    /// Length of the interval, ms.
    pub interval_ms: u64,
    /// Usage (`None`: not measurable for this container).
    pub usage: Option<u64>,
    /// The limit in force (`None`: unlimited).
    pub limit: Option<u64>,
    /// CPU time throttled during the interval, µs.
    pub throttled_us: u64,
    /// Memory PSI stall during the interval, µs.
    pub stall_us: u64,
    /// OOM kills since the cgroup was created.
    pub oom_kills: Option<u64>,
    /// Tasks waited at the memory limit.
    pub waiting: bool,
    /// Memory-cgroup reclaim entries during the interval.
    pub reclaims: u64,
    /// Evicted file cache read back during the interval, bytes.
    pub refault_bytes: u64,
    /// The I/O stall those re-reads caused, µs.
    pub refault_stall_us: u64,
}

impl Recorded {
    /// The CSV row of this record (under [`RECORDED_HEADER`]).
    pub fn row(&self, container: &str, resource: Resource, demand: u64) -> String {
        let opt = |v: Option<u64>| v.map_or_else(String::new, |x| x.to_string());
        format!(
            "{}.{:03},{container},{resource},{demand},{},{},{},{},{},{},{},{},{},{}",
            self.time_ms / 1000,
            self.time_ms % 1000,
            self.interval_ms,
            opt(self.usage),
            opt(self.limit),
            self.throttled_us,
            self.stall_us,
            opt(self.oom_kills),
            u8::from(self.waiting),
            self.reclaims,
            self.refault_bytes,
            self.refault_stall_us
        )
    }
}

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
    /// A column of a recorded trace is not what it should be.
    #[error("line {line}: {field} {value:?} is invalid: {expected}")]
    Recorded {
        /// Line number.
        line: usize,
        /// Which column.
        field: &'static str,
        /// The field.
        value: String,
        /// What would be valid.
        expected: &'static str,
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
    /// Recorded traces only: each row's measurements.
    recorded: BTreeMap<String, BTreeMap<Resource, Vec<Recorded>>>,
    end_ms: u64,
}

/// Parses one extra column of a recorded row.
fn column(line: usize, field: &'static str, value: &str, empty_ok: bool) -> Result<Option<u64>, TraceError> {
    if value.is_empty() && empty_ok {
        return Ok(None);
    }
    value.parse::<u64>().ok().filter(|v| *v <= MAX_AMOUNT).map(Some).ok_or_else(|| TraceError::Recorded {
        line,
        field,
        value: value.to_owned(),
        expected: if empty_ok { "empty or a non-negative integer" } else { "a non-negative integer" },
    })
}

fn recorded_row(line: usize, time_ms: u64, f: &[&str]) -> Result<Recorded, TraceError> {
    let waiting = match f[6] {
        "0" => false,
        "1" => true,
        other => {
            return Err(TraceError::Recorded { line, field: "waiting", value: other.to_owned(), expected: "0 or 1" });
        }
    };
    Ok(Recorded {
        time_ms,
        interval_ms: column(line, "interval_ms", f[0], false)?.unwrap_or(0),
        usage: column(line, "usage", f[1], true)?,
        limit: column(line, "limit", f[2], true)?,
        throttled_us: column(line, "throttled_us", f[3], false)?.unwrap_or(0),
        stall_us: column(line, "stall_us", f[4], false)?.unwrap_or(0),
        oom_kills: column(line, "oom_kills", f[5], true)?,
        waiting,
        reclaims: optional(line, "reclaims", f.get(7))?,
        refault_bytes: optional(line, "refault_bytes", f.get(8))?,
        refault_stall_us: optional(line, "refault_stall_us", f.get(9))?,
    })
}

/// A column older recordings lack (zero there).
fn optional(line: usize, field: &'static str, value: Option<&&str>) -> Result<u64, TraceError> {
    Ok(match value {
        Some(v) => column(line, field, v, false)?.unwrap_or(0),
        None => 0,
    })
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
        let mut recorded = 0usize;
        let mut rows = 0usize;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if !header_seen {
                let normalised: String = l.split(',').map(str::trim).collect::<Vec<_>>().join(",");
                recorded = std::iter::once(RECORDED_HEADER)
                    .chain(RECORDED_HEADERS_OLD)
                    .find(|h| **h == normalised)
                    .map_or(0, |h| h.split(',').count());
                if normalised != HEADER && recorded == 0 {
                    return Err(TraceError::Header { line, found: l.to_owned() });
                }
                header_seen = true;
                continue;
            }
            let fields: Vec<&str> = l.split(',').map(str::trim).collect();
            let expected = if recorded > 0 { recorded } else { 4 };
            if fields.len() != expected {
                return Err(TraceError::FieldCount { line, found: fields.len() });
            }
            let [time, container, resource, demand] = fields[..4] else {
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
            if recorded > 0 {
                let r = recorded_row(line, time_ms, &fields[4..])?;
                let rows = trace.recorded.entry(container.to_owned()).or_default().entry(resource).or_default();
                match rows.last_mut() {
                    Some(last) if last.time_ms == time_ms => *last = r,
                    _ => rows.push(r),
                }
            }
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

    /// A recorded trace's measurements of one series (`None` for a plain
    /// demand trace).
    pub fn recorded(&self, container: &str, resource: Resource) -> Option<&[Recorded]> {
        self.recorded.get(container).and_then(|m| m.get(&resource)).map(Vec::as_slice)
    }

    /// Whether this is a recorded trace.
    pub fn is_recorded(&self) -> bool {
        !self.recorded.is_empty()
    }

    /// Where the trace starts, ms: 0 for a demand trace, the first tick's
    /// wall-clock time for a recorded one. The simulation runs `[start, end)`.
    pub fn start_ms(&self) -> u64 {
        if !self.is_recorded() {
            return 0;
        }
        self.series.values().flat_map(|m| m.values()).filter_map(|p| p.first()).map(|&(t, _)| t).min().unwrap_or(0)
    }

    /// The latest time in the trace, ms.
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
    fn recorded_traces_carry_what_the_agent_saw() {
        let r = Recorded {
            time_ms: 1_200,
            interval_ms: 200,
            usage: Some(900),
            limit: None,
            throttled_us: 20_000,
            stall_us: 0,
            oom_kills: Some(1),
            waiting: true,
            reclaims: 3,
            refault_bytes: 4096,
            refault_stall_us: 7,
        };
        let text = format!("{RECORDED_HEADER}\n{}\n", r.row("a", Resource::Cpu, 1000));
        let t = Trace::parse(&text).unwrap();
        assert_eq!(t.demand_at("a", Resource::Cpu, 1_200), 1000);
        assert_eq!(t.recorded("a", Resource::Cpu).unwrap(), &[r]);
        assert!(t.is_recorded() && !Trace::parse(OK).unwrap().is_recorded());
        let old = Trace::parse(&format!("{}\n1,a,cpu,1,200,5,,0,0,,1\n", RECORDED_HEADERS_OLD[0])).unwrap();
        assert_eq!(old.recorded("a", Resource::Cpu).unwrap()[0].reclaims, 0, "older recordings read as no reclaims");
        let old = Trace::parse(&format!("{}\n1,a,mem,1,200,5,,0,0,,1,4\n", RECORDED_HEADERS_OLD[1])).unwrap();
        let row = old.recorded("a", Resource::Mem).unwrap()[0];
        assert_eq!((row.reclaims, row.refault_bytes, row.refault_stall_us), (4, 0, 0));
        let e = Trace::parse(&format!("{RECORDED_HEADER}\n1,a,cpu,1,200,5,,0,0,,2,0,0,0\n")).unwrap_err();
        assert!(e.to_string().contains("waiting \"2\""), "{e}");
        let e = Trace::parse(&format!("{RECORDED_HEADER}\n1,a,cpu,1\n")).unwrap_err();
        assert!(matches!(e, TraceError::FieldCount { found: 4, .. }));
    }

    #[test]
    fn header_and_emptiness() {
        let e = Trace::parse("\n\ntime,c,r,d\n").unwrap_err();
        assert!(matches!(e, TraceError::Header { line: 3, .. }));
        assert_eq!(Trace::parse(HEADER).unwrap_err(), TraceError::Empty);
        assert_eq!(Trace::parse("").unwrap_err(), TraceError::Empty);
    }
}
