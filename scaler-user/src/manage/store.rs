//! Durable host state in an embedded database (redb): subscriptions with
//! their bounds, policy, ceilings and the limits the agent set, and the
//! host's capacity overrides, and the newest events (the decisions log, so
//! `scaler events` survives a restart).
//!
//! Why redb: every write is an ACID transaction made durable (fsync) before
//! `commit` returns, and a crash at any point leaves the previous committed
//! state (copy-on-write B-trees with a checksummed commit slot), so a
//! `kill -9` loses nothing that was acknowledged. It is pure Rust (no C
//! build), and one transaction per tick batches every limit change of that
//! tick into a single fsync.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::{events::Event, model::Subscription};

const SUBSCRIPTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("subscriptions");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// Event id -> JSON event.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("state database {path}: corrupt record {key}: {source}")]
    Decode {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Pages kept in memory (the state is a few hundred KiB; redb's default
/// cache is 1 GiB).
const CACHE_BYTES: usize = 4 << 20;

pub struct Store {
    db: Database,
    path: PathBuf,
    /// Calls to [`Store::save`]: every change to a subscription is saved,
    /// so this moves whenever any did (see [`Store::saves`]).
    saves: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (or creates) `dir/state.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.into(), source })?;
        let path = dir.join("state.redb");
        // redb takes an empty file for a new database: a state file
        // truncated to nothing would silently lose every subscription.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::Db {
                path,
                message: "the file is empty (truncated?); move it away to start with no subscriptions".into(),
            });
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::Db { path: path.clone(), message: e.to_string() })?;
        let me = Self { db, path, saves: Default::default() };
        // Create the tables so readers never meet a missing one.
        me.write(|_| Ok(()))?;
        me.save_events(&[], 0)?;
        Ok(me)
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db { path: self.path.clone(), message: e.to_string() }
    }

    /// One durable transaction: `f` gets the subscriptions and settings tables.
    fn write(
        &self,
        f: impl FnOnce(&mut (redb::Table<&str, &[u8]>, redb::Table<&str, &[u8]>)) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let subs = tx.open_table(SUBSCRIPTIONS).map_err(|e| self.db_err(e))?;
            let settings = tx.open_table(SETTINGS).map_err(|e| self.db_err(e))?;
            let mut tables = (subs, settings);
            f(&mut tables).map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// Writes (inserts or replaces) these subscriptions and removes `gone`,
    /// in one transaction.
    pub fn save(&self, subs: &[&Subscription], gone: &[&str]) -> Result<(), StoreError> {
        self.saves.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let encoded: Vec<(String, Vec<u8>)> =
            subs.iter().map(|s| (s.name.clone(), serde_json::to_vec(s).unwrap_or_default())).collect();
        self.write(|(t, _)| {
            for (name, bytes) in &encoded {
                t.insert(name.as_str(), bytes.as_slice())?;
            }
            for name in gone {
                t.remove(*name)?;
            }
            Ok(())
        })
    }

    /// How many saves were asked for, failed ones too. While it stays the
    /// same, no subscription changed, limits included: each change is
    /// saved before or as it is made.
    pub fn saves(&self) -> u64 {
        self.saves.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn load(&self) -> Result<Vec<Subscription>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = tx.open_table(SUBSCRIPTIONS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let s = serde_json::from_slice(v.value()).map_err(|source| StoreError::Decode {
                path: self.path.clone(),
                key: k.value().to_owned(),
                source,
            })?;
            out.push(s);
        }
        Ok(out)
    }

    /// A JSON setting (`capacity`, ...).
    pub fn setting<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = tx.open_table(SETTINGS).map_err(|e| self.db_err(e))?;
        let Some(v) = t.get(key).map_err(|e| self.db_err(e))? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(|source| StoreError::Decode {
            path: self.path.clone(),
            key: key.to_owned(),
            source,
        })
    }

    /// Appends `events` and forgets the stored ones with an id below
    /// `keep_from` (the log is bounded), in one transaction.
    pub fn save_events(&self, events: &[Event], keep_from: u64) -> Result<(), StoreError> {
        let encoded: Vec<(u64, Vec<u8>)> =
            events.iter().map(|e| (e.id, serde_json::to_vec(e).unwrap_or_default())).collect();
        let write = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(EVENTS)?;
                for (id, bytes) in &encoded {
                    t.insert(*id, bytes.as_slice())?;
                }
                let old: Vec<u64> =
                    t.range(..keep_from)?.map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
                for id in old {
                    t.remove(id)?;
                }
            }
            Ok(tx.commit()?)
        };
        write().map_err(|e| self.db_err(e))
    }

    /// The stored events, oldest first. One that does not decode is
    /// skipped with a warning: the log is history, not state to act on.
    pub fn load_events(&self) -> Result<Vec<Event>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = tx.open_table(EVENTS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            match serde_json::from_slice::<Event>(v.value()) {
                Ok(e) if e.id == k.value() => out.push(e),
                _ => tracing::warn!(id = k.value(), path = %self.path.display(), "skipping an unreadable stored event"),
            }
        }
        Ok(out)
    }

    pub fn set_setting<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.write(|(_, t)| {
            t.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use policies::Resource;

    use super::*;

    fn sub(name: &str) -> Subscription {
        Subscription {
            name: name.into(),
            cgroup: format!("/{name}"),
            policy: "fast".into(),
            policy_config: None,
            priority: 1,
            resources: BTreeMap::new(),
            limits: [(Resource::Cpu, Some(750)), (Resource::Mem, None)].into(),
            original: [(Resource::Cpu, None)].into(),
            ceiling: BTreeMap::new(),
            cpu_placement: false,
            cpus: Vec::new(),
            original_cpus: None,
        }
    }

    #[test]
    fn survives_reopen_and_removes() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = Store::open(tmp.path()).unwrap();
            s.save(&[&sub("a"), &sub("b")], &[]).unwrap();
            s.save(&[], &["a"]).unwrap();
            s.set_setting("capacity", &BTreeMap::from([("cpu", 1500u64)])).unwrap();
        }
        let s = Store::open(tmp.path()).unwrap();
        let all = s.load().unwrap();
        assert_eq!(all, vec![sub("b")]);
        let cap: BTreeMap<String, u64> = s.setting("capacity").unwrap().unwrap();
        assert_eq!(cap["cpu"], 1500);
        assert!(s.setting::<u64>("missing").unwrap().is_none());
    }

    fn event(id: u64) -> Event {
        Event {
            id,
            time_ms: id * 10,
            container: "a".into(),
            resource: Some(Resource::Cpu),
            old: None,
            new: Some(id),
            reason: "r".into(),
        }
    }

    #[test]
    fn events_survive_reopen_and_stay_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = Store::open(tmp.path()).unwrap();
            s.save_events(&[event(1), event(2), event(3)], 0).unwrap();
            s.save_events(&[event(4)], 3).unwrap();
        }
        let s = Store::open(tmp.path()).unwrap();
        assert_eq!(s.load_events().unwrap(), vec![event(3), event(4)]);
    }

    #[test]
    fn an_empty_state_file_is_refused_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        drop(Store::open(tmp.path()).unwrap());
        std::fs::write(tmp.path().join("state.redb"), b"").unwrap();
        let e = Store::open(tmp.path()).err().unwrap().to_string();
        assert!(e.contains("state.redb") && e.contains("empty"), "{e}");
        assert_eq!(std::fs::metadata(tmp.path().join("state.redb")).unwrap().len(), 0, "left as found");
    }
}
