//! The host's CPUs as sysfs describes them (which physical core and socket
//! each logical CPU belongs to) and the choice of CPUs for a container
//! whose CPU limit is also enforced as a core set: physical cores before
//! their SMT siblings, containers spread across cores and sockets.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// One logical CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cpu {
    pub cpu: u32,
    /// Physical core id, unique within its socket.
    pub core: u32,
    pub socket: u32,
}

/// The online CPUs, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub cpus: Vec<Cpu>,
}

/// `0-3,6,8-9` as a list of ids (`None` when malformed).
pub fn parse_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 65_535 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Ids as the kernel writes them (`0-3,6`).
pub fn format_list(ids: &[u32]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { ids[i].to_string() } else { format!("{}-{}", ids[i], ids[j]) });
        i = j + 1;
    }
    parts.join(",")
}

impl Topology {
    /// Reads `sys` (`/sys/devices/system/cpu`): the online CPUs and, for
    /// each, `topology/core_id` and `topology/physical_package_id` (a CPU
    /// without them is its own core on socket 0).
    pub fn read(sys: &Path) -> Option<Self> {
        let online = parse_list(&std::fs::read_to_string(sys.join("online")).ok()?)?;
        let num = |cpu: u32, f: &str| -> Option<u32> {
            std::fs::read_to_string(sys.join(format!("cpu{cpu}/topology/{f}"))).ok()?.trim().parse().ok()
        };
        let cpus = online
            .into_iter()
            .map(|cpu| Cpu {
                cpu,
                core: num(cpu, "core_id").unwrap_or(cpu),
                socket: num(cpu, "physical_package_id").unwrap_or(0),
            })
            .collect();
        Some(Topology { cpus })
    }

    /// This host's.
    pub fn host() -> Self {
        Self::read(Path::new("/sys/devices/system/cpu")).unwrap_or_default()
    }

    /// The logical CPUs of `cpu`'s physical core (itself included).
    pub fn siblings(&self, cpu: u32) -> Vec<u32> {
        let Some(me) = self.cpus.iter().find(|c| c.cpu == cpu) else { return Vec::new() };
        self.cpus.iter().filter(|c| c.core == me.core && c.socket == me.socket).map(|c| c.cpu).collect()
    }

    /// Whether any physical core has more than one logical CPU.
    pub fn smt(&self) -> bool {
        self.cpus.iter().any(|c| self.siblings(c.cpu).len() > 1)
    }

    /// `want` CPUs for container `name`, given what every container holds
    /// (`assigned`, `name`'s own included). What it holds and keeps stays
    /// (no needless moves); new CPUs go first to the least shared logical
    /// CPU, then the least used physical core (so a core's SMT sibling
    /// only after every core has a container), then the least used
    /// socket, then the lowest id; when it shrinks, the most shared go
    /// first. `want` is between 1 and the number of CPUs.
    pub fn choose(&self, assigned: &BTreeMap<String, Vec<u32>>, name: &str, want: usize) -> Vec<u32> {
        let want = want.clamp(1, self.cpus.len().max(1));
        let online: Vec<u32> = self.cpus.iter().map(|c| c.cpu).collect();
        let mut mine: Vec<u32> =
            assigned.get(name).map(|v| v.iter().copied().filter(|c| online.contains(c)).collect()).unwrap_or_default();
        // Load of every CPU from the other containers, and from this one
        // as it grows (its own CPUs count on their core and socket too).
        let mut load: BTreeMap<u32, usize> = online.iter().map(|&c| (c, 0)).collect();
        for (who, cpus) in assigned {
            if who != name {
                for c in cpus {
                    if let Some(l) = load.get_mut(c) {
                        *l += 1;
                    }
                }
            }
        }
        let key = |cpu: u32, mine: &[u32]| {
            let me = self.cpus.iter().find(|c| c.cpu == cpu).copied().unwrap_or(Cpu { cpu, core: cpu, socket: 0 });
            let used = |c: &Cpu| load.get(&c.cpu).copied().unwrap_or(0) + usize::from(mine.contains(&c.cpu));
            let core: usize = self.cpus.iter().filter(|c| c.core == me.core && c.socket == me.socket).map(used).sum();
            let socket: usize = self.cpus.iter().filter(|c| c.socket == me.socket).map(used).sum();
            (load.get(&cpu).copied().unwrap_or(0), core, socket, cpu)
        };
        while mine.len() > want {
            // The most shared of its CPUs goes (its own presence aside).
            let worst = mine.iter().copied().max_by_key(|&c| {
                let others: Vec<u32> = mine.iter().copied().filter(|&m| m != c).collect();
                key(c, &others)
            });
            mine.retain(|&c| Some(c) != worst);
        }
        while mine.len() < want {
            let Some(best) = online.iter().copied().filter(|c| !mine.contains(c)).min_by_key(|&c| key(c, &mine)) else {
                break;
            };
            mine.push(best);
        }
        mine.sort_unstable();
        mine
    }
}

/// CPUs a container with `limit_mc` millicores gets: whole CPUs enough
/// for the limit (at least one).
pub fn cpus_for(limit_mc: u64) -> usize {
    usize::try_from(limit_mc.div_ceil(1000)).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `sockets` x `cores` x `threads`, numbered as Linux does on x86:
    /// every core's first thread first, then the siblings.
    fn fake(dir: &Path, sockets: u32, cores: u32, threads: u32) {
        let n = sockets * cores * threads;
        std::fs::write(dir.join("online"), format!("0-{}\n", n - 1)).unwrap();
        for cpu in 0..n {
            let first = cpu % (sockets * cores);
            let t = dir.join(format!("cpu{cpu}/topology"));
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("core_id"), format!("{}\n", first % cores)).unwrap();
            std::fs::write(t.join("physical_package_id"), format!("{}\n", first / cores)).unwrap();
        }
    }

    fn topo(sockets: u32, cores: u32, threads: u32) -> Topology {
        let tmp = tempfile::tempdir().unwrap();
        fake(tmp.path(), sockets, cores, threads);
        Topology::read(tmp.path()).unwrap()
    }

    #[test]
    fn lists_parse_and_format_like_the_kernel() {
        assert_eq!(parse_list("0-3,6,8-9\n").unwrap(), vec![0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(parse_list("").unwrap(), Vec::<u32>::new());
        assert!(parse_list("3-1").is_none() && parse_list("x").is_none() && parse_list("0-99999999").is_none());
        assert_eq!(format_list(&[9, 0, 1, 2, 3, 6, 8]), "0-3,6,8-9");
        assert_eq!(format_list(&[5]), "5");
    }

    #[test]
    fn sysfs_topology_with_smt_and_two_sockets() {
        let t = topo(2, 2, 2);
        assert_eq!(t.cpus.len(), 8);
        assert!(t.smt());
        // CPU 4 is CPU 0's sibling: socket 0, core 0.
        assert_eq!(t.siblings(0), vec![0, 4]);
        assert_eq!(t.cpus[2], Cpu { cpu: 2, core: 0, socket: 1 });
        assert!(!topo(1, 2, 1).smt());
        // Without topology files every CPU is its own core.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("online"), "0-1").unwrap();
        assert_eq!(Topology::read(tmp.path()).unwrap().siblings(1), vec![1]);
    }

    #[test]
    fn physical_cores_before_siblings_and_containers_spread() {
        // One socket, two cores, two threads: CPUs 0,2 on core 0; 1,3 on core 1.
        let t = topo(1, 2, 2);
        let mut a = BTreeMap::new();
        let web = t.choose(&a, "web", 2);
        assert_eq!(web, vec![0, 1], "two physical cores, not a core and its sibling");
        a.insert("web".to_owned(), web);
        let db = t.choose(&a, "db", 1);
        assert_eq!(db, vec![2], "left: the siblings");
        a.insert("db".to_owned(), db);
        // Two sockets: one container per socket before doubling up.
        let t = topo(2, 2, 1);
        let mut a = BTreeMap::new();
        for name in ["a", "b", "c", "d"] {
            let c = t.choose(&a, name, 1);
            a.insert(name.to_owned(), c);
        }
        let sockets: Vec<u32> = ["a", "b"].iter().map(|n| t.cpus[a[*n][0] as usize].socket).collect();
        assert_ne!(sockets[0], sockets[1], "{a:?}");
        let all: std::collections::BTreeSet<u32> = a.values().flatten().copied().collect();
        assert_eq!(all.len(), 4, "four containers, four CPUs: {a:?}");
    }

    #[test]
    fn growing_keeps_what_it_has_and_shrinking_drops_the_most_shared() {
        let t = topo(1, 4, 1);
        let mut a = BTreeMap::from([("x".to_owned(), vec![1]), ("y".to_owned(), vec![2])]);
        let x = t.choose(&a, "x", 2);
        assert!(x.contains(&1) && !x.contains(&2), "keeps 1, avoids y's CPU: {x:?}");
        a.insert("x".to_owned(), vec![1, 2]);
        assert_eq!(t.choose(&a, "x", 1), vec![1], "gives up the CPU shared with y");
        // More than the host has: all of it; zero: one.
        assert_eq!(t.choose(&a, "z", 9).len(), 4);
        assert_eq!(t.choose(&a, "z", 0).len(), 1);
        assert_eq!((cpus_for(0), cpus_for(1000), cpus_for(1001)), (1, 1, 2));
        // An offline CPU it held is dropped.
        let a = BTreeMap::from([("x".to_owned(), vec![7])]);
        assert_eq!(t.choose(&a, "x", 1), vec![0]);
    }
}
