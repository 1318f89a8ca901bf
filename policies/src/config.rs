//! Choosing and configuring a policy: [`PolicyConfig`], tagged by name.

use serde::{Deserialize, Serialize};

use crate::baselines::{Static, Vpa, VpaConfig};
use crate::classic::{Classic, ClassicConfig};
use crate::fast::{Fast, FastConfig};
use crate::follow::{Follow, FollowConfig};
use crate::policy::{Policy, Timing};

/// Names [`PolicyConfig::by_name`] accepts.
pub const POLICY_NAMES: [&str; 7] =
    ["follow", "fast", "classic", "classic-deployed", "classic-defaults", "static", "vpa"];

pub use crate::error::ConfigError;

/// Which policy to run and its parameters. Serialised with the policy name
/// in a `name` field and the parameters beside it, e.g. in TOML:
///
/// ```toml
/// name = "classic"
/// event_timeout_ms = 120000
/// ```
///
/// Parameters left out take the policy's defaults (for `classic`, the
/// deployed preset). Call [`PolicyConfig::validate`] (or
/// [`PolicyConfig::build`], which validates) after deserialising.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum PolicyConfig {
    /// The original's guardian, reproduced. Unset parameters take the
    /// deployed preset (so `classic-deployed` is accepted as a name too);
    /// for the code defaults set `delay_ms = 10000, event_timeout_ms = 40000`
    /// or use [`PolicyConfig::by_name`]`("classic-defaults")`.
    #[serde(alias = "classic-deployed")]
    Classic(ClassicConfig),
    /// Reacts within a tick or two to throttling, pressure and saturation;
    /// shrinks toward a high percentile of recent usage plus 15 %.
    Fast(FastConfig),
    /// Follows the recent peak closely, with CPU headroom adapted to an
    /// allowed slowdown.
    Follow(FollowConfig),
    /// Baseline: every limit at `max`, never changed.
    Static,
    /// Baseline: VPA-like recommender.
    Vpa(VpaConfig),
}

/// The name of the default policy.
pub const DEFAULT_POLICY: &str = "follow";

impl Default for PolicyConfig {
    /// `follow` is the default policy.
    fn default() -> Self {
        PolicyConfig::Follow(FollowConfig::default())
    }
}

impl PolicyConfig {
    /// The configuration called `name`, with default parameters:
    /// `fast`; `classic` or `classic-deployed` (the original's deployed
    /// timing: event timeout 120 s, delay 20 s; used for comparisons);
    /// `classic-defaults` (the original's code defaults: window 10 s,
    /// delay 10 s, event timeout 40 s); `static`; `vpa`.
    pub fn by_name(name: &str) -> Result<Self, ConfigError> {
        Ok(match name {
            "fast" => PolicyConfig::Fast(FastConfig::default()),
            "follow" => PolicyConfig::Follow(FollowConfig::default()),
            "classic" | "classic-deployed" => PolicyConfig::Classic(ClassicConfig::deployed()),
            "classic-defaults" => PolicyConfig::Classic(ClassicConfig::code_defaults()),
            "static" => PolicyConfig::Static,
            "vpa" => PolicyConfig::Vpa(VpaConfig::default()),
            other => {
                return Err(ConfigError::UnknownPolicy { name: other.to_owned() });
            }
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::Classic(_) => "classic",
            PolicyConfig::Fast(_) => "fast",
            PolicyConfig::Follow(_) => "follow",
            PolicyConfig::Static => "static",
            PolicyConfig::Vpa(_) => "vpa",
        }
    }

    /// Check every parameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            PolicyConfig::Classic(c) => c.validate(),
            PolicyConfig::Fast(c) => c.validate(),
            PolicyConfig::Follow(c) => c.validate(),
            PolicyConfig::Static => Ok(()),
            PolicyConfig::Vpa(c) => c.validate(),
        }
    }

    /// How the policy wants to be run (tick and actuation delay).
    pub fn timing(&self) -> Timing {
        match self {
            PolicyConfig::Classic(c) => c.timing(),
            PolicyConfig::Fast(c) => c.timing(),
            PolicyConfig::Follow(c) => c.timing(),
            PolicyConfig::Static => Static.timing(),
            PolicyConfig::Vpa(c) => c.timing(),
        }
    }

    /// A fresh policy object for one container.
    pub fn build(&self) -> Result<Box<dyn Policy>, ConfigError> {
        self.validate()?;
        Ok(match self {
            PolicyConfig::Classic(c) => Box::new(Classic::new(c.clone())?),
            PolicyConfig::Fast(c) => Box::new(Fast::new(c.clone())?),
            PolicyConfig::Follow(c) => Box::new(Follow::new(c.clone())?),
            PolicyConfig::Static => Box::new(Static),
            PolicyConfig::Vpa(c) => Box::new(Vpa::new(c.clone())?),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds() {
        for name in POLICY_NAMES {
            let cfg = PolicyConfig::by_name(name).unwrap();
            let p = cfg.build().unwrap();
            assert_eq!(p.name(), cfg.name());
        }
        assert_eq!(PolicyConfig::default().name(), DEFAULT_POLICY);
    }

    #[test]
    fn unknown_name_is_typed() {
        let e = PolicyConfig::by_name("guardian").unwrap_err();
        assert_eq!(e, ConfigError::UnknownPolicy { name: "guardian".into() });
    }

    #[test]
    fn presets_differ_as_documented() {
        let PolicyConfig::Classic(dep) = PolicyConfig::by_name("classic").unwrap() else {
            panic!("classic is classic")
        };
        assert_eq!((dep.event_timeout_ms, dep.delay_ms), (120_000, 20_000));
        let PolicyConfig::Classic(def) = PolicyConfig::by_name("classic-defaults").unwrap() else {
            panic!("classic-defaults is classic")
        };
        assert_eq!((def.window_ms, def.delay_ms, def.event_timeout_ms), (10_000, 10_000, 40_000));
    }

    #[test]
    fn serde_is_tagged_by_name_and_defaults_fill_in() {
        let cfg: PolicyConfig = serde_json::from_str(r#"{"name":"classic","event_timeout_ms":60000}"#).unwrap();
        let PolicyConfig::Classic(c) = &cfg else { panic!("tag selects classic") };
        assert_eq!(c.event_timeout_ms, 60_000);
        assert_eq!(c.delay_ms, 20_000);
        let json = serde_json::to_string(&PolicyConfig::default()).unwrap();
        assert!(json.starts_with(r#"{"name":"follow""#));
        let back: PolicyConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, PolicyConfig::default());
        let dep: PolicyConfig = serde_json::from_str(r#"{"name":"classic-deployed"}"#).unwrap();
        assert_eq!(dep, PolicyConfig::by_name("classic").unwrap());
        let st: PolicyConfig = serde_json::from_str(r#"{"name":"static"}"#).unwrap();
        assert_eq!(st, PolicyConfig::Static);
    }

    #[test]
    fn invalid_parameters_are_typed_errors() {
        let cfg: PolicyConfig = serde_json::from_str(r#"{"name":"classic","window_ms":0}"#).unwrap();
        let e = cfg.build().err().unwrap();
        assert!(matches!(
            e,
            ConfigError::InvalidParameter { policy: "classic", ref field, .. } if field == "window_ms"
        ));
        assert!(e.to_string().contains("window_ms"));
    }
}
