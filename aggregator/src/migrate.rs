//! `scaler move-records`: copies the aggregator's records (hosts, users,
//! applications, ceilings) from the local redb file to etcd, or back.
//!
//! One configuration names both ends: `aggregator.state_dir` (the local
//! file, `aggregator.redb`) and `[store] etcd` and `prefix`. The source is
//! left as it was; the destination must hold no record unless `replace`
//! is given, and then ends up with exactly the source's records (those
//! only it held are deleted). Every record is read back and compared
//! before the command says it is done. The local file cannot be opened
//! while an aggregator uses it (redb locks it), so the move is made with
//! the aggregators stopped. History is not moved: it stays in `state_dir`.

use std::sync::Arc;

use anyhow::Context as _;
use redb::{TableDefinition, TableHandle as _};
use serde::Serialize;

use super::{
    config::AggConfig,
    etcd::Etcd,
    records::{Pending, Records, Snapshot},
    store::{APPS, CEILINGS, HOSTS, Store, USERS},
};

/// Where the records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// From `state_dir/aggregator.redb` to `[store] etcd`.
    Etcd,
    /// From `[store] etcd` to `state_dir/aggregator.redb`.
    Local,
}

impl std::str::FromStr for To {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "etcd" => Ok(To::Etcd),
            "local" => Ok(To::Local),
            _ => Err(format!("{s:?}: etcd or local")),
        }
    }
}

/// What a move copied and deleted, per table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub hosts: usize,
    pub users: usize,
    pub apps: usize,
    pub ceilings: usize,
    /// Records only the destination held, deleted (with `replace`).
    pub deleted: usize,
}

fn count(s: &Snapshot) -> usize {
    s.hosts.len() + s.users.len() + s.apps.len() + s.ceilings.len()
}

type Table = TableDefinition<'static, &'static str, &'static str>;

const TABLES: [Table; 4] = [HOSTS, USERS, APPS, CEILINGS];

/// The records of `s` as (table, name, JSON), sorted: to compare.
fn rows(s: &Snapshot) -> anyhow::Result<Vec<(String, String, String)>> {
    fn of<T: Serialize>(t: Table, list: &[(String, T)]) -> anyhow::Result<Vec<(String, String, String)>> {
        list.iter().map(|(k, v)| Ok((t.name().to_owned(), k.clone(), serde_json::to_string(v)?))).collect()
    }
    let mut out = of(HOSTS, &s.hosts)?;
    out.extend(of(USERS, &s.users)?);
    out.extend(of(APPS, &s.apps)?);
    out.extend(of(CEILINGS, &s.ceilings)?);
    out.sort();
    Ok(out)
}

/// Copies every record to `to`'s side (see the module's documentation).
pub async fn move_records(cfg: &AggConfig, to: To, replace: bool) -> anyhow::Result<Moved> {
    anyhow::ensure!(
        !cfg.store.etcd.is_empty(),
        "store.etcd: no member named; the configuration must name the etcd cluster (and prefix) the records move to or from"
    );
    let dir = &cfg.aggregator.state_dir;
    let store = Store::open(dir).with_context(|| {
        format!("opening {}/aggregator.redb (is an aggregator still running on it? stop it first)", dir.display())
    })?;
    let etcd = Etcd::from_config(&cfg.store).map_err(anyhow::Error::msg)?;
    let local = Records::local(Arc::new(store));
    let remote = Records::etcd(Arc::new(etcd), cfg.store.prefix.clone());
    let (from, into, names) = match to {
        To::Etcd => (&local, &remote, (format!("{}/aggregator.redb", dir.display()), remote.describe())),
        To::Local => (&remote, &local, (remote.describe(), format!("{}/aggregator.redb", dir.display()))),
    };
    let read = |what: &str, e: String| anyhow::anyhow!("reading the records from {what}: {e}");
    let src = from.snapshot().await.map_err(|e| read(&names.0, e))?;
    let dst = into.snapshot().await.map_err(|e| read(&names.1, e))?;
    if count(&dst) > 0 && !replace {
        anyhow::bail!(
            "{} already holds {} records ({} hosts, {} users, {} applications, {} ceilings): nothing written; \
             give --replace to make it hold exactly those of {}",
            names.1,
            count(&dst),
            dst.hosts.len(),
            dst.users.len(),
            dst.apps.len(),
            dst.ceilings.len(),
            names.0
        );
    }
    let wanted = rows(&src)?;
    let mut pending: Vec<Pending> = Vec::new();
    let mut deleted = 0;
    for (t, name, _) in rows(&dst)? {
        if !wanted.iter().any(|(wt, wn, _)| *wt == t && *wn == name) {
            let Some(&table) = TABLES.iter().find(|x| x.name() == t) else { continue };
            pending.push(into.delete(table, &name)?);
            deleted += 1;
        }
    }
    for (name, v) in &src.hosts {
        pending.push(into.put(HOSTS, name, v)?);
    }
    for (name, v) in &src.users {
        pending.push(into.put(USERS, name, v)?);
    }
    for (name, v) in &src.apps {
        pending.push(into.put(APPS, name, v)?);
    }
    for (name, v) in &src.ceilings {
        pending.push(into.put(CEILINGS, name, v)?);
    }
    for p in pending {
        p.done().await.map_err(|e| anyhow::anyhow!("writing to {}: {e}", names.1))?;
    }
    // Read back: the destination holds exactly the source's records.
    let after = into.snapshot().await.map_err(|e| read(&names.1, e))?;
    let got = rows(&after)?;
    if got != wanted {
        anyhow::bail!(
            "{} does not hold what was written: {} records read back, {} written (another aggregator writing?)",
            names.1,
            got.len(),
            wanted.len()
        );
    }
    Ok(Moved {
        hosts: src.hosts.len(),
        users: src.users.len(),
        apps: src.apps.len(),
        ceilings: src.ceilings.len(),
        deleted,
    })
}

/// `scaler move-records`: runs [`move_records`] and says what it did.
pub fn main(config: &std::path::Path, to: To, replace: bool) -> anyhow::Result<()> {
    let mut cfg = AggConfig::load(config)?;
    cfg.apply_env(|k| std::env::var(k).ok())?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let m = rt.block_on(move_records(&cfg, to, replace))?;
    let whither = match to {
        To::Etcd => format!("to etcd {}", cfg.store.prefix),
        To::Local => format!("to {}/aggregator.redb", cfg.aggregator.state_dir.display()),
    };
    println!(
        "moved {whither}: {} hosts, {} users, {} applications, {} ceilings ({} records only it held deleted); read back and equal",
        m.hosts, m.users, m.apps, m.ceilings, m.deleted
    );
    Ok(())
}
