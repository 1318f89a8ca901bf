//! Policies changed while they run: a subscription's rules and parameters
//! (`GET/PUT /v1/containers/{name}/policy`) and the host-wide parameters of
//! each preset (`GET /v1/policies`, `PUT /v1/policies/{preset}`), applied
//! from the next tick without losing what the policy has learnt (its
//! pending events, its samples) and kept in the state database.

use std::collections::BTreeMap;

use policies::{POLICY_NAMES, PolicyConfig};
use serde_json::Value;

use super::{
    ManageError, Manager,
    model::{self, FieldError, field_err},
};

const KEY: &str = "policy_defaults";

/// A policy's parameters as the API shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyView {
    /// The preset name (`classic`, `classic-defaults`, `follow`...).
    pub name: String,
    /// Every parameter in force.
    pub config: Value,
    /// Where they come from: `subscription` (its own), `host` (this host's
    /// parameters for the preset, `PUT /v1/policies/{name}`) or `preset`.
    pub source: &'static str,
}

/// One policy's parameters, a mistake naming its field
/// (`rules.cpu.up.events`).
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        field_err(field.clone(), format!("{field}: {}", e.into_inner()))
    })
}

/// A full configuration (tagged with its `name`) parsed and checked.
fn config_of(v: &Value) -> Result<PolicyConfig, FieldError> {
    // Serde cannot say where inside a tagged enum a mistake is: the
    // variant's own type is parsed for that.
    let mut inner = v.clone();
    let name = inner.as_object_mut().and_then(|o| o.remove("name")).and_then(|n| n.as_str().map(str::to_owned));
    let cfg = match name.as_deref() {
        Some("classic" | "classic-deployed") => PolicyConfig::Classic(typed(inner)?),
        Some("fast") => PolicyConfig::Fast(typed(inner)?),
        Some("follow") => PolicyConfig::Follow(typed(inner)?),
        Some("vpa") => PolicyConfig::Vpa(typed(inner)?),
        _ => serde_json::from_value(v.clone()).map_err(|e| field_err("policy", e.to_string()))?,
    };
    cfg.validate().map_err(|e| match &e {
        policies::ConfigError::InvalidParameter { field, .. } => field_err(field.clone(), e.to_string()),
        _ => field_err("policy", e.to_string()),
    })?;
    Ok(cfg)
}

/// `old -> new` for every leaf that differs, with its dotted path.
fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &p, out);
            }
        }
        _ if a != b => out.push(format!("{path} {a} -> {b}")),
        _ => {}
    }
}

/// `over` laid over `base` (a full configuration); `name` in `over`, if
/// any, must not change the policy.
fn overlay(base: &Value, over: &Value, field: &str) -> Result<Value, FieldError> {
    let Value::Object(o) = over else {
        return Err(field_err(field, "must be an object of parameters to change"));
    };
    let mut over = Value::Object(o.clone());
    if let Value::Object(o) = &mut over {
        o.remove("name");
    }
    let mut full = base.clone();
    model::merge(&mut full, &over);
    config_of(&full).map_err(|e| if e.field == "policy" { field_err(field, e.message) } else { e })?;
    Ok(full)
}

impl Manager {
    /// Loads this host's parameters of each preset (at open).
    pub(super) fn load_policy_defaults(&mut self) -> Result<(), ManageError> {
        self.policy_defaults = self.store.setting(KEY)?.unwrap_or_default();
        Ok(())
    }

    /// The parameters a subscription of `preset` with its own `own` (if
    /// any) runs with, and where they come from.
    pub(super) fn resolve_policy(&self, preset: &str, own: Option<&Value>) -> Result<PolicyView, FieldError> {
        let (config, source) = match (own, self.policy_defaults.get(preset)) {
            (Some(v), _) => (v.clone(), "subscription"),
            (None, Some(v)) => (v.clone(), "host"),
            (None, None) => {
                let cfg = PolicyConfig::by_name(preset).map_err(|e| field_err("policy", e.to_string()))?;
                (serde_json::to_value(cfg).map_err(|e| field_err("policy", e.to_string()))?, "preset")
            }
        };
        Ok(PolicyView { name: preset.to_owned(), config, source })
    }

    /// A fresh policy object for a subscription.
    pub(super) fn build(&self, preset: &str, own: Option<&Value>) -> Result<Box<dyn policies::Policy>, FieldError> {
        let v = self.resolve_policy(preset, own)?;
        config_of(&v.config)?.build().map_err(|e| field_err("policy", e.to_string()))
    }

    /// The policy of subscription `name`.
    pub fn policy_of(&self, name: &str) -> Result<PolicyView, ManageError> {
        let m = self.subs.get(name).ok_or_else(|| ManageError::NotFound(format!("{name:?} is not subscribed")))?;
        Ok(self.resolve_policy(&m.sub.policy, m.sub.policy_config.as_ref())?)
    }

    /// Changes the policy of subscription `name`: an object of parameters
    /// laid over those in force (`{"rules": {"cpu": {"up": {"amount":
    /// {"fixed": 1000}}}}}`) keeps the policy's state; a different `name`
    /// (or a bare name) starts that policy afresh. Logged in the events.
    pub fn set_policy(&mut self, now_ms: u64, name: &str, body: &Value) -> Result<PolicyView, ManageError> {
        let cur = self.policy_of(name)?;
        let new_name = match body {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => match o.get("name") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(field_err("name", "must be a policy name").into()),
            },
            _ => return Err(field_err("body", "must be a policy name or an object of parameters").into()),
        };
        // Its own name, or the tag its configuration carries (`classic` for
        // `classic-deployed`), keeps the policy and its state.
        let switch = new_name.as_deref().is_some_and(|n| n != cur.name && Some(n) != cur.config["name"].as_str());
        let (preset, full) = if switch {
            let (preset, own) = model::parse_policy(body)?;
            let full = match own {
                Some(v) => v,
                None => self.resolve_policy(&preset, None)?.config,
            };
            (preset, full)
        } else {
            let over = if body.is_string() { Value::Object(Default::default()) } else { body.clone() };
            (cur.name.clone(), overlay(&cur.config, &over, "policy")?)
        };
        let cfg = config_of(&full)?;
        let mut changed = Vec::new();
        diff(&cur.config, &full, "", &mut changed);
        if !switch && changed.is_empty() {
            return Ok(cur);
        }
        let m = self.subs.get_mut(name).ok_or_else(|| ManageError::NotFound(format!("{name:?} is not subscribed")))?;
        let mut sub = m.sub.clone();
        sub.policy = preset.clone();
        sub.policy_config = Some(full);
        self.store.save(&[&sub], &[])?;
        m.sub = sub;
        let reason = if switch {
            self.planner.insert(name, cfg.build().map_err(|e| field_err("policy", e.to_string()))?);
            m.since_ms = now_ms;
            format!("policy {} -> {preset} (it starts afresh)", cur.name)
        } else {
            let kept = self.planner.reconfigure(name, &cfg).map_err(|e| field_err("policy", e.to_string()))?;
            let state = if kept { "its state and pending events kept" } else { "it starts afresh" };
            format!("policy {preset}: {} ({state})", changed.join(", "))
        };
        self.events.push_config(now_ms, name, reason);
        self.flush_events();
        self.policy_of(name)
    }

    /// This host's parameters of every preset.
    pub fn policy_defaults(&self) -> Result<Vec<PolicyView>, ManageError> {
        Ok(POLICY_NAMES.iter().map(|n| self.resolve_policy(n, None)).collect::<Result<_, _>>()?)
    }

    /// Changes this host's parameters of `preset` (an object laid over
    /// them; `null` puts the preset's own back). Subscriptions of that
    /// preset without parameters of their own take them from the next
    /// tick, keeping their state.
    pub fn set_policy_default(&mut self, now_ms: u64, preset: &str, body: &Value) -> Result<PolicyView, ManageError> {
        if !POLICY_NAMES.contains(&preset) {
            return Err(ManageError::NotFound(format!("no policy {preset:?}; one of {}", POLICY_NAMES.join(", "))));
        }
        let cur = self.resolve_policy(preset, None)?;
        let mut defaults = self.policy_defaults.clone();
        if body.is_null() {
            defaults.remove(preset);
        } else {
            let base =
                serde_json::to_value(PolicyConfig::by_name(preset).map_err(|e| field_err("policy", e.to_string()))?)
                    .map_err(|e| field_err("policy", e.to_string()))?;
            let base = defaults.get(preset).cloned().unwrap_or(base);
            defaults.insert(preset.to_owned(), overlay(&base, body, "body")?);
        }
        self.store.set_setting(KEY, &defaults)?;
        self.policy_defaults = defaults;
        let new = self.resolve_policy(preset, None)?;
        let mut changed = Vec::new();
        diff(&cur.config, &new.config, "", &mut changed);
        if changed.is_empty() {
            return Ok(new);
        }
        let cfg = config_of(&new.config)?;
        let users: Vec<String> = self
            .subs
            .values()
            .filter(|m| m.sub.policy == preset && m.sub.policy_config.is_none())
            .map(|m| m.sub.name.clone())
            .collect();
        for n in &users {
            self.planner.reconfigure(n, &cfg).map_err(|e| field_err("policy", e.to_string()))?;
        }
        let reason = format!("host policy {preset}: {} ({} subscriptions follow)", changed.join(", "), users.len());
        self.events.push_config(now_ms, "", reason);
        self.flush_events();
        Ok(new)
    }
}

/// Presets by name, for the `policy_defaults` field's type.
pub(super) type Defaults = BTreeMap<String, Value>;
