//! Loading helpers: the struct offsets the programs read at, and attaching
//! each kind of program.

use std::{fs::File, path::Path};

use aya::{
    Ebpf,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, PerfEvent, ProgramError, SockOps,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use scaler_common::{BioOffsets, MemcgOffsets};
use tracing::warn;

use super::{btf::Btf, loader::LoadError};

/// The struct offsets the disk and memory programs read at, from this
/// kernel's BTF (zeroes, which turn those programs off, where not found).
pub(super) fn offsets(btf_path: &Path) -> (BioOffsets, MemcgOffsets) {
    let Some(blob) = std::fs::read(btf_path).map_err(|e| warn!("reading BTF for struct offsets: {e}")).ok() else {
        return Default::default();
    };
    let Some(btf) = Btf::parse(&blob).map_err(|e| warn!("parsing BTF for struct offsets: {e}")).ok() else {
        return Default::default();
    };
    let bio = (|| {
        let opf = btf.offset_of("bio", &["bi_opf"]).ok()?;
        let size = btf.offset_of("bio", &["bi_iter", "bi_size"]).ok()?;
        Some(BioOffsets { opf, size, valid: 1, _pad: 0 })
    })();
    let memcg = super::memiter::offsets(&btf).map_err(|e| warn!("memory cgroup offsets: {e}")).ok();
    (bio.unwrap_or_default(), memcg.unwrap_or_default())
}

/// An error and its sources on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub(super) fn program<'a, T>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    bpf.program_mut(name)
        .ok_or(LoadError::Program { name, source: ProgramError::NotLoaded })?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

/// Loads program `name` as a BTF tracepoint on `tracepoint` and attaches it.
pub(super) fn attach_btf_tp(
    bpf: &mut Ebpf,
    btf: &aya::Btf,
    name: &'static str,
    tracepoint: &str,
) -> Result<(), LoadError> {
    let err = |source| LoadError::Program { name, source };
    let p: &mut BtfTracePoint = program(bpf, name)?;
    p.load(tracepoint, btf).map_err(err)?;
    p.attach().map_err(err)?;
    Ok(())
}

/// Attaches each `(program, tracepoint)`; true when all attached (each
/// failure is logged as `what` disabled).
pub(super) fn attach_all(bpf: &mut Ebpf, btf: &aya::Btf, programs: &[(&'static str, &str)], what: &str) -> bool {
    let mut all = true;
    for &(prog, tp) in programs {
        if let Err(e) = attach_btf_tp(bpf, btf, prog, tp) {
            warn!("{what} ({tp}) disabled: {}", chain(&e));
            all = false;
        }
    }
    all
}

/// The CPU-clock flush on every online CPU.
pub(super) fn attach_cpu_clock(bpf: &mut Ebpf, hz: u64) -> Result<(), LoadError> {
    let name = "cpu_clock";
    let err = |source| LoadError::Program { name, source };
    let p: &mut PerfEvent = program(bpf, name)?;
    p.load().map_err(err)?;
    for cpu in aya::util::online_cpus().map_err(|(_, e)| LoadError::Cpus(e))? {
        p.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Frequency(hz),
            false,
        )
        .map_err(err)?;
    }
    Ok(())
}

/// `cgroup_skb` ingress and egress on the root of the v2 hierarchy.
pub(super) fn attach_net(bpf: &mut Ebpf, root: &Path) -> Result<(), LoadError> {
    let cgroup =
        File::open(root).map_err(|source| LoadError::CgroupRoot { path: root.display().to_string(), source })?;
    for (name, kind) in [("net_ingress", CgroupSkbAttachType::Ingress), ("net_egress", CgroupSkbAttachType::Egress)] {
        let err = |source| LoadError::Program { name, source };
        let p: &mut CgroupSkb = program(bpf, name)?;
        p.load().map_err(err)?;
        // aya attaches with a BPF link (kernel >= 5.7): links always coexist
        // with programs others attached (systemd's IP accounting, a CNI) and
        // the kernel refuses any flag, so the mode must be `Single` (0).
        p.attach(&cgroup, kind, CgroupAttachMode::Single).map_err(err)?;
    }
    let name = "tcp_pacing";
    let err = |source| LoadError::Program { name, source };
    let p: &mut SockOps = program(bpf, name)?;
    p.load().map_err(err)?;
    p.attach(&cgroup, CgroupAttachMode::Single).map_err(err)?;
    Ok(())
}
