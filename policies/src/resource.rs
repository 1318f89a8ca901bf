//! The resources a container carries, their names and units.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One thousand millicores make one core.
pub const MILLICORES_PER_CORE: u64 = 1000;
/// One mebibyte, in bytes.
pub const MIB: u64 = 1 << 20;
/// One gibibyte, in bytes.
pub const GIB: u64 = 1 << 30;
/// One megabyte (decimal), in bytes; bandwidths are quoted in MB/s.
pub const MB: u64 = 1_000_000;

/// Largest amount any resource value may take. Keeping values well below
/// `i64::MAX` lets every signed computation (limits, amounts, deltas) run in
/// `i64` without overflow.
pub const MAX_AMOUNT: u64 = 1 << 52;

/// A scalable resource. Amounts are integers in base units: `cpu` in
/// millicores, `mem` in bytes, disk and network in bytes per second, `energy`
/// as power in milliwatts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU bandwidth, millicores (1000 = one core).
    Cpu,
    /// Memory, bytes.
    Mem,
    /// Disk read bandwidth, bytes/s.
    DiskRead,
    /// Disk write bandwidth, bytes/s.
    DiskWrite,
    /// Network receive bandwidth, bytes/s.
    NetRx,
    /// Network transmit bandwidth, bytes/s.
    NetTx,
    /// Power, milliwatts.
    Energy,
}

/// How a resource behaves when demand exceeds its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// Excess demand is throttled and the kernel reports throttled time.
    Cpu,
    /// A level, not a rate: excess demand is an OOM kill.
    Memory,
    /// Excess demand is throttled without a direct signal (disk, network).
    Bandwidth,
    /// Power: not limited directly, only through CPU.
    Power,
}

/// Error from parsing a resource name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The name is none of the known resources.
    #[error("unknown resource {0:?}; expected one of cpu, mem, disk_read, disk_write, net_rx, net_tx, energy")]
    Unknown(String),
}

/// The names of `list`, in its order.
const fn names<const N: usize>(list: [Resource; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = list[i].name();
        i += 1;
    }
    out
}

impl Resource {
    /// Every resource, in a fixed order.
    pub const ALL: [Resource; 7] = [
        Resource::Cpu,
        Resource::Mem,
        Resource::DiskRead,
        Resource::DiskWrite,
        Resource::NetRx,
        Resource::NetTx,
        Resource::Energy,
    ];

    /// The resources a container limit can be set for (all but energy).
    pub const LIMITABLE: [Resource; 6] =
        [Resource::Cpu, Resource::Mem, Resource::DiskRead, Resource::DiskWrite, Resource::NetRx, Resource::NetTx];

    /// The names of [`Resource::ALL`], in its order.
    pub const NAMES: [&'static str; 7] = names(Resource::ALL);

    /// The names of [`Resource::LIMITABLE`], in its order.
    pub const LIMITABLE_NAMES: [&'static str; 6] = names(Resource::LIMITABLE);

    /// The snake-case name used in configuration, CSV and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Mem => "mem",
            Resource::DiskRead => "disk_read",
            Resource::DiskWrite => "disk_write",
            Resource::NetRx => "net_rx",
            Resource::NetTx => "net_tx",
            Resource::Energy => "energy",
        }
    }

    /// The unit of amounts of this resource.
    pub const fn unit(self) -> &'static str {
        match self {
            Resource::Cpu => "millicores",
            Resource::Mem => "bytes",
            Resource::DiskRead | Resource::DiskWrite | Resource::NetRx | Resource::NetTx => "bytes/s",
            Resource::Energy => "milliwatts",
        }
    }

    /// How the resource behaves under excess demand.
    pub const fn kind(self) -> ResourceKind {
        match self {
            Resource::Cpu => ResourceKind::Cpu,
            Resource::Mem => ResourceKind::Memory,
            Resource::DiskRead | Resource::DiskWrite | Resource::NetRx | Resource::NetTx => ResourceKind::Bandwidth,
            Resource::Energy => ResourceKind::Power,
        }
    }

    /// True for disk resources.
    pub const fn is_disk(self) -> bool {
        matches!(self, Resource::DiskRead | Resource::DiskWrite)
    }

    /// True for network resources.
    pub const fn is_net(self) -> bool {
        matches!(self, Resource::NetRx | Resource::NetTx)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Resource {
    type Err = ResourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resource::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| ResourceError::Unknown(s.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Resource::ALL {
            assert_eq!(r.name().parse::<Resource>().unwrap(), r);
            assert_eq!(r.to_string(), r.name());
        }
    }

    #[test]
    fn serde_uses_snake_case() {
        let json = serde_json::to_string(&Resource::DiskWrite).unwrap();
        assert_eq!(json, "\"disk_write\"");
        let back: Resource = serde_json::from_str("\"net_rx\"").unwrap();
        assert_eq!(back, Resource::NetRx);
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = "gpu".parse::<Resource>().unwrap_err();
        assert_eq!(err, ResourceError::Unknown("gpu".into()));
        assert!(err.to_string().contains("gpu"));
    }
}
