//! Every cgroup's counters in a few syscalls a tick: `BPF_MAP_LOOKUP_BATCH`
//! walks the per-CPU counter map in chunks, where a lookup per cgroup costs
//! one syscall (and one allocation in aya) each. aya 0.14 has no batch
//! operations, so this is the raw syscall.

use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    time::{Duration, Instant},
};

use scaler_common::CgroupCounters;

/// `enum bpf_cmd`: BPF_MAP_LOOKUP_BATCH.
const BPF_MAP_LOOKUP_BATCH: libc::c_int = 24;

/// Entries asked for per syscall.
const CHUNK: usize = 1024;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads a per-CPU hash map `u64 -> CgroupCounters` whole, summing each
/// entry over CPUs. Its buffers are kept between reads.
pub struct BatchReader {
    /// Possible CPUs: the kernel writes one value slot for each.
    cpus: usize,
    keys: Vec<u64>,
    values: Vec<u8>,
}

/// Bytes of one CPU's value: the kernel rounds per-CPU values up to 8.
const STRIDE: usize = size_of::<CgroupCounters>().next_multiple_of(8);

impl BatchReader {
    pub fn new(cpus: usize) -> Self {
        let cpus = cpus.max(1);
        BatchReader { cpus, keys: vec![0; CHUNK], values: vec![0; CHUNK * cpus * STRIDE] }
    }

    /// Replaces `out` with the map's content now. An error means the kernel
    /// refused the batch operation (the caller falls back to lookups).
    pub fn read(&mut self, map: BorrowedFd<'_>, out: &mut HashMap<u64, CgroupCounters>) -> io::Result<()> {
        out.clear();
        // The position to resume from (a bucket index for hash maps, which
        // the kernel reads and writes as 4 bytes; 8 are given).
        let mut token_in: u64 = 0;
        let mut token_out: u64 = 0;
        let mut first = true;
        // Bounded: the map holds at most COUNTERS_MAX_ENTRIES entries.
        for _ in 0..=(scaler_common::COUNTERS_MAX_ENTRIES as usize / CHUNK + 1) {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { std::ptr::from_ref(&token_in) as u64 },
                out_batch: std::ptr::from_mut(&mut token_out) as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: CHUNK as u32,
                map_fd: map.as_raw_fd() as u32,
                ..Default::default()
            };
            // SAFETY: `attr` points at buffers of CHUNK keys and CHUNK x
            // cpus x STRIDE value bytes that outlive the call, and at two
            // 8-byte tokens; the size passed is the struct's.
            let r = unsafe {
                libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as u32)
            };
            let err = (r < 0).then(io::Error::last_os_error);
            let n = (attr.count as usize).min(CHUNK);
            for (i, &key) in self.keys[..n].iter().enumerate() {
                let mut sum = CgroupCounters::default();
                for cpu in 0..self.cpus {
                    let at = (i * self.cpus + cpu) * STRIDE;
                    let bytes = &self.values[at..at + size_of::<CgroupCounters>()];
                    // SAFETY: `bytes` holds size_of::<CgroupCounters>() bytes
                    // the kernel wrote; the struct is plain u64 fields, valid
                    // for any bit pattern; the read is unaligned.
                    let v = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<CgroupCounters>()) };
                    sum = sum.wrapping_add(v);
                }
                out.insert(key, sum);
            }
            match err {
                None => {}
                // The walk is over (the last chunk may hold entries).
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Some(e) => return Err(e),
            }
            token_in = token_out;
            first = false;
        }
        Err(io::Error::other("the batch walk did not end"))
    }
}

/// How often (at most) the counter map is pruned of cgroups no container
/// holds: at the first discovery scan this long after the last pruning
/// (scans come at least every `agent.rescan_interval_ms`, 10 s).
const PRUNE_EVERY: Duration = Duration::from_secs(9);

/// The counter map as read at the start of a tick, and its pruning.
pub struct CounterSnapshot {
    /// `None` when the kernel refused batch reads (then lookups only).
    reader: Option<BatchReader>,
    entries: HashMap<u64, CgroupCounters>,
    /// When `entries` were read for this tick; `None`: this tick reads by
    /// lookup.
    at: Option<Instant>,
    /// Entries of no tracked container at the last pruning, and when.
    untracked: HashSet<u64>,
    last_prune: Option<Instant>,
}

impl CounterSnapshot {
    /// `cpus`: possible CPUs (`None`: unknown, no batch reads).
    pub fn new(cpus: Option<usize>) -> Self {
        CounterSnapshot {
            reader: cpus.map(BatchReader::new),
            entries: HashMap::new(),
            at: None,
            untracked: HashSet::new(),
            last_prune: None,
        }
    }

    fn read_whole(&mut self, map: BorrowedFd<'_>) -> bool {
        let Some(reader) = self.reader.as_mut() else { return false };
        match reader.read(map, &mut self.entries) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("batch reads of the counter map refused ({e}): one lookup per cgroup");
                self.reader = None;
                self.entries = HashMap::new();
                false
            }
        }
    }

    /// Reads the whole map for this tick's `ids_wanted` reads when they
    /// are `batch_from` or more.
    pub fn refresh(&mut self, map: BorrowedFd<'_>, ids_wanted: usize, batch_from: usize) {
        self.at = None;
        if ids_wanted >= batch_from && self.read_whole(map) {
            self.at = Some(Instant::now());
        }
    }

    /// This tick's counters of `id` (zero if the kernel has none), or
    /// `None` when this tick reads by lookup.
    pub fn get(&self, id: u64) -> Option<CgroupCounters> {
        self.at.map(|_| self.entries.get(&id).copied().unwrap_or_default())
    }

    /// When this tick's counters were read, if all at once.
    pub fn taken_at(&self) -> Option<Instant> {
        self.at
    }

    /// Entries at the last whole read (`None` without batch reads).
    pub fn entries(&self) -> Option<usize> {
        self.reader.as_ref().map(|_| self.entries.len())
    }

    /// The ids to delete from the map: held by no tracked container at two
    /// prunings in a row, at least `PRUNE_EVERY` apart (a new cgroup is
    /// tracked within a tick of its making, so nothing a container holds is
    /// lost). At most every `PRUNE_EVERY`; `tracked`: every cgroup id of
    /// every tracked container.
    pub fn prune(&mut self, map: BorrowedFd<'_>, tracked: &HashSet<u64>) -> Vec<u64> {
        let now = Instant::now();
        if self.last_prune.is_some_and(|t| now.duration_since(t) < PRUNE_EVERY) {
            return Vec::new();
        }
        if self.at.is_none() && !self.read_whole(map) {
            return Vec::new();
        }
        self.last_prune = Some(now);
        let untracked: HashSet<u64> = self.entries.keys().filter(|id| !tracked.contains(id)).copied().collect();
        let gone: Vec<u64> = untracked.intersection(&self.untracked).copied().collect();
        for id in &gone {
            self.entries.remove(id);
        }
        self.untracked = untracked;
        gone
    }
}
