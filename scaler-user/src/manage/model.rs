//! Subscriptions: what the user asked for (bounds, policy, priority), what
//! the agent found and set. Requests arrive as JSON and are validated here,
//! by hand, so every mistake names its field (`resources.cpu.min`).

use std::collections::BTreeMap;

use policies::{BoundaryType, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A validation failure: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

pub fn field_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// The bounds of one managed resource (the planner's type).
pub use policies::planner::Bounds;

/// A managed container, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub name: String,
    pub cgroup: String,
    /// The policy's name.
    pub policy: String,
    /// Its full parameters when the user changed any (`None` = the defaults
    /// of `policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_config: Option<Value>,
    pub priority: u32,
    pub resources: BTreeMap<Resource, Bounds>,
    /// The limit in force as the agent last set or read it (`None` = unlimited).
    pub limits: BTreeMap<Resource, Option<u64>>,
    /// The limits found when the container was first subscribed.
    pub original: BTreeMap<Resource, Option<u64>>,
    /// External ceilings (energy caps).
    pub ceiling: BTreeMap<Resource, u64>,
    /// CPU enforced as a core set as well as a quota (see
    /// [`crate::topology`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpu_placement: bool,
    /// The CPUs placement gave it (empty: none yet, or placement off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u32>,
    /// The cpuset found before placement began, put back when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_cpus: Option<String>,
}

impl Subscription {
    /// Checks a stored record as API input is checked (a state file edited
    /// or damaged by hand must not reach the planner): its name, its cgroup
    /// against `roots`, and every resource's bounds.
    pub fn validate(&self, roots: &[String]) -> Result<(), FieldError> {
        scaler_api::names::validate(&self.name).map_err(|m| field_err("name", m))?;
        check_cgroup_path(&self.cgroup, roots)?;
        for (&r, b) in &self.resources {
            if !MANAGED.contains(&r) {
                return Err(field_err(format!("resources.{r}"), "cannot be managed as a limit"));
            }
            let f = |k: &str| format!("resources.{r}.{k}");
            if b.min > b.max {
                return Err(field_err(f("min"), format!("min ({}) is greater than max ({})", b.min, b.max)));
            }
            if b.max == 0 || b.max > MAX_AMOUNT {
                return Err(field_err(f("max"), format!("{} is not in 1..=2^52", b.max)));
            }
            if b.boundary > 100 {
                return Err(field_err(f("boundary"), format!("{} is not a percentage", b.boundary)));
            }
        }
        Ok(())
    }

    /// The highest limit allowed now: `max`, lowered by a ceiling (never below `min`).
    pub fn effective_max(&self, r: Resource) -> Option<u64> {
        let b = self.resources.get(&r)?;
        Some(b.effective_max(self.ceiling.get(&r).copied()))
    }
}

/// A validated `PUT /v1/containers/{name}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub cgroup: Option<String>,
    pub policy: Option<String>,
    /// Full parameters when the request gave an object.
    pub policy_config: Option<Value>,
    pub priority: u32,
    pub resources: BTreeMap<Resource, ResourceRequest>,
    /// CPU as a core set too (`None`: the host's `agent.cpu_placement`).
    pub cpu_placement: Option<bool>,
}

/// One resource of a request: bounds plus an optional starting limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceRequest {
    pub bounds: Bounds,
    pub current: Option<u64>,
}

/// A validated partial update of one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourcePatch {
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub current: Option<u64>,
    pub guard: Option<bool>,
    pub boundary: Option<u8>,
    pub boundary_type: Option<BoundaryType>,
}

/// The resources a subscription may manage (energy is not a limit).
pub const MANAGED: [Resource; 6] =
    [Resource::Cpu, Resource::Mem, Resource::DiskRead, Resource::DiskWrite, Resource::NetRx, Resource::NetTx];

pub fn parse_resource(field: &str, name: &str) -> Result<Resource, FieldError> {
    let r: Resource = name.parse().map_err(|_| {
        field_err(field, format!("unknown resource {name:?}; one of cpu, mem, disk_read, disk_write, net_rx, net_tx"))
    })?;
    if !MANAGED.contains(&r) {
        return Err(field_err(field, format!("{name} cannot be managed as a limit")));
    }
    Ok(r)
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a serde_json::Map<String, Value>, FieldError> {
    v.as_object().ok_or_else(|| field_err(field, "must be a JSON object"))
}

pub(crate) fn check_keys(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    allowed: &[&str],
) -> Result<(), FieldError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(field_err(join(field, k), format!("unknown field; allowed: {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

/// The largest amount accepted anywhere (2^52, what the policies compute
/// with exactly): far above any real host (4 PiB, 4.5e12 cores), and sums of
/// thousands of such amounts cannot overflow.
pub const MAX_AMOUNT: u64 = policies::resource::MAX_AMOUNT;

/// A non-negative integer (JSON number without fraction) of at most
/// [`MAX_AMOUNT`].
pub fn uint(v: &Value, field: &str) -> Result<u64, FieldError> {
    if let Some(u) = v.as_u64() {
        if u > MAX_AMOUNT {
            return Err(field_err(field, format!("{u} is above the largest accepted amount, 2^52")));
        }
        return Ok(u);
    }
    match v.as_i64() {
        Some(i) if i < 0 => Err(field_err(field, format!("must not be negative (got {i})"))),
        _ => Err(field_err(field, format!("must be a non-negative integer (got {v})"))),
    }
}

fn opt_uint(obj: &serde_json::Map<String, Value>, field: &str, key: &str) -> Result<Option<u64>, FieldError> {
    obj.get(key).filter(|v| !v.is_null()).map(|v| uint(v, &join(field, key))).transpose()
}

fn opt_bool(obj: &serde_json::Map<String, Value>, field: &str, key: &str) -> Result<Option<bool>, FieldError> {
    obj.get(key)
        .filter(|v| !v.is_null())
        .map(|v| v.as_bool().ok_or_else(|| field_err(join(field, key), "must be true or false")))
        .transpose()
}

fn opt_boundary_type(obj: &serde_json::Map<String, Value>, field: &str) -> Result<Option<BoundaryType>, FieldError> {
    obj.get("boundary_type")
        .filter(|v| !v.is_null())
        .map(|v| {
            serde_json::from_value(v.clone()).map_err(|_| {
                field_err(join(field, "boundary_type"), "must be \"percent_of_max\" or \"percent_of_current\"")
            })
        })
        .transpose()
}

const RESOURCE_KEYS: [&str; 6] = ["min", "max", "current", "guard", "boundary", "boundary_type"];

/// Parses a resource patch object (all fields optional).
pub fn parse_patch(v: &Value, field: &str) -> Result<ResourcePatch, FieldError> {
    let obj = object(v, field)?;
    check_keys(obj, field, &RESOURCE_KEYS)?;
    let boundary = opt_uint(obj, field, "boundary")?;
    if let Some(b) = boundary
        && b > 100
    {
        return Err(field_err(join(field, "boundary"), format!("must be a percentage in 0..=100 (got {b})")));
    }
    Ok(ResourcePatch {
        min: opt_uint(obj, field, "min")?,
        max: opt_uint(obj, field, "max")?,
        current: opt_uint(obj, field, "current")?,
        guard: opt_bool(obj, field, "guard")?,
        boundary: boundary.map(|b| b as u8),
        boundary_type: opt_boundary_type(obj, field)?,
    })
}

/// Applies a patch to bounds (or to defaults when the resource is new, in
/// which case `min` and `max` are required) and checks `min <= max`.
pub fn patched(old: Option<Bounds>, p: &ResourcePatch, field: &str) -> Result<Bounds, FieldError> {
    let (min, max) = match old {
        Some(o) => (p.min.unwrap_or(o.min), p.max.unwrap_or(o.max)),
        None => (
            p.min.ok_or_else(|| field_err(join(field, "min"), "required"))?,
            p.max.ok_or_else(|| field_err(join(field, "max"), "required"))?,
        ),
    };
    if min > max {
        return Err(field_err(join(field, "min"), format!("min ({min}) is greater than max ({max})")));
    }
    if max == 0 {
        return Err(field_err(join(field, "max"), "must be greater than 0"));
    }
    if let Some(c) = p.current
        && !(min..=max).contains(&c)
    {
        return Err(field_err(join(field, "current"), format!("{c} is outside [min {min}, max {max}]")));
    }
    Ok(Bounds {
        min,
        max,
        guard: p.guard.or(old.map(|o| o.guard)).unwrap_or(true),
        boundary: p.boundary.or(old.map(|o| o.boundary)).unwrap_or(25),
        boundary_type: p.boundary_type.or(old.map(|o| o.boundary_type)).unwrap_or(BoundaryType::PercentOfMax),
    })
}

/// Parses and validates a subscription body.
pub fn parse_subscribe(v: &Value) -> Result<SubscribeRequest, FieldError> {
    let obj = object(v, "body")?;
    check_keys(obj, "", &["cgroup", "policy", "priority", "guard", "resources", "cpu_placement"])?;
    // `"guard": false` subscribes every resource unguarded (observe only)
    // unless the resource says otherwise.
    let guard = opt_bool(obj, "", "guard")?;
    let cgroup = match obj.get("cgroup").filter(|v| !v.is_null()) {
        Some(v) => Some(v.as_str().ok_or_else(|| field_err("cgroup", "must be a string"))?.to_owned()),
        None => None,
    };
    let (policy, policy_config) = match obj.get("policy").filter(|v| !v.is_null()) {
        Some(v) => {
            let (name, config) = parse_policy(v)?;
            (Some(name), config)
        }
        None => (None, None),
    };
    let priority = match obj.get("priority").filter(|v| !v.is_null()) {
        Some(v) => u32::try_from(uint(v, "priority")?).map_err(|_| field_err("priority", "too large"))?,
        None => 0,
    };
    let res = object(obj.get("resources").ok_or_else(|| field_err("resources", "required"))?, "resources")?;
    if res.is_empty() {
        return Err(field_err("resources", "name at least one resource to manage"));
    }
    let mut resources = BTreeMap::new();
    for (name, spec) in res {
        let field = format!("resources.{name}");
        let r = parse_resource(&field, name)?;
        let mut patch = parse_patch(spec, &field)?;
        patch.guard = patch.guard.or(guard);
        let bounds = patched(None, &patch, &field)?;
        resources.insert(r, ResourceRequest { bounds, current: patch.current });
    }
    let cpu_placement = opt_bool(obj, "", "cpu_placement")?;
    if cpu_placement == Some(true) && !resources.contains_key(&Resource::Cpu) {
        return Err(field_err("cpu_placement", "needs cpu among the resources (the core set follows the CPU limit)"));
    }
    Ok(SubscribeRequest { cgroup, policy, policy_config, priority, resources, cpu_placement })
}

/// A validated `PUT /v1/containers/{name}/guard` body: the guard, and the
/// resources it is for (`None`: all the container's).
pub fn parse_guard(v: &Value) -> Result<(bool, Option<Vec<Resource>>), FieldError> {
    let obj = object(v, "body")?;
    check_keys(obj, "", &["guard", "resources"])?;
    let guard = opt_bool(obj, "", "guard")?.ok_or_else(|| field_err("guard", "required: true or false"))?;
    let resources = match obj.get("resources").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => {
            let list = v.as_array().ok_or_else(|| field_err("resources", "must be a list like [\"cpu\", \"mem\"]"))?;
            let mut out = Vec::new();
            for (i, x) in list.iter().enumerate() {
                let field = format!("resources[{i}]");
                let name = x.as_str().ok_or_else(|| field_err(&field, "must be a resource name"))?;
                out.push(parse_resource(&field, name)?);
            }
            Some(out)
        }
    };
    Ok((guard, resources))
}

/// Overlays `over` on `base`: objects merge key by key, anything else replaces.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// A policy given as a name (`"fast"`) or as an object with a `name` and
/// any parameters to change (`{"name": "fast", "mem": {"lookback_ms": 10000}}`):
/// the object is laid over the named preset and must then be valid.
pub fn parse_policy(v: &Value) -> Result<(String, Option<Value>), FieldError> {
    let name = match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| field_err("policy.name", "required when policy is an object"))?
            .to_owned(),
        _ => return Err(field_err("policy", "must be a name or an object with a name")),
    };
    let preset = policies::PolicyConfig::by_name(&name).map_err(|e| field_err("policy", e.to_string()))?;
    let Value::Object(_) = v else { return Ok((name, None)) };
    let mut full = serde_json::to_value(&preset).map_err(|e| field_err("policy", e.to_string()))?;
    let mut over = v.clone();
    // The preset's own tag (e.g. "classic" for "classic-defaults") stays.
    if let Value::Object(o) = &mut over {
        o.remove("name");
    }
    merge(&mut full, &over);
    let config: policies::PolicyConfig =
        serde_json::from_value(full.clone()).map_err(|e| field_err("policy", e.to_string()))?;
    config.validate().map_err(|e| field_err("policy", e.to_string()))?;
    Ok((name, Some(full)))
}

/// Validates a cgroup path given by a user: absolute, no `..`, no empty or
/// `.` segments, below one of `roots`.
pub fn check_cgroup_path(path: &str, roots: &[String]) -> Result<String, FieldError> {
    if !path.starts_with('/') {
        return Err(field_err("cgroup", format!("{path:?} must be absolute (start with /)")));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(field_err("cgroup", "the root cgroup cannot be managed"));
    }
    if trimmed[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(field_err("cgroup", format!("{path:?} must not contain empty, . or .. segments")));
    }
    let inside = roots.iter().any(|r| {
        let r = r.trim_end_matches('/');
        r.is_empty() || trimmed == r || trimmed.starts_with(&format!("{r}/"))
    });
    if !inside {
        return Err(field_err("cgroup", format!("{path:?} is outside the allowed roots {roots:?}")));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> FieldError {
        parse_subscribe(&v).unwrap_err()
    }

    #[test]
    fn a_full_request() {
        let r = parse_subscribe(&json!({
            "cgroup": "/lxc.payload.a", "policy": "classic", "priority": 3,
            "resources": {"cpu": {"min": 100, "max": 2000, "current": 500, "guard": false, "boundary": 10,
                                  "boundary_type": "percent_of_current"},
                          "mem": {"min": 1, "max": 2}}
        }))
        .unwrap();
        assert_eq!(r.priority, 3);
        let cpu = r.resources[&Resource::Cpu];
        assert_eq!((cpu.bounds.min, cpu.bounds.max, cpu.current, cpu.bounds.guard), (100, 2000, Some(500), false));
        assert_eq!(cpu.bounds.boundary_type, BoundaryType::PercentOfCurrent);
        let mem = r.resources[&Resource::Mem];
        assert_eq!((mem.bounds.guard, mem.bounds.boundary), (true, 25));
    }

    #[test]
    fn every_mistake_names_its_field() {
        let cases = [
            (json!({"resources": {"cpu": {"min": 5, "max": 1}}}), "resources.cpu.min"),
            (json!({"resources": {"cpu": {"min": -5, "max": 1}}}), "resources.cpu.min"),
            (json!({"resources": {"cpu": {"min": 1.5, "max": 3}}}), "resources.cpu.min"),
            (json!({"resources": {"cpu": {"max": 3}}}), "resources.cpu.min"),
            (json!({"resources": {"cpu": {"min": 1}}}), "resources.cpu.max"),
            (json!({"resources": {"gpu": {"min": 1, "max": 2}}}), "resources.gpu"),
            (json!({"resources": {"energy": {"min": 1, "max": 2}}}), "resources.energy"),
            (json!({"resources": {"cpu": {"min": 1, "max": 2, "current": 3}}}), "resources.cpu.current"),
            (json!({"resources": {"cpu": {"min": 1, "max": 2, "boundary": 101}}}), "resources.cpu.boundary"),
            (json!({"resources": {"cpu": {"min": 1, "max": 2, "boundary_type": "x"}}}), "resources.cpu.boundary_type"),
            (json!({"resources": {"cpu": {"min": 1, "max": 2, "guard": "yes"}}}), "resources.cpu.guard"),
            (json!({"resources": {"cpu": {"min": 1, "max": 2, "maxx": 3}}}), "resources.cpu.maxx"),
            (json!({"resources": {"cpu": {"min": 0, "max": 0}}}), "resources.cpu.max"),
            (json!({"resources": {}}), "resources"),
            (json!({}), "resources"),
            (json!({"policy": "nope", "resources": {"cpu": {"min": 1, "max": 2}}}), "policy"),
            (json!({"priority": -1, "resources": {"cpu": {"min": 1, "max": 2}}}), "priority"),
            (json!({"cgroup": 5, "resources": {"cpu": {"min": 1, "max": 2}}}), "cgroup"),
            (json!({"resources": {"net_tx": {"min": 1, "max": u64::MAX}}}), "resources.net_tx.max"),
            (json!({"bogus": 1, "resources": {"cpu": {"min": 1, "max": 2}}}), "bogus"),
            (json!([1, 2]), "body"),
        ];
        for (body, field) in cases {
            assert_eq!(err(body.clone()).field, field, "{body}");
        }
    }

    #[test]
    fn policy_objects_override_preset_parameters() {
        let (name, cfg) = parse_policy(&json!({"name": "fast", "mem": {"lookback_ms": 10000}})).unwrap();
        assert_eq!(name, "fast");
        let cfg = cfg.unwrap();
        assert_eq!(cfg["mem"]["lookback_ms"], 10000);
        assert_eq!(cfg["mem"]["percentile"], 100, "the rest keeps the preset");
        assert!(serde_json::from_value::<policies::PolicyConfig>(cfg).unwrap().build().is_ok());
        assert_eq!(parse_policy(&json!("classic")).unwrap(), ("classic".into(), None));
        assert_eq!(parse_policy(&json!({"mem": {}})).unwrap_err().field, "policy.name");
        assert_eq!(parse_policy(&json!({"name": "fast", "mem": {"bogus": 1}})).unwrap_err().field, "policy");
        assert_eq!(parse_policy(&json!({"name": "fast", "mem": {"up_threshold_pct": 0}})).unwrap_err().field, "policy");
        assert_eq!(parse_policy(&json!(5)).unwrap_err().field, "policy");
    }

    #[test]
    fn patches_keep_what_they_do_not_name() {
        let old = Bounds { min: 10, max: 100, guard: true, boundary: 25, boundary_type: BoundaryType::PercentOfMax };
        let p = parse_patch(&json!({"max": 50, "guard": false}), "x").unwrap();
        let b = patched(Some(old), &p, "x").unwrap();
        assert_eq!((b.min, b.max, b.guard, b.boundary), (10, 50, false, 25));
        let p = parse_patch(&json!({"min": 160}), "x").unwrap();
        assert_eq!(patched(Some(old), &p, "x").unwrap_err().field, "x.min");
    }

    #[test]
    fn cgroup_paths() {
        let roots = vec!["/lxc.payload.a".to_owned(), "/machines".to_owned()];
        assert_eq!(check_cgroup_path("/machines/web/", &roots).unwrap(), "/machines/web");
        assert!(check_cgroup_path("/machines", &roots).is_ok());
        for bad in ["machines/web", "/machines/../etc", "/machines//x", "/machinesX/y", "/", "/other"] {
            assert!(check_cgroup_path(bad, &roots).is_err(), "{bad}");
        }
        assert!(check_cgroup_path("/anything", &["/".to_owned()]).is_ok());
    }

    #[test]
    fn ceilings_lower_the_effective_max_but_not_below_min() {
        let mut s = Subscription {
            name: "a".into(),
            cgroup: "/a".into(),
            policy: "fast".into(),
            policy_config: None,
            priority: 0,
            resources: BTreeMap::new(),
            limits: BTreeMap::new(),
            original: BTreeMap::new(),
            ceiling: BTreeMap::new(),
            cpu_placement: false,
            cpus: Vec::new(),
            original_cpus: None,
        };
        s.resources.insert(
            Resource::Cpu,
            Bounds { min: 100, max: 2000, guard: true, boundary: 25, boundary_type: BoundaryType::PercentOfMax },
        );
        assert_eq!(s.effective_max(Resource::Cpu), Some(2000));
        s.ceiling.insert(Resource::Cpu, 800);
        assert_eq!(s.effective_max(Resource::Cpu), Some(800));
        s.ceiling.insert(Resource::Cpu, 10);
        assert_eq!(s.effective_max(Resource::Cpu), Some(100));
        assert_eq!(s.effective_max(Resource::Mem), None);
    }

    #[test]
    fn guard_bodies_and_an_unguarded_subscription() {
        assert_eq!(parse_guard(&json!({"guard": false})).unwrap(), (false, None));
        assert_eq!(
            parse_guard(&json!({"guard": true, "resources": ["cpu", "mem"]})).unwrap(),
            (true, Some(vec![Resource::Cpu, Resource::Mem]))
        );
        for (body, field) in [
            (json!({}), "guard"),
            (json!({"guard": "no"}), "guard"),
            (json!({"guard": false, "resources": "cpu"}), "resources"),
            (json!({"guard": false, "resources": ["gpu"]}), "resources[0]"),
            (json!({"guard": false, "extra": 1}), "extra"),
        ] {
            assert_eq!(parse_guard(&body).unwrap_err().field, field, "{body}");
        }
        let r = parse_subscribe(&json!({"guard": false, "resources": {"cpu": {"min": 100, "max": 200},
                                                                      "mem": {"min": 1, "max": 2, "guard": true}}}))
        .unwrap();
        assert!(!r.resources[&Resource::Cpu].bounds.guard, "observe only");
        assert!(r.resources[&Resource::Mem].bounds.guard, "a resource's own guard wins");
    }
}
