//! Limits set directly, without a policy (`PUT /v1/containers/{name}/limits`,
//! `scaler set-limit`): what the original's node service did. They are
//! written at once, logged, kept in the state database, counted in what
//! the host has allocated, and held out of what the policies share.

use std::collections::BTreeMap;

use policies::Resource;
use serde_json::Value;

use super::{
    CPU_MIN_LIMIT, Found, MEM_MIN_LIMIT, ManageError, Manager,
    model::{self, field_err},
};

const KEY: &str = "direct_limits";

/// Direct limits per cgroup.
pub(super) type Direct = BTreeMap<String, BTreeMap<Resource, u64>>;

/// What was set on one container.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirectView {
    pub name: String,
    pub cgroup: String,
    /// The limits set directly and in force (`null` ones were removed).
    pub limits: BTreeMap<Resource, Option<u64>>,
}

/// `{"cpu": 500, "mem": null}`: the resources to set (`None` = remove the
/// limit).
pub fn parse(body: &Value) -> Result<BTreeMap<Resource, Option<u64>>, model::FieldError> {
    let obj = body.as_object().ok_or_else(|| field_err("body", "must be an object like {\"cpu\": 500}"))?;
    if obj.is_empty() {
        return Err(field_err("body", "name at least one resource"));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let r = model::parse_resource(k, k)?;
        out.insert(r, if v.is_null() { None } else { Some(model::uint(v, k)?) });
    }
    Ok(out)
}

impl Manager {
    pub(super) fn load_direct(&mut self) -> Result<(), ManageError> {
        self.direct = self.store.setting(KEY)?.unwrap_or_default();
        Ok(())
    }

    /// Sum of the direct limits of `r` on cgroups other than `except`.
    pub(crate) fn direct_total(&self, r: Resource, except: &str) -> u64 {
        self.direct
            .iter()
            .filter(|(cg, _)| *cg != except)
            .filter_map(|(_, l)| l.get(&r))
            .fold(0, |a, &b| a.saturating_add(b))
    }

    /// The direct limits of `cgroup`.
    pub fn direct_of(&self, cgroup: &str) -> BTreeMap<Resource, u64> {
        self.direct.get(cgroup).cloned().unwrap_or_default()
    }

    /// Sets limits of container `name` (cgroup `cgroup`) directly. Refused
    /// for a resource its subscription manages (its policy sets it), below
    /// the kernel's smallest limit or the memory in use, or beyond what
    /// the host has left beside the managed containers and other direct
    /// limits. All or nothing: a failed write puts back what was written.
    pub fn set_direct(
        &mut self,
        now_ms: u64,
        name: &str,
        cgroup: &str,
        want: &BTreeMap<Resource, Option<u64>>,
        found: &Found,
    ) -> Result<DirectView, ManageError> {
        if let Some(own) = self.own_cgroups.iter().find(|o| *o == cgroup || o.starts_with(&format!("{cgroup}/"))) {
            return Err(ManageError::Forbidden {
                field: "name".into(),
                message: format!("the agent itself runs in {own}: a limit on {cgroup} would limit the agent"),
            });
        }
        let managed = self.subs.values().find(|m| m.sub.cgroup == cgroup);
        for (&r, &v) in want {
            let field = r.name();
            if managed.is_some_and(|m| m.sub.resources.contains_key(&r)) {
                return Err(ManageError::Conflict {
                    field: field.into(),
                    message: format!(
                        "{name:?} is subscribed with {r}: its subscription holds that limit (set its current with PUT /v1/containers/{name}/resources/{r}, guarded or not)"
                    ),
                });
            }
            let Some(v) = v else { continue };
            match r {
                Resource::Cpu if v < CPU_MIN_LIMIT => {
                    return Err(field_err(
                        field,
                        format!("{v} is below the kernel's smallest CPU limit, {CPU_MIN_LIMIT} millicores"),
                    )
                    .into());
                }
                Resource::Mem if v < MEM_MIN_LIMIT => {
                    return Err(field_err(field, format!("{v} is below the smallest memory limit, 4 MiB")).into());
                }
                Resource::Mem if found.mem_usage.is_some_and(|u| v < u) => {
                    return Err(field_err(
                        field,
                        format!("{v} is below the memory the container uses ({} bytes)", found.mem_usage.unwrap_or(0)),
                    )
                    .into());
                }
                _ => {}
            }
            if let Some(Some(cap)) = self.capacity.get(&r) {
                let managed_total = self.limits_of_others(r, name);
                let direct_total = self.direct_total(r, cgroup);
                let left = cap.saturating_sub(managed_total).saturating_sub(direct_total);
                if v > left {
                    return Err(field_err(
                        field,
                        format!(
                            "{v} is more than the host has left: it offers {cap}, managed containers hold {managed_total} and other direct limits {direct_total}"
                        ),
                    )
                    .into());
                }
            }
        }
        // The record first: a store that fails changes nothing in the kernel.
        let mut direct = self.direct.clone();
        let entry = direct.entry(cgroup.to_owned()).or_default();
        let mut changes = Vec::with_capacity(want.len());
        for (&r, &v) in want {
            let old = found.limits.get(&r).copied().flatten().or_else(|| entry.get(&r).copied());
            match v {
                Some(v) => entry.insert(r, v),
                None => entry.remove(&r),
            };
            changes.push((r, old, v));
        }
        if entry.is_empty() {
            direct.remove(cgroup);
        }
        self.store.set_setting(KEY, &direct)?;
        let mut written: Vec<Resource> = Vec::new();
        for (&r, &v) in want {
            if let Err(e) = self.act.apply(cgroup, r, v) {
                for r in written.into_iter().rev() {
                    let old = found.limits.get(&r).copied().flatten();
                    if let Err(e) = self.act.apply(cgroup, r, old) {
                        tracing::warn!(container = name, "putting {r} back: {e}");
                    }
                }
                if let Err(e) = self.store.set_setting(KEY, &self.direct) {
                    tracing::error!("putting the direct limits' record back: {e}");
                }
                return Err(ManageError::Apply(e.to_string()));
            }
            written.push(r);
        }
        for (r, old, v) in changes {
            self.events.push(now_ms, name, r, old, v, "set directly (no policy)".into());
        }
        self.direct = direct;
        self.flush_events();
        Ok(DirectView { name: name.to_owned(), cgroup: cgroup.to_owned(), limits: want.clone() })
    }

    /// A subscription takes over the resources it manages: their direct
    /// records go (the limits stay as they are until the policy acts).
    pub(super) fn drop_direct(&mut self, cgroup: &str, resources: impl Iterator<Item = Resource>) {
        let Some(entry) = self.direct.get_mut(cgroup) else { return };
        let before = entry.len();
        for r in resources {
            entry.remove(&r);
        }
        if entry.len() == before {
            return;
        }
        if entry.is_empty() {
            self.direct.remove(cgroup);
        }
        if let Err(e) = self.store.set_setting(KEY, &self.direct) {
            tracing::error!("saving direct limits: {e}");
        }
    }
}
