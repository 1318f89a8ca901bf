//! Parameters of the classic guardian: timing presets and the rules table.

use serde::{Deserialize, Serialize};

use crate::decision::Direction;
use crate::error::{ConfigError, check};
use crate::policy::Timing;
use crate::resource::{MAX_AMOUNT, MIB, Resource};

const NAME: &str = "classic";

/// How much a rule changes the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    /// A fixed signed amount, in the resource's unit.
    Fixed(i64),
    /// `trunc(usage + max(trunc(margin / 2), 1) + margin) - current`.
    FitToUsage,
    /// `trunc(min((usage - upper) / (current - upper), 1) * amount)`.
    Proportional(i64),
}

/// One row of the rules table: fires when at least `events` live events of
/// its own direction exist and at most `max_opposite` of the other
/// (`None`: no condition), then consumes `consume` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Live events of the rule's direction needed (`>=`).
    pub events: u32,
    /// Live events of the opposite direction allowed (`<=`).
    pub max_opposite: Option<u32>,
    /// Events consumed when the rule fires.
    pub consume: u32,
    /// The change.
    pub amount: Amount,
    /// An inactive rule never fires but keeps its parameters (the
    /// original's per-rule on/off switch).
    #[serde(default = "active")]
    pub active: bool,
}

fn active() -> bool {
    true
}

/// The rules of one resource (or family: disk covers read and write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRules {
    /// Checked first.
    pub down: Option<Rule>,
    /// Checked when `down` did not fire.
    pub up: Option<Rule>,
}

/// The rules table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleTable {
    /// CPU.
    pub cpu: ResourceRules,
    /// Memory.
    pub mem: ResourceRules,
    /// Disk read and disk write, each on its own.
    pub disk: ResourceRules,
    /// Network receive and transmit, each on its own.
    pub net: ResourceRules,
}

impl Default for RuleTable {
    fn default() -> Self {
        let rule = |events, max_opposite, amount| Rule { events, max_opposite, consume: events, amount, active: true };
        // The original counts CPU in shares (100 = one core) and memory in
        // MiB; here millicores and bytes.
        let disk = ResourceRules {
            // D >= 6 && U <= 0, fit to usage, consumes 6.
            down: Some(rule(6, Some(0), Amount::FitToUsage)),
            // U >= 1 && D <= 6, +450 in the original's unit, which it
            // multiplies by 1,048,576 (MiB/s), consumes 1.
            up: Some(rule(1, Some(6), Amount::Fixed(450 * MIB as i64))),
        };
        RuleTable {
            cpu: ResourceRules {
                // D >= 6 && U <= 0, fit to usage, consumes 6.
                down: Some(rule(6, Some(0), Amount::FitToUsage)),
                // U >= 2 && D <= 2, +75 shares = +750 millicores, consumes 2.
                up: Some(rule(2, Some(2), Amount::Fixed(750))),
            },
            mem: ResourceRules {
                // D >= 8 && U == 0, fit to usage, consumes 8.
                down: Some(rule(8, Some(0), Amount::FitToUsage)),
                // U >= 2 && D <= 6, +256 MiB, consumes 2.
                up: Some(rule(2, Some(6), Amount::Fixed(256 * MIB as i64))),
            },
            disk,
            // The original has no network rule; network gets the disk rules
            // so that classic can be compared on every resource. Set both to
            // null to leave the network alone, as the original did.
            net: disk,
        }
    }
}

impl RuleTable {
    /// The rules that apply to `resource` (`None` for energy).
    pub fn for_resource(&self, resource: Resource) -> Option<&ResourceRules> {
        match resource {
            Resource::Cpu => Some(&self.cpu),
            Resource::Mem => Some(&self.mem),
            Resource::DiskRead | Resource::DiskWrite => Some(&self.disk),
            Resource::NetRx | Resource::NetTx => Some(&self.net),
            Resource::Energy => None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (family, rules) in [("cpu", &self.cpu), ("mem", &self.mem), ("disk", &self.disk), ("net", &self.net)] {
            for (dir, rule) in [(Direction::Down, &rules.down), (Direction::Up, &rules.up)] {
                let Some(rule) = rule else { continue };
                let field = |f: &str| format!("rules.{family}.{dir}.{f}");
                check(NAME, field("events"), rule.events, rule.events >= 1, "at least 1")?;
                let amount = match rule.amount {
                    Amount::Fixed(a) | Amount::Proportional(a) => a,
                    Amount::FitToUsage => 1,
                };
                check(
                    NAME,
                    field("amount"),
                    amount,
                    amount != 0 && amount.unsigned_abs() <= MAX_AMOUNT,
                    "non-zero, magnitude at most 2^52",
                )?;
            }
        }
        Ok(())
    }
}

/// Parameters of the classic guardian. `Default` is the deployed preset,
/// which comparisons use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassicConfig {
    /// Length of the window whose samples are averaged, ms.
    pub window_ms: u64,
    /// The window ends this long before now (the monitoring delay), ms.
    pub delay_ms: u64,
    /// Events older than this expire (strictly: `ts < now - timeout`), ms.
    pub event_timeout_ms: u64,
    /// The guardian evaluates at most once per period; calls in between
    /// return nothing. The original: one pass per window.
    pub period_ms: u64,
    /// Delay before a decision is in force; the simulator uses it (the
    /// original's Scaler polled every 5 s).
    pub actuation_delay_ms: u64,
    /// Never set memory below the latest measured usage (capped at max),
    /// and in the agent, below usage plus headroom as for every policy.
    /// The original has neither. `false`: the original's arithmetic; the
    /// agent then floors memory at usage itself (never below what the
    /// container uses) without headroom.
    pub mem_floor_at_usage: bool,
    /// The rules table.
    pub rules: RuleTable,
}

impl Default for ClassicConfig {
    fn default() -> Self {
        Self::deployed()
    }
}

impl ClassicConfig {
    /// The original's code defaults: window 10 s, delay 10 s, event timeout
    /// 40 s. CPU scale-down cannot fire with these: at most 5 down events
    /// are live (4 in the original, whose ticks drift past 10 s), 6 needed.
    pub fn code_defaults() -> Self {
        ClassicConfig {
            // WINDOW_TIMELAPSE = 10 s.
            window_ms: 10_000,
            // WINDOW_DELAY = 10 s.
            delay_ms: 10_000,
            // EVENT_TIMEOUT = 40 s.
            event_timeout_ms: 40_000,
            // The guardian sleeps one window between passes.
            period_ms: 10_000,
            // The Scaler polls for requests every 5 s.
            actuation_delay_ms: 5_000,
            mem_floor_at_usage: true,
            rules: RuleTable::default(),
        }
    }

    /// The configuration the original's users deployed: event timeout 120 s,
    /// delay 20 s (window and period stay 10 s).
    pub fn deployed() -> Self {
        ClassicConfig { delay_ms: 20_000, event_timeout_ms: 120_000, ..Self::code_defaults() }
    }

    /// Check every parameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let day = 86_400_000;
        check(NAME, "window_ms", self.window_ms, (1..=day).contains(&self.window_ms), "1..=86400000")?;
        check(NAME, "delay_ms", self.delay_ms, self.delay_ms <= day, "at most 86400000")?;
        check(
            NAME,
            "event_timeout_ms",
            self.event_timeout_ms,
            (1..=day).contains(&self.event_timeout_ms),
            "1..=86400000",
        )?;
        check(NAME, "period_ms", self.period_ms, (1..=day).contains(&self.period_ms), "1..=86400000")?;
        check(NAME, "actuation_delay_ms", self.actuation_delay_ms, self.actuation_delay_ms <= day, "at most 86400000")?;
        self.rules.validate()
    }

    /// Tick = period; actuation delay as configured.
    pub fn timing(&self) -> Timing {
        Timing { tick_ms: self.period_ms, actuation_delay_ms: self.actuation_delay_ms }
    }
}
