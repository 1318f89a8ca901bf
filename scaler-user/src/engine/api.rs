//! The calls scaler makes to each engine: list its containers, and set a
//! container's CPU and memory limits the way the engine stores them.
//!
//! - Docker: `GET /containers/json?all=1`, `GET /containers/{id}/json`
//!   (once, for how its limits are stored), `POST /containers/{id}/update`
//!   (`NanoCpus`, or `CpuQuota`/`CpuPeriod` for a container created with
//!   them; `Memory`, with `MemorySwap` keeping the swap it had).
//! - Podman: the same listing (its Docker-compatible API), and
//!   `POST /v4.0.0/libpod/containers/{id}/update` (an OCI resources body).
//! - LXD: `GET /1.0/instances?recursion=1` (containers; labels are the
//!   `user.*` keys), `PATCH /1.0/instances/{name}` with
//!   `limits.cpu.allowance` (`Nms/100ms`: whole milliseconds, so within 10
//!   millicores) and `limits.memory` (bytes).

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::{Value, json};

use super::{Engine, EngineInfo, http};

/// Every container `engine` has (running or not).
pub fn list(engine: Engine, socket: &Path, timeout: Duration) -> Result<Vec<EngineInfo>, http::CallError> {
    match engine {
        Engine::Docker | Engine::Podman => {
            let v = http::json(socket, "GET", "/containers/json?all=1", None, timeout)?;
            Ok(parse_docker_list(engine, &v))
        }
        Engine::Lxd => {
            let v = http::json(socket, "GET", "/1.0/instances?recursion=1", None, timeout)?;
            Ok(parse_lxd_list(&v))
        }
    }
}

fn parse_docker_list(engine: Engine, v: &Value) -> Vec<EngineInfo> {
    let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(|c| {
            let id = c.get("Id")?.as_str()?.to_owned();
            // Docker answers "/web"; links add more names ("/other/web").
            let name = c
                .get("Names")
                .and_then(Value::as_array)
                .and_then(|n| n.iter().filter_map(Value::as_str).find(|n| n.matches('/').count() <= 1))
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            Some(EngineInfo { engine: engine.name().into(), id, name, labels: string_map(c.get("Labels"), "") })
        })
        .collect()
}

fn parse_lxd_list(v: &Value) -> Vec<EngineInfo> {
    let items = v.get("metadata").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str).is_none_or(|t| t == "container"))
        // A stopped instance has no cgroup: a plain LXC container of the
        // same name is not it.
        .filter(|i| i.get("status").and_then(Value::as_str) != Some("Stopped"))
        .filter_map(|i| {
            let name = i.get("name")?.as_str()?.to_owned();
            Some(EngineInfo {
                engine: Engine::Lxd.name().into(),
                id: name.clone(),
                name,
                labels: string_map(i.get("config"), "user."),
            })
        })
        .collect()
}

/// The string values of a JSON object whose keys start with `prefix`
/// (removed).
fn string_map(v: Option<&Value>, prefix: &str) -> BTreeMap<String, String> {
    let Some(obj) = v.and_then(Value::as_object) else { return BTreeMap::new() };
    obj.iter().filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.as_str()?.to_owned()))).collect()
}

/// What to set: `None` leaves a resource as it is, `Some(None)` removes its
/// limit, `Some(Some(v))` sets it (millicores, bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu: Option<Option<u64>>,
    pub mem: Option<Option<u64>>,
}

/// The CFS period the engines are given, µs (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// How a Docker container's limits are stored, read once from its
/// configuration (`GET /containers/{id}/json`) and kept: Docker refuses to
/// mix `NanoCpus` with `CpuQuota`/`CpuPeriod`, and its stored swap setting
/// is what a restart applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DockerShape {
    pub cpu: DockerCpu,
    pub swap: DockerSwap,
}

/// Which CPU fields the container takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DockerCpu {
    /// `NanoCpus` (`--cpus`): what `docker update --cpus` keeps working with.
    #[default]
    Nano,
    /// `CpuQuota`/`CpuPeriod`, for a container created with them.
    Quota,
}

/// What is sent as `MemorySwap` beside a new `Memory` (Docker refuses a
/// `Memory` alone once its memory+swap is in force).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DockerSwap {
    /// `-1`: swap was unlimited (or never set: created without a memory
    /// limit, memory+swap is unlimited).
    #[default]
    Unlimited,
    /// The new memory plus the swap it had on top (`--memory-swap` minus
    /// `--memory`).
    Gap(u64),
}

/// The shape of the Docker container `key` from its configuration.
pub fn docker_shape(socket: &Path, key: &str, timeout: Duration) -> Result<DockerShape, http::CallError> {
    let v = http::json(socket, "GET", &format!("/containers/{key}/json"), None, timeout)?;
    Ok(parse_docker_shape(&v["HostConfig"]))
}

fn parse_docker_shape(h: &Value) -> DockerShape {
    let num = |k: &str| h.get(k).and_then(Value::as_i64).unwrap_or(0);
    let cpu = if num("CpuQuota") > 0 || num("CpuPeriod") > 0 { DockerCpu::Quota } else { DockerCpu::Nano };
    let (mem, swap) = (num("Memory"), num("MemorySwap"));
    let swap = match swap {
        s if s > 0 && mem > 0 => DockerSwap::Gap(s.saturating_sub(mem).max(0) as u64),
        _ => DockerSwap::Unlimited,
    };
    DockerShape { cpu, swap }
}

/// The request body that sets `limits` on `engine`. `host_mem` stands for
/// "no memory limit" where the engine cannot remove one (Docker).
pub fn update_body(engine: Engine, limits: Limits, docker: DockerShape, host_mem: u64) -> Value {
    // At least the kernel's 1 ms a period.
    let quota = |mc: Option<u64>| mc.map_or(-1, |m| (m.max(10) * PERIOD_US / 1000) as i64);
    match engine {
        Engine::Docker => {
            let mut b = serde_json::Map::new();
            match (limits.cpu, docker.cpu) {
                (Some(mc), DockerCpu::Quota) => {
                    b.insert("CpuPeriod".into(), json!(PERIOD_US));
                    b.insert("CpuQuota".into(), json!(quota(mc)));
                }
                // No "unlimited" for NanoCpus: all the host's CPUs.
                (Some(mc), DockerCpu::Nano) => {
                    let all = std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000;
                    b.insert("NanoCpus".into(), json!(mc.unwrap_or(all).max(10) * 1_000_000));
                }
                (None, _) => {}
            }
            if let Some(bytes) = limits.mem {
                // Docker cannot take a memory limit away once set.
                let bytes = bytes.unwrap_or(host_mem);
                b.insert("Memory".into(), json!(bytes));
                let swap = match docker.swap {
                    DockerSwap::Unlimited => json!(-1),
                    DockerSwap::Gap(g) => json!(bytes.saturating_add(g)),
                };
                b.insert("MemorySwap".into(), swap);
            }
            Value::Object(b)
        }
        Engine::Podman => {
            let mut b = serde_json::Map::new();
            if let Some(mc) = limits.cpu {
                b.insert("cpu".into(), json!({"quota": quota(mc), "period": PERIOD_US}));
            }
            if let Some(bytes) = limits.mem {
                b.insert("memory".into(), json!({"limit": bytes.map_or(-1, |b| b as i64)}));
            }
            Value::Object(b)
        }
        Engine::Lxd => {
            let mut config = serde_json::Map::new();
            if let Some(mc) = limits.cpu {
                // Whole milliseconds: at least the kernel's 1 ms.
                let v = mc.map_or(String::new(), |m| format!("{}ms/100ms", (m.div_ceil(10)).max(1)));
                config.insert("limits.cpu.allowance".into(), json!(v));
            }
            if let Some(bytes) = limits.mem {
                config.insert("limits.memory".into(), json!(bytes.map_or(String::new(), |b| b.to_string())));
            }
            json!({ "config": config })
        }
    }
}

/// Sets `limits` on the container `key` of `engine`. For Docker the
/// container's shape is read first (once: `docker` keeps it), and a
/// container that refuses one CPU form (409) is retried with the other.
pub fn update(
    engine: Engine,
    socket: &Path,
    key: &str,
    limits: Limits,
    docker: &mut Option<DockerShape>,
    host_mem: u64,
    timeout: Duration,
) -> Result<(), http::CallError> {
    let (method, path) = match engine {
        Engine::Docker => ("POST", format!("/containers/{key}/update")),
        Engine::Podman => ("POST", format!("/v4.0.0/libpod/containers/{key}/update")),
        Engine::Lxd => ("PATCH", format!("/1.0/instances/{key}")),
    };
    if engine == Engine::Docker && docker.is_none() {
        *docker = Some(docker_shape(socket, key, timeout)?);
    }
    let mut shape = docker.unwrap_or_default();
    let body = update_body(engine, limits, shape, host_mem);
    match http::json(socket, method, &path, Some(&body), timeout) {
        Err(http::CallError::Status { status: 409, message, .. })
            if engine == Engine::Docker && limits.cpu.is_some() && message.contains("Conflicting options") =>
        {
            shape.cpu = if shape.cpu == DockerCpu::Nano { DockerCpu::Quota } else { DockerCpu::Nano };
            *docker = Some(shape);
            let body = update_body(engine, limits, shape, host_mem);
            http::json(socket, method, &path, Some(&body), timeout).map(drop)
        }
        r => r.map(drop),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listings_give_names_ids_and_labels() {
        let docker = json!([
            {"Id": "0dd02f0c1387aa", "Names": ["/other/web", "/web"], "Labels": {"app": "shop", "n": 1}},
            {"Names": ["/no-id"]}
        ]);
        let got = parse_docker_list(Engine::Docker, &docker);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].name.as_str(), got[0].id.as_str()), ("web", "0dd02f0c1387aa"));
        assert_eq!(got[0].labels, [("app".to_owned(), "shop".to_owned())].into(), "non-strings are dropped");

        let lxd = json!({"metadata": [
            {"name": "lweb", "type": "container", "config": {"user.app": "shop", "limits.memory": "1"}},
            {"name": "vm1", "type": "virtual-machine", "config": {}},
            {"name": "off", "type": "container", "status": "Stopped", "config": {}}
        ]});
        let got = parse_lxd_list(&lxd);
        assert_eq!(got.len(), 1, "virtual machines and stopped instances have no cgroup here");
        assert_eq!((got[0].name.as_str(), got[0].id.as_str(), got[0].engine.as_str()), ("lweb", "lweb", "lxd"));
        assert_eq!(got[0].labels, [("app".to_owned(), "shop".to_owned())].into());
    }

    #[test]
    fn bodies_say_what_each_engine_stores() {
        let set = Limits { cpu: Some(Some(255)), mem: Some(Some(256 << 20)) };
        let quota = DockerShape { cpu: DockerCpu::Quota, swap: DockerSwap::Unlimited };
        let d = update_body(Engine::Docker, set, quota, 1 << 34);
        assert_eq!(d, json!({"CpuPeriod": 100000, "CpuQuota": 25500, "Memory": 268435456, "MemorySwap": -1}));
        let nano = DockerShape::default();
        let d = update_body(Engine::Docker, Limits { cpu: Some(Some(500)), mem: Some(Some(64 << 20)) }, nano, 0);
        assert_eq!(d, json!({"NanoCpus": 500_000_000u64, "Memory": 67108864, "MemorySwap": -1}), "none set: unlimited");
        let gap = DockerShape { cpu: DockerCpu::Nano, swap: DockerSwap::Gap(32 << 20) };
        let d = update_body(Engine::Docker, Limits { cpu: None, mem: Some(Some(64 << 20)) }, gap, 0);
        assert_eq!(d, json!({"Memory": 67108864, "MemorySwap": 100663296}), "the swap on top is kept");
        let unset = Limits { cpu: Some(None), mem: Some(None) };
        let d = update_body(Engine::Docker, unset, quota, 1 << 34);
        assert_eq!(d, json!({"CpuPeriod": 100000, "CpuQuota": -1, "Memory": 1u64 << 34, "MemorySwap": -1}));
        // Shapes from the configuration.
        let shape = |h: Value| parse_docker_shape(&h);
        assert_eq!(shape(json!({"NanoCpus": 1000000000, "Memory": 0, "MemorySwap": 0})), DockerShape::default());
        assert_eq!(
            shape(json!({"Memory": 64, "MemorySwap": 128})).swap,
            DockerSwap::Gap(64),
            "docker run --memory 64m"
        );
        assert_eq!(shape(json!({"CpuQuota": 50000})).cpu, DockerCpu::Quota);
        assert_eq!(shape(json!({"Memory": 512, "MemorySwap": 1024})).swap, DockerSwap::Gap(512));
        assert_eq!(shape(json!({"Memory": 512, "MemorySwap": -1})).swap, DockerSwap::Unlimited);
        let p = update_body(Engine::Podman, set, DockerShape::default(), 0);
        assert_eq!(p, json!({"cpu": {"quota": 25500, "period": 100000}, "memory": {"limit": 268435456}}));
        let p = update_body(Engine::Podman, unset, DockerShape::default(), 0);
        assert_eq!(p, json!({"cpu": {"quota": -1, "period": 100000}, "memory": {"limit": -1}}));
        let l = update_body(Engine::Lxd, set, DockerShape::default(), 0);
        assert_eq!(l, json!({"config": {"limits.cpu.allowance": "26ms/100ms", "limits.memory": "268435456"}}));
        let l = update_body(Engine::Lxd, Limits { cpu: Some(None), mem: None }, DockerShape::default(), 0);
        assert_eq!(l, json!({"config": {"limits.cpu.allowance": ""}}));
    }
}
