//! Every record as read at one revision of the store, built from etcd's
//! keys and brought forward by the keys changed since, so that a replica
//! taking in another's change reads that change, not every record.

use redb::TableHandle as _;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{
    etcd::{Changed, ChangedKv},
    state::{AppRecord, CeilingRecord, HostRecord, UserRecord},
    store::{APPS, CEILINGS, HOSTS, USERS},
};

/// Every record, as read at one revision of the store.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// The etcd revision read (0 for the local file).
    pub revision: i64,
    /// The records' version as read: the newest key's modification
    /// revision and how many keys there are (those of tables this version
    /// does not know, and those left out as unreadable, included).
    pub version: (i64, i64),
    /// Each table's records by name.
    pub hosts: Vec<(String, HostRecord)>,
    pub users: Vec<(String, UserRecord)>,
    pub apps: Vec<(String, AppRecord)>,
    pub ceilings: Vec<(String, CeilingRecord)>,
}

fn parse<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("record {key:?} is not valid JSON: {e}"))
}

/// Sets `name` in `list`, kept by name.
fn upsert<T>(list: &mut Vec<(String, T)>, name: &str, v: T) {
    match list.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) => list[i].1 = v,
        Err(i) => list.insert(i, (name.to_owned(), v)),
    }
}

impl Snapshot {
    /// Every key under `prefix` (`changed` read with no revision floor).
    pub fn read(prefix: &str, changed: Changed) -> Self {
        let mut snap = Snapshot { revision: changed.revision, ..Snapshot::default() };
        snap.take(prefix, changed, true);
        snap
    }

    /// This snapshot brought to `changed`: the keys modified after
    /// [`Snapshot::revision`]. `None` when a record was removed since
    /// (only a full read says which) or a changed one no longer parses.
    pub fn advanced(&self, prefix: &str, changed: Changed) -> Option<Self> {
        // Every key created since is among the changed ones: the count
        // adds up only when none of the keys read before is gone.
        let created = changed.kvs.iter().filter(|k| k.created > self.revision).count() as i64;
        if changed.count != self.version.1 + created {
            return None;
        }
        let mut next = self.clone();
        next.revision = changed.revision;
        next.version.1 = changed.count;
        next.take(prefix, changed, false).then_some(next)
    }

    /// Takes in `changed`'s keys; false when one does not parse and
    /// `lenient` is not set (a full read leaves it out, saying so).
    fn take(&mut self, prefix: &str, changed: Changed, lenient: bool) -> bool {
        if lenient {
            self.version.1 = changed.count.max(changed.kvs.len() as i64);
        }
        for ChangedKv { key, value, modified, .. } in changed.kvs {
            self.version.0 = self.version.0.max(modified);
            let Some((table, name)) = key.strip_prefix(prefix).and_then(|k| k.split_once('/')) else { continue };
            let r = match table {
                t if t == HOSTS.name() => parse(&key, &value).map(|v| upsert(&mut self.hosts, name, v)),
                t if t == USERS.name() => parse(&key, &value).map(|v| upsert(&mut self.users, name, v)),
                t if t == APPS.name() => parse(&key, &value).map(|v| upsert(&mut self.apps, name, v)),
                t if t == CEILINGS.name() => parse(&key, &value).map(|v| upsert(&mut self.ceilings, name, v)),
                _ => Ok(()), // a table of a later version
            };
            match r {
                Ok(()) => {}
                Err(e) if lenient => warn!("store: {e}: left out"),
                Err(_) => return false,
            }
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, created: i64, modified: i64) -> ChangedKv {
        ChangedKv { key: format!("/p/{key}"), value: value.as_bytes().to_vec(), created, modified }
    }

    fn host(url: &str) -> String {
        format!("{{\"url\": \"{url}\"}}")
    }

    fn urls(s: &Snapshot) -> Vec<(String, String)> {
        s.hosts.iter().map(|(n, h)| (n.clone(), h.url.clone())).collect()
    }

    #[test]
    fn changes_bring_a_snapshot_forward_and_a_removal_asks_for_a_full_read() {
        let all = Changed {
            revision: 10,
            kvs: vec![
                kv("hosts/b", &host("http://b"), 3, 3),
                kv("hosts/d", &host("http://d"), 4, 9),
                kv("zz/x", "?", 5, 5),
            ],
            count: 3,
        };
        let base = Snapshot::read("/p/", all);
        assert_eq!((base.revision, base.version), (10, (9, 3)));
        // b changed, a and c created; d untouched.
        let changed = Changed {
            revision: 14,
            kvs: vec![
                kv("hosts/a", &host("http://a"), 11, 11),
                kv("hosts/b", &host("http://b2"), 3, 12),
                kv("hosts/c", &host("http://c"), 13, 13),
            ],
            count: 5,
        };
        let next = base.advanced("/p/", changed.clone()).unwrap();
        let want = [("a", "http://a"), ("b", "http://b2"), ("c", "http://c"), ("d", "http://d")];
        assert_eq!(urls(&next), want.map(|(n, u)| (n.to_owned(), u.to_owned())));
        assert_eq!((next.revision, next.version), (14, (13, 5)));
        // The same, read in full, is the same snapshot.
        let mut full = changed.clone();
        full.kvs.push(kv("hosts/d", &host("http://d"), 4, 9));
        full.kvs.push(kv("zz/x", "?", 5, 5));
        full.kvs.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(Snapshot::read("/p/", full), next);
        // d removed (and e created): the count says so.
        let removed = Changed { revision: 16, kvs: vec![kv("hosts/e", &host("http://e"), 15, 15)], count: 5 };
        assert_eq!(next.advanced("/p/", removed), None);
        // A changed record that does not parse: a full read says which.
        let garbage = Changed { revision: 16, kvs: vec![kv("hosts/a", "{", 11, 15)], count: 5 };
        assert_eq!(next.advanced("/p/", garbage), None);
        // Nothing changed.
        let same = Changed { revision: 20, kvs: vec![], count: 5 };
        assert_eq!(next.advanced("/p/", same).unwrap().hosts, next.hosts);
    }
}
