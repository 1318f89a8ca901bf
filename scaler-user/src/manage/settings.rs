//! The agent's own timing and its active switch, changed at run time
//! (`GET/PUT /v1/agent`) and kept in the state database as overrides of
//! the configuration: what was never set through the API keeps following
//! the config file.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ManageError, Manager,
    model::{check_keys, field_err},
};

/// The settings in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// Sampling and decision period, ms.
    pub tick_ms: u64,
    /// How often discovery walks the cgroup trees without kernel events, ms.
    pub discovery_interval_ms: u64,
    /// `false`: containers stay watched and their policies keep observing
    /// (pending events and all), but no limit is changed.
    pub active: bool,
}

/// What was set through the API.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Overrides {
    tick_ms: Option<u64>,
    discovery_interval_ms: Option<u64>,
    active: Option<bool>,
}

impl Overrides {
    fn over(self, base: AgentSettings) -> AgentSettings {
        AgentSettings {
            tick_ms: self.tick_ms.unwrap_or(base.tick_ms),
            discovery_interval_ms: self.discovery_interval_ms.unwrap_or(base.discovery_interval_ms),
            active: self.active.unwrap_or(base.active),
        }
    }
}

const KEY: &str = "agent_settings";

/// The limits the config file has too (`agent.tick_ms`,
/// `agent.discovery_interval_ms`).
pub fn check(s: &AgentSettings) -> Result<(), super::model::FieldError> {
    if !(10..=60_000).contains(&s.tick_ms) {
        return Err(field_err("tick_ms", format!("{} is outside 10..=60000", s.tick_ms)));
    }
    if s.discovery_interval_ms < s.tick_ms || s.discovery_interval_ms > 3_600_000 {
        return Err(field_err(
            "discovery_interval_ms",
            format!("{} must be between tick_ms ({}) and 3600000", s.discovery_interval_ms, s.tick_ms),
        ));
    }
    Ok(())
}

impl Manager {
    /// Starts from the configuration's settings, with what was set through
    /// the API laid over them.
    pub fn with_settings(mut self, config: AgentSettings) -> Result<Self, ManageError> {
        self.config_settings = config;
        let stored: Overrides = self.store.setting(KEY)?.unwrap_or_default();
        let merged = stored.over(config);
        // A stored override that no longer fits the config (say a tick
        // above a discovery interval lowered since) is dropped, not fatal.
        self.settings = if check(&merged).is_ok() {
            merged
        } else {
            tracing::warn!("stored agent settings no longer fit the configuration: dropped");
            self.store.set_setting(KEY, &Overrides::default())?;
            config
        };
        Ok(self)
    }

    /// The settings in force.
    pub fn settings(&self) -> AgentSettings {
        self.settings
    }

    /// Changes some settings (`{"tick_ms": 100, "active": false}`),
    /// applied from the next tick, stored, and logged in the events.
    pub fn set_settings(&mut self, now_ms: u64, body: &Value) -> Result<AgentSettings, ManageError> {
        let obj = body.as_object().ok_or_else(|| field_err("body", "must be a JSON object"))?;
        check_keys(obj, "", &["tick_ms", "discovery_interval_ms", "active"])?;
        let mut over: Overrides = self.store.setting(KEY)?.unwrap_or_default();
        let int = |k: &str| -> Result<Option<u64>, ManageError> {
            match obj.get(k) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| field_err(k, "must be a whole number of ms").into()),
            }
        };
        if let Some(v) = int("tick_ms")? {
            over.tick_ms = Some(v);
        }
        if let Some(v) = int("discovery_interval_ms")? {
            over.discovery_interval_ms = Some(v);
        }
        if let Some(v) = obj.get("active") {
            over.active = Some(v.as_bool().ok_or_else(|| field_err("active", "must be true or false"))?);
        }
        let new = over.over(self.config_settings);
        check(&new)?;
        self.store.set_setting(KEY, &over)?;
        let old = std::mem::replace(&mut self.settings, new);
        let mut said = Vec::new();
        if old.tick_ms != new.tick_ms {
            said.push(format!("tick {} -> {} ms", old.tick_ms, new.tick_ms));
        }
        if old.discovery_interval_ms != new.discovery_interval_ms {
            said.push(format!("discovery every {} -> {} ms", old.discovery_interval_ms, new.discovery_interval_ms));
        }
        if old.active != new.active {
            said.push(
                if new.active { "active: limits follow the policies again" } else { "inactive: no limit is changed" }
                    .into(),
            );
        }
        if !said.is_empty() {
            self.events.push_config(now_ms, "", format!("agent: {}", said.join(", ")));
            self.flush_events();
        }
        Ok(new)
    }
}
