//! The standard traces, generated deterministically (a seeded splitmix64,
//! no external randomness): `cargo xtask gen-traces` writes them to
//! `traces/`.

use std::fmt::Write as _;

use crate::resource::{GIB, MB, MIB, Resource};

/// Names of the standard traces, in order.
pub const NAMES: [&str; 6] = ["steady", "step", "sawtooth", "bursts", "bigdata", "memramp"];

/// Every standard trace as `(name, CSV text)`.
pub fn standard() -> Vec<(&'static str, String)> {
    vec![
        ("steady", steady()),
        ("step", step()),
        ("sawtooth", sawtooth()),
        ("bursts", bursts()),
        ("bigdata", bigdata()),
        ("memramp", memramp()),
    ]
}

/// One standard trace by name.
pub fn by_name(name: &str) -> Option<String> {
    standard().into_iter().find(|(n, _)| *n == name).map(|(_, csv)| csv)
}

/// splitmix64: tiny, seeded, good enough for noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-n, n]`.
    fn signed(&mut self, n: u64) -> i64 {
        let v = self.next() % (2 * n + 1);
        v as i64 - n as i64
    }

    /// `x` with uniform noise of `permille` per mille either way.
    fn noise(&mut self, x: u64, permille: u64) -> u64 {
        if permille == 0 {
            return x;
        }
        let f = 1000 + self.signed(permille);
        (x as i128 * i128::from(f) / 1000).max(0) as u64
    }
}

struct Gen {
    rows: Vec<(u64, String, Resource, u64)>,
    rng: Rng,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen { rows: Vec::new(), rng: Rng(seed) }
    }

    /// A row at `t_s` seconds with `x` plus noise.
    fn row(&mut self, t_s: u64, container: &str, r: Resource, x: u64, permille: u64) {
        let v = self.rng.noise(x, permille);
        self.rows.push((t_s * 1000, container.to_owned(), r, v));
    }

    fn csv(mut self, title: &str) -> String {
        self.rows.sort();
        let mut out = String::with_capacity(self.rows.len() * 30 + 100);
        let _ = writeln!(out, "# {title} (policies::traces, deterministic)");
        out.push_str(crate::trace::HEADER);
        out.push('\n');
        for (t, c, r, d) in &self.rows {
            let _ = writeln!(out, "{},{c},{r},{d}", t / 1000);
        }
        out
    }
}

/// Linear from `a` to `b` as `t` goes over `[0, span)`.
fn lerp(a: u64, b: u64, t: u64, span: u64) -> u64 {
    let (a, b) = (a as i128, b as i128);
    (a + (b - a) * i128::from(t) / i128::from(span.max(1))) as u64
}

/// A web server at constant load with a little noise.
fn steady() -> String {
    let mut g = Gen::new(1);
    for t in 0..=900 {
        g.row(t, "web", Resource::Cpu, 1200, 30);
        g.row(t, "web", Resource::Mem, 1536 * MIB, 5);
        g.row(t, "web", Resource::NetRx, 20 * MB, 50);
        g.row(t, "web", Resource::NetTx, 8 * MB, 50);
    }
    g.csv("steady: constant load with noise")
}

/// Load stepping up and down.
fn step() -> String {
    let mut g = Gen::new(2);
    for t in 0..=900 {
        let cpu = match t {
            0..150 => 500,
            150..330 => 2500,
            330..480 => 600,
            480..660 => 3500,
            _ => 800,
        };
        let mem = match t {
            0..300 => GIB,
            300..600 => 3 * GIB,
            _ => 1536 * MIB,
        };
        let disk = match t {
            0..200 => 10 * MB,
            200..400 => 80 * MB,
            _ => 20 * MB,
        };
        g.row(t, "api", Resource::Cpu, cpu, 30);
        g.row(t, "api", Resource::Mem, mem, 5);
        g.row(t, "api", Resource::DiskRead, disk, 50);
    }
    g.csv("step: load steps up and down")
}

/// Ramps that drop back: CPU every 120 s, memory every 300 s (a heap
/// growing until collected), disk writes every 60 s.
fn sawtooth() -> String {
    let mut g = Gen::new(3);
    for t in 0..=900 {
        g.row(t, "batch", Resource::Cpu, lerp(200, 3200, t % 120, 120), 20);
        g.row(t, "batch", Resource::Mem, lerp(512 * MIB, 4 * GIB, t % 300, 300), 5);
        g.row(t, "batch", Resource::DiskWrite, lerp(5 * MB, 100 * MB, t % 60, 60), 30);
    }
    g.csv("sawtooth: ramps that drop back")
}

/// A function-like container: 15 s bursts every 60 s (jittered), idle between.
fn bursts() -> String {
    let mut g = Gen::new(4);
    let mut starts = Vec::new();
    let mut s = 40;
    while s < 900 {
        starts.push(s);
        s += (60 + g.rng.signed(10)) as u64;
    }
    for t in 0..=900 {
        let on = starts.iter().any(|&b| t >= b && t < b + 15);
        let (cpu, net, mem) = if on { (3000, 60 * MB, 1229 * MIB) } else { (100, MB, 600 * MIB) };
        g.row(t, "fn", Resource::Cpu, cpu, 30);
        g.row(t, "fn", Resource::NetTx, net, 50);
        g.row(t, "fn", Resource::Mem, mem, 5);
    }
    g.csv("bursts: on/off load")
}

/// A MapReduce-like job on a master and three workers: map (cpu, disk
/// reads, heap growth), shuffle (network, disk writes), reduce (two
/// reducers: cpu, memory, disk writes), then idle. Rows every 5 s.
fn bigdata() -> String {
    let mut g = Gen::new(5);
    let workers = ["worker-1", "worker-2", "worker-3"];
    for t in (0..=1000).step_by(5) {
        for (i, w) in workers.iter().enumerate() {
            let reducer = i < 2;
            // (cpu, mem, disk_read, disk_write, net_rx, net_tx)
            let v = match t {
                0..30 => (200, 512 * MIB, MB, MB, MB, MB),
                30..430 => (3500, lerp(GIB, 4 * GIB, t - 30, 400), 150 * MB, 10 * MB, 2 * MB, 2 * MB),
                430..600 => (1500, 4 * GIB, 5 * MB, 60 * MB, 80 * MB, 80 * MB),
                600..900 if reducer => (2500, 5 * GIB, 20 * MB, 120 * MB, 5 * MB, 5 * MB),
                600..900 => (500, 2 * GIB, MB, 5 * MB, 2 * MB, 2 * MB),
                _ => (100, GIB, MB, MB, MB, MB),
            };
            g.row(t, w, Resource::Cpu, v.0, 50);
            g.row(t, w, Resource::Mem, v.1, 10);
            g.row(t, w, Resource::DiskRead, v.2, 100);
            g.row(t, w, Resource::DiskWrite, v.3, 100);
            g.row(t, w, Resource::NetRx, v.4, 100);
            g.row(t, w, Resource::NetTx, v.5, 100);
        }
        let busy = (30..900).contains(&t);
        g.row(t, "master", Resource::Cpu, if busy { 400 } else { 150 }, 50);
        g.row(t, "master", Resource::Mem, GIB, 10);
        g.row(t, "master", Resource::DiskRead, MB, 100);
        g.row(t, "master", Resource::DiskWrite, 2 * MB, 100);
        g.row(t, "master", Resource::NetRx, if busy { 5 * MB } else { MB }, 100);
        g.row(t, "master", Resource::NetTx, if busy { 5 * MB } else { MB }, 100);
    }
    g.csv("bigdata: map, shuffle and reduce on a master and three workers")
}

/// A cache whose memory ramps up with short spikes, then is flushed.
fn memramp() -> String {
    let mut g = Gen::new(6);
    let mut spikes = Vec::new();
    let mut s = 30;
    while s < 700 {
        spikes.push(s);
        s += (45 + g.rng.signed(8)) as u64;
    }
    for t in 0..=900 {
        let base = if t < 600 {
            lerp(512 * MIB, 6 * GIB, t, 600)
        } else if t < 700 {
            6 * GIB
        } else {
            GIB
        };
        let spike = spikes.iter().any(|&b| t >= b && t < b + 3);
        let mem = base + if spike { GIB } else { 0 };
        g.row(t, "cache", Resource::Mem, mem, 5);
        g.row(t, "cache", Resource::Cpu, 800, 100);
    }
    g.csv("memramp: memory ramp with spikes, then a flush")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::trace::Trace;

    #[test]
    fn standard_traces_parse_are_small_and_deterministic() {
        let a = standard();
        let b = standard();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|(n, _)| *n).collect::<Vec<_>>(), NAMES);
        for (name, csv) in &a {
            let t = Trace::parse(csv).unwrap();
            assert!(t.end_ms() >= 900_000, "{name}");
            assert!(csv.len() < 200 * 1024, "{name} is {} bytes", csv.len());
        }
        assert_eq!(Trace::parse(&a[4].1).unwrap().containers().count(), 4);
    }

    #[test]
    fn committed_traces_match_the_generator() {
        let committed = [
            include_str!("../../traces/steady.csv"),
            include_str!("../../traces/step.csv"),
            include_str!("../../traces/sawtooth.csv"),
            include_str!("../../traces/bursts.csv"),
            include_str!("../../traces/bigdata.csv"),
            include_str!("../../traces/memramp.csv"),
        ];
        for ((name, csv), file) in standard().iter().zip(committed) {
            assert_eq!(csv, file, "traces/{name}.csv is stale: run `cargo xtask gen-traces`");
        }
    }
}
