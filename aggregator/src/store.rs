//! The aggregator's durable state in one redb file (`state_dir/aggregator.redb`):
//! hosts registered through the API, applications with their caps, the CPU
//! ceilings it has set on agents, and history blocks. Every write is one
//! ACID transaction; history writes are batched per flush.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

/// History blocks: `(tier, bucket start ms, entity)` -> encoded points.
/// Bucket-major keys keep a flush's writes together at the end of the tree
/// and make retention a range delete.
const HISTORY: TableDefinition<(u8, u64, &str), &[u8]> = TableDefinition::new("history");
/// Hosts registered through the API: name -> JSON.
pub const HOSTS: TableDefinition<&str, &str> = TableDefinition::new("hosts");
/// Applications: name -> JSON (containers, cap).
pub const APPS: TableDefinition<&str, &str> = TableDefinition::new("apps");
/// Users: name -> JSON (budgets).
pub const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
/// Ceilings this aggregator set, to clear later: `host/container` -> JSON.
pub const CEILINGS: TableDefinition<&str, &str> = TableDefinition::new("ceilings");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {what}: {source}")]
    Db {
        what: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("store: record {key:?} is not valid JSON: {source}")]
    Json {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

fn fail(what: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::Db { what, source: Box::new(e) }
}

/// A history row to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub tier: u8,
    pub bucket: u64,
    pub entity: String,
    pub bytes: std::sync::Arc<Vec<u8>>,
    /// Appended to the stored block (created when there is none), else
    /// replaces it.
    pub append: bool,
}

/// Pages the store keeps in memory. redb's default (1 GiB) lets the
/// process grow with the history file up to that; queries and writes touch
/// the newest blocks, which fit in far less.
const CACHE_BYTES: usize = 16 << 20;

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.into(), source })?;
        let path = dir.join("aggregator.redb");
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&path).map_err(|e| fail("open")(e.into()))?;
        let me = Self { db, path };
        // Create every table so readers never see "no such table".
        let tx = me.db.begin_write().map_err(|e| fail("open")(e.into()))?;
        for t in [HOSTS, APPS, USERS, CEILINGS] {
            tx.open_table(t).map_err(|e| fail("open")(e.into()))?;
        }
        tx.open_table(HISTORY).map_err(|e| fail("open")(e.into()))?;
        tx.commit().map_err(|e| fail("open")(e.into()))?;
        Ok(me)
    }

    /// Size of the file, bytes.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Inserts or replaces `key` in `table` (one durable transaction).
    pub fn put<T: Serialize>(&self, table: TableDefinition<&str, &str>, key: &str, v: &T) -> Result<(), StoreError> {
        let json = serde_json::to_string(v).map_err(|source| StoreError::Json { key: key.into(), source })?;
        let tx = self.db.begin_write().map_err(|e| fail("write")(e.into()))?;
        {
            let mut t = tx.open_table(table).map_err(|e| fail("write")(e.into()))?;
            t.insert(key, json.as_str()).map_err(|e| fail("write")(e.into()))?;
        }
        tx.commit().map_err(|e| fail("commit")(e.into()))
    }

    /// Removes `key` from `table`; whether it was there.
    pub fn delete(&self, table: TableDefinition<&str, &str>, key: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(|e| fail("write")(e.into()))?;
        let existed = {
            let mut t = tx.open_table(table).map_err(|e| fail("write")(e.into()))?;
            t.remove(key).map_err(|e| fail("write")(e.into()))?.is_some()
        };
        tx.commit().map_err(|e| fail("commit")(e.into()))?;
        Ok(existed)
    }

    /// Every record of `table`.
    pub fn load<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &str>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| fail("read")(e.into()))?;
        let t = tx.open_table(table).map_err(|e| fail("read")(e.into()))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| fail("read")(e.into()))? {
            let (k, v) = item.map_err(|e| fail("read")(e.into()))?;
            let key = k.value().to_owned();
            let v = serde_json::from_str(v.value()).map_err(|source| StoreError::Json { key: key.clone(), source })?;
            out.push((key, v));
        }
        Ok(out)
    }

    /// Writes history rows in one transaction.
    pub fn write_history(&self, rows: &[Row]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| fail("history write")(e.into()))?;
        {
            let mut t = tx.open_table(HISTORY).map_err(|e| fail("history write")(e.into()))?;
            let mut joined = Vec::new();
            for r in rows {
                let key = (r.tier, r.bucket, r.entity.as_str());
                let mut value = r.bytes.as_slice();
                if r.append
                    && let Some(old) = t.get(key).map_err(|e| fail("history write")(e.into()))?
                {
                    joined.clear();
                    joined.extend_from_slice(old.value());
                    joined.extend_from_slice(value);
                    value = &joined;
                }
                t.insert(key, value).map_err(|e| fail("history write")(e.into()))?;
            }
        }
        tx.commit().map_err(|e| fail("history commit")(e.into()))
    }

    /// The blocks stored under `keys` (missing ones are skipped).
    pub fn read_blocks(&self, entity: &str, keys: &[(u8, u64)]) -> Result<Vec<(u8, u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| fail("history read")(e.into()))?;
        let t = tx.open_table(HISTORY).map_err(|e| fail("history read")(e.into()))?;
        let mut out = Vec::new();
        for &(tier, bucket) in keys {
            if let Some(v) = t.get((tier, bucket, entity)).map_err(|e| fail("history read")(e.into()))? {
                out.push((tier, bucket, v.value().to_vec()));
            }
        }
        Ok(out)
    }

    /// Deletes the blocks of `tier` whose bucket starts before `before`.
    pub fn prune(&self, tier: u8, before: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| fail("prune")(e.into()))?;
        {
            let mut t = tx.open_table(HISTORY).map_err(|e| fail("prune")(e.into()))?;
            t.retain_in((tier, 0u64, "")..(tier, before, ""), |_, _| false).map_err(|e| fail("prune")(e.into()))?;
        }
        tx.commit().map_err(|e| fail("prune commit")(e.into()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn records_and_history_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(APPS, "web", &serde_json::json!({"x": 1})).unwrap();
            s.put(APPS, "db", &serde_json::json!({"x": 2})).unwrap();
            assert!(s.delete(APPS, "db").unwrap());
            assert!(!s.delete(APPS, "nope").unwrap());
            let rows: Vec<Row> = (0..3)
                .map(|i| Row {
                    tier: 0,
                    bucket: i * 60_000,
                    entity: "c:h/a".into(),
                    bytes: Arc::new(vec![i as u8]),
                    append: false,
                })
                .collect();
            s.write_history(&rows).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let apps: Vec<(String, serde_json::Value)> = s.load(APPS).unwrap();
        assert_eq!(apps, vec![("web".to_owned(), serde_json::json!({"x": 1}))]);
        let got = s.read_blocks("c:h/a", &[(0, 0), (0, 60_000), (1, 0), (0, 120_000)]).unwrap();
        assert_eq!(got.len(), 3);
        s.prune(0, 120_000).unwrap();
        let got = s.read_blocks("c:h/a", &[(0, 0), (0, 60_000), (0, 120_000)]).unwrap();
        assert_eq!(got, vec![(0, 120_000, vec![2])]);
        assert!(s.file_bytes() > 0);
        // Appends: to a stored block, twice in one batch, and to none.
        let row = |bucket: u64, b: u8, append: bool| Row {
            tier: 1,
            bucket,
            entity: "c:h/a".into(),
            bytes: Arc::new(vec![b, b]),
            append,
        };
        s.write_history(&[row(0, 1, false)]).unwrap();
        s.write_history(&[row(0, 2, true), row(0, 3, true), row(60_000, 4, true)]).unwrap();
        let got = s.read_blocks("c:h/a", &[(1, 0), (1, 60_000)]).unwrap();
        assert_eq!(got, vec![(1, 0, vec![1, 1, 2, 2, 3, 3]), (1, 60_000, vec![4, 4])]);
        // A row that is not an append replaces the block.
        s.write_history(&[row(0, 5, false)]).unwrap();
        assert_eq!(s.read_blocks("c:h/a", &[(1, 0)]).unwrap(), vec![(1, 0, vec![5, 5])]);
    }
}
