//! `scaler app ...` and `scaler user ...`: applications and users on the
//! aggregator (membership, weights, scaling at the application's level,
//! ownership and budgets).

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Agent, units};

/// Where the aggregator is.
#[derive(clap::Args, Debug)]
pub struct AggregatorArgs {
    #[arg(long, global = true, default_value = "http://127.0.0.1:8471", env = "SCALER_AGGREGATOR")]
    pub aggregator: String,
    /// Bearer token for changes (the aggregator's `aggregator.token`).
    #[arg(long, global = true, env = "SCALER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long, global = true)]
    pub json: bool,
}

impl AggregatorArgs {
    fn client(&self) -> Agent {
        Agent { url: self.aggregator.clone(), token: self.token.clone() }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum AppCommand {
    /// Every application: owner, containers, CPU and power.
    List,
    /// One application, whole.
    Show { app: String },
    /// A new, empty application.
    Create { app: String },
    /// Delete an application (the ceilings it set are cleared).
    Delete { app: String },
    /// Add a container (HOST/NAME), or change its weight.
    Add {
        app: String,
        container: String,
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a container (HOST/NAME).
    Remove { app: String, container: String },
    /// Scale the application at its own level: --cpu MIN:MAX (guarded:
    /// its allocation follows its need), --unguarded --rebalance 50 (move
    /// slack to the short), --off to stop.
    Scale {
        app: String,
        #[arg(long)]
        cpu: Option<String>,
        #[arg(long)]
        unguarded: bool,
        /// Headroom over the need, percent.
        #[arg(long)]
        headroom: Option<u64>,
        /// Share of slack moved per period, percent.
        #[arg(long)]
        rebalance: Option<u64>,
        #[arg(long, conflicts_with_all = ["cpu", "unguarded", "headroom", "rebalance"])]
        off: bool,
    },
    /// Give the application to a user (none: release it).
    Owner { app: String, user: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Every user: budgets, applications, use.
    List,
    /// One user.
    Show { user: String },
    /// Create or replace a user and its budgets.
    Set {
        user: String,
        /// CPU budget: cores or millicores (4, 2500m).
        #[arg(long)]
        cpu_budget: Option<String>,
        /// Power budget, watts.
        #[arg(long)]
        energy_budget_w: Option<f64>,
        /// Energy moved each period between its capped applications,
        /// percent of the slack (0: off).
        #[arg(long)]
        rebalance: Option<u64>,
    },
    /// Delete a user (its applications stay, without an owner).
    Delete { user: String },
}

fn container_path(app: &str, container: &str) -> anyhow::Result<String> {
    let (host, name) = container
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("container: {container:?} must be HOST/NAME (e.g. node1/web1)"))?;
    Ok(format!("/v1/apps/{app}/containers/{host}/{name}"))
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn app(args: &AggregatorArgs, cmd: &AppCommand) -> anyhow::Result<()> {
    let agg = args.client();
    let v = match cmd {
        AppCommand::List => {
            let v = agg.call(Method::GET, "/v1/apps", None)?;
            if args.json {
                return print(&v);
            }
            println!("{:<20} {:<12} {:>10} {:>10} {:>10}", "APP", "USER", "CONTAINERS", "CPU", "POWER W");
            for a in v["apps"].as_array().map(Vec::as_slice).unwrap_or_default() {
                println!(
                    "{:<20} {:<12} {:>10} {:>10} {:>10}",
                    a["name"].as_str().unwrap_or("?"),
                    a["user"].as_str().unwrap_or("-"),
                    a["containers"].as_array().map_or(0, Vec::len),
                    a["cpu_mc"].as_u64().map_or_else(|| "-".into(), |c| format!("{c}m")),
                    a["power_mw"].as_u64().map_or_else(|| "-".into(), |p| format!("{:.1}", p as f64 / 1000.0)),
                );
            }
            return Ok(());
        }
        AppCommand::Show { app } => agg.call(Method::GET, &format!("/v1/apps/{app}"), None)?,
        AppCommand::Create { app } => {
            agg.call(Method::PUT, &format!("/v1/apps/{app}"), Some(&json!({"containers": []})))?
        }
        AppCommand::Delete { app } => agg.call(Method::DELETE, &format!("/v1/apps/{app}"), None)?,
        AppCommand::Add { app, container, weight } => {
            let body = weight.map(|w| json!({"weight": w}));
            agg.call(Method::PUT, &container_path(app, container)?, body.as_ref())?
        }
        AppCommand::Remove { app, container } => agg.call(Method::DELETE, &container_path(app, container)?, None)?,
        AppCommand::Scale { app, off: true, .. } => {
            agg.call(Method::DELETE, &format!("/v1/apps/{app}/scaling"), None)?
        }
        AppCommand::Scale { app, cpu, unguarded, headroom, rebalance, off: false } => {
            let mut body = Map::new();
            if let Some(cpu) = cpu {
                let (min, max) = units::range("--cpu", cpu, units::cpu).map_err(anyhow::Error::msg)?;
                body.insert("cpu".into(), json!({"min": min, "max": max}));
            }
            body.insert("guard".into(), (!unguarded).into());
            if let Some(h) = headroom {
                body.insert("headroom_percent".into(), (*h).into());
            }
            if let Some(r) = rebalance {
                body.insert("rebalance_percent".into(), (*r).into());
            }
            agg.call(Method::PUT, &format!("/v1/apps/{app}/scaling"), Some(&Value::Object(body)))?
        }
        AppCommand::Owner { app, user } => {
            let user = if user == "none" { Value::Null } else { user.as_str().into() };
            agg.call(Method::PUT, &format!("/v1/apps/{app}/user"), Some(&json!({"user": user})))?
        }
    };
    print(&v)
}

pub fn user(args: &AggregatorArgs, cmd: &UserCommand) -> anyhow::Result<()> {
    let agg = args.client();
    let v = match cmd {
        UserCommand::List => {
            let v = agg.call(Method::GET, "/v1/users", None)?;
            if args.json {
                return print(&v);
            }
            println!(
                "{:<16} {:>10} {:>10} {:>10} {:>10}  APPS",
                "USER", "CPU BUDGET", "CPU USED", "POWER W", "BUDGET W"
            );
            for u in v["users"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let mc = |k: &str| u[k].as_u64().map_or_else(|| "-".into(), |c| format!("{c}m"));
                let apps: Vec<&str> =
                    u["apps"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                println!(
                    "{:<16} {:>10} {:>10} {:>10} {:>10}  {}",
                    u["name"].as_str().unwrap_or("?"),
                    mc("cpu_budget"),
                    mc("cpu_used"),
                    u["power_mw"].as_u64().map_or_else(|| "-".into(), |p| format!("{:.1}", p as f64 / 1000.0)),
                    u["energy_budget_w"].as_f64().map_or_else(|| "-".into(), |w| format!("{w:.1}")),
                    apps.join(",")
                );
            }
            return Ok(());
        }
        UserCommand::Show { user } => agg.call(Method::GET, &format!("/v1/users/{user}"), None)?,
        UserCommand::Set { user, cpu_budget, energy_budget_w, rebalance } => {
            let cpu =
                cpu_budget.as_deref().map(|c| units::cpu("--cpu-budget", c)).transpose().map_err(anyhow::Error::msg)?;
            let body = json!({"cpu_budget": cpu, "energy_budget_w": energy_budget_w, "rebalance_percent": rebalance});
            agg.call(Method::PUT, &format!("/v1/users/{user}"), Some(&body))?
        }
        UserCommand::Delete { user } => agg.call(Method::DELETE, &format!("/v1/users/{user}"), None)?,
    };
    print(&v)
}
