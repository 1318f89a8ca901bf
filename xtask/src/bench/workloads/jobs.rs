//! The real programs the bench runs, each in its own cgroup: a Linux kernel
//! build, a TeraSort-like pipeline, an in-memory analytics job whose
//! working set grows and shrinks, and PostgreSQL under pgbench at stepped
//! rates.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::super::harness::Cgroups;

const PIPELINE_SH: &str = include_str!("scripts/pipeline.sh");
const ANALYTICS_PY: &str = include_str!("scripts/analytics.py");

/// Where the kernel source is unpacked once and kept between bench runs.
pub const CACHE: &str = "/var/tmp/scaler-bench-cache";

/// pgbench's stepped load: `(transactions per second, seconds)`.
pub const SERVICE_STEPS: [(u32, u64); 5] = [(100, 20), (800, 20), (300, 20), (1200, 20), (50, 20)];

/// One program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// `make -j2` of a Linux kernel (tinyconfig): a serial configure step,
    /// a parallel compile, a serial link.
    Build,
    /// Generate, compress, sort (1 GiB buffer), compress with two threads,
    /// index: phases of one and two cores, little memory and a lot.
    Pipeline,
    /// Python: load, index and query tables of 0.25 to 1.3 GB in turn.
    Analytics,
    /// PostgreSQL 15 serving pgbench (TPC-B-like, 8 clients) at stepped rates.
    Service,
}

impl Job {
    pub fn name(self) -> &'static str {
        match self {
            Job::Build => "build",
            Job::Pipeline => "pipeline",
            Job::Analytics => "analytics",
            Job::Service => "service",
        }
    }

    pub fn is_service(self) -> bool {
        self == Job::Service
    }
}

/// What one run of a job gives.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Whether the program finished without error (an OOM kill fails it).
    pub ok: bool,
    /// Wall-clock time of the measured part, seconds.
    pub seconds: f64,
    /// Service only: latency of every transaction (including the wait
    /// behind its scheduled start), µs.
    pub latencies_us: Vec<u64>,
    /// Service only: transactions done against those scheduled.
    pub done: u64,
    pub scheduled: u64,
}

/// Where one job runs.
pub struct Ctx<'a> {
    pub cg: &'a Cgroups,
    /// The container's cgroup, relative to the bench parent.
    pub child: String,
    /// A scratch directory of its own (on disk).
    pub dir: PathBuf,
}

impl Ctx<'_> {
    fn spawn(&self, cmd: &[&str], cwd: &Path) -> anyhow::Result<std::process::Child> {
        let log = std::fs::File::create(self.dir.join("job.log"))?;
        self.cg.spawn(&self.child, cmd, cwd, log)
    }

    /// Runs `cmd` inside the container until it exits; `(ok, seconds)`.
    fn batch(&self, cmd: &[&str], cwd: &Path) -> anyhow::Result<(bool, f64)> {
        let t0 = Instant::now();
        let mut child = self.spawn(cmd, cwd)?;
        let status = child.wait()?;
        Ok((status.success(), t0.elapsed().as_secs_f64()))
    }
}

fn kernel_tarball() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/src")
        .context("reading /usr/src")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        })
        .collect();
    found.sort();
    found.pop().context("no /usr/src/linux-source-*.tar.xz (cargo xtask setup installs linux-source-6.1)")
}

/// The unpacked kernel source (done once, kept in [`CACHE`]).
fn kernel_source() -> anyhow::Result<PathBuf> {
    let tarball = kernel_tarball()?;
    let stem = tarball.file_name().and_then(|n| n.to_str()).unwrap_or("linux").trim_end_matches(".tar.xz").to_owned();
    let dir = Path::new(CACHE).join(&stem);
    if !dir.join("Makefile").exists() {
        eprintln!("    unpacking {} into {CACHE} (once)", tarball.display());
        std::fs::create_dir_all(CACHE)?;
        crate::util::run(Command::new("tar").arg("xf").arg(&tarball).arg("-C").arg(CACHE))?;
    }
    Ok(dir)
}

/// Reads every file of the tree, so that each build starts with the same
/// warm page cache whatever ran before it.
fn warm(dir: &Path) -> anyhow::Result<()> {
    let script = "find . -type f \\( -name '*.[chS]' -o -name 'Makefile*' -o -name 'Kconfig*' -o -name '*.sh' \\) -print0 | xargs -0 cat > /dev/null";
    crate::util::run(Command::new("sh").arg("-c").arg(script).current_dir(dir))
}

/// Once per bench invocation, outside any measurement.
pub fn prepare(jobs: &[Job]) -> anyhow::Result<()> {
    if jobs.contains(&Job::Build) {
        kernel_source()?;
    }
    for (tool, what) in [("pgbench", "postgresql"), ("python3", "python3"), ("xz", "xz-utils"), ("make", "make")] {
        if crate::util::output(Command::new("sh").arg("-c").arg(format!("command -v {tool}"))).is_none() {
            bail!("{tool} not found (package {what}; cargo xtask setup installs it)");
        }
    }
    Ok(())
}

/// Work to do before the run starts (not measured), e.g. a database to load.
pub fn before(job: Job, ctx: &Ctx) -> anyhow::Result<()> {
    match job {
        Job::Build => warm(&kernel_source()?),
        Job::Pipeline => Ok(std::fs::write(ctx.dir.join("pipeline.sh"), PIPELINE_SH)?),
        Job::Analytics => Ok(std::fs::write(ctx.dir.join("analytics.py"), ANALYTICS_PY)?),
        Job::Service => initdb(&ctx.dir),
    }
}

/// Runs the job in its container and waits for it.
pub fn run(job: Job, ctx: &Ctx) -> anyhow::Result<Outcome> {
    let (ok, seconds) = match job {
        Job::Build => {
            let src = kernel_source()?;
            let out = ctx.dir.join("out");
            let script = format!(
                "make -s O={o} tinyconfig > /dev/null && make -s -j2 O={o} vmlinux && rm -rf {o}",
                o = out.display()
            );
            ctx.batch(&["sh", "-c", &script], &src)?
        }
        Job::Pipeline => ctx.batch(&["sh", "pipeline.sh", "12000000", "1G"], &ctx.dir)?,
        Job::Analytics => ctx.batch(&["python3", "analytics.py"], &ctx.dir)?,
        Job::Service => return service(ctx),
    };
    Ok(Outcome { ok, seconds, ..Outcome::default() })
}

fn pg_bin(tool: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().map(|e| e.path()).collect();
    versions.sort();
    versions.pop().map(|v| v.join("bin").join(tool)).unwrap_or_else(|| PathBuf::from(tool))
}

fn initdb(dir: &Path) -> anyhow::Result<()> {
    let pg = dir.join("pg");
    std::fs::create_dir_all(&pg)?;
    crate::util::run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir))?;
    let out = Command::new("setpriv")
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
        .arg(pg_bin("initdb"))
        .args(["-A", "trust", "--no-sync", "-U", "postgres", "-D"])
        .arg(pg.join("data"))
        .output()
        .context("initdb")?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn pgbench(sock: &Path, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new("pgbench");
    c.arg("-h").arg(sock).args(["-p", &port.to_string(), "-U", "postgres"]).args(args).arg("postgres");
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// PostgreSQL in the container, pgbench outside it at stepped rates.
fn service(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let pg = ctx.dir.join("pg");
    let data = pg.join("data");
    let port = free_port()?;
    let (data_s, pg_s, port_s) = (data.display().to_string(), pg.display().to_string(), port.to_string());
    let postgres = pg_bin("postgres");
    let mut server = ctx.spawn(
        &[
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
            &postgres.display().to_string(),
            "-D",
            &data_s,
            "-k",
            &pg_s,
            "-p",
            &port_s,
            "-c",
            "listen_addresses=",
            "-c",
            "shared_buffers=128MB",
            "-c",
            "synchronous_commit=off",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ],
        &pg,
    )?;
    let result = (|| -> anyhow::Result<Outcome> {
        let end = Instant::now() + Duration::from_secs(30);
        while !pgbench(&pg, port, &["-i", "-s", "10", "-q"]).status()?.success() {
            if Instant::now() > end {
                bail!("PostgreSQL did not accept pgbench -i within 30 s");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let t0 = Instant::now();
        let mut out = Outcome { ok: true, ..Outcome::default() };
        for (i, &(rate, secs)) in SERVICE_STEPS.iter().enumerate() {
            let prefix = ctx.dir.join(format!("step{i}"));
            let status = pgbench(
                &pg,
                port,
                &[
                    "-c",
                    "8",
                    "-j",
                    "2",
                    "-R",
                    &rate.to_string(),
                    "-T",
                    &secs.to_string(),
                    "-l",
                    &format!("--log-prefix={}", prefix.display()),
                ],
            )
            .status()?;
            out.ok &= status.success();
            out.scheduled += u64::from(rate) * secs;
            for e in std::fs::read_dir(&ctx.dir)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("step{i}.")) {
                    let text = std::fs::read_to_string(e.path())?;
                    out.latencies_us.extend(parse_log(&text));
                }
            }
        }
        out.done = out.latencies_us.len() as u64;
        out.seconds = t0.elapsed().as_secs_f64();
        Ok(out)
    })();
    // Fast shutdown (SIGINT), then make sure.
    let pid = std::fs::read_to_string(data.join("postmaster.pid")).ok();
    if let Some(pid) = pid.as_deref().and_then(|t| t.lines().next()).and_then(|l| l.trim().parse::<i32>().ok()) {
        let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
    }
    let end = Instant::now() + Duration::from_secs(20);
    while server.try_wait()?.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// pgbench `-l` lines with `-R`: `client txn time_us script epoch epoch_us
/// lag_us`; the latency a client sees is `time + lag` (its wait behind the
/// schedule included).
pub fn parse_log(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let time: u64 = f.get(2)?.parse().ok()?;
            let lag: u64 = f.get(6).and_then(|x| x.parse().ok()).unwrap_or(0);
            Some(time + lag)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_log_lines() {
        let text = "0 199 2241 0 1175850569 339069 131\n1 0 1046 0 1175850569 339073 0\nbad line\n";
        assert_eq!(parse_log(text), vec![2372, 1046]);
    }
}
