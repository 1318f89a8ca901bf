//! Where the aggregator's records live: hosts registered through the API,
//! users, applications and the ceilings it set. By default in the local
//! redb file beside the history (one aggregator); with `[store] etcd` in an
//! etcd cluster under a key prefix, shared by every aggregator replica.
//!
//! Writes are made under the state's lock, in the order of the changes
//! they record, and never wait there: in etcd they are queued to one
//! writer task, and the API answers only once its write is durable
//! ([`Pending::done`]). Replicas see each other's changes through
//! [`Records::refresh`]: when the records' version moved (the newest
//! record's modification revision, or their count: one key's name read),
//! the records changed since the last read are read and the state
//! reconciled with the last snapshot brought forward by them (every record
//! is read again when one was removed).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use redb::{TableDefinition, TableHandle as _};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{
    etcd::Etcd,
    store::{APPS, CEILINGS, HOSTS, Store, StoreError, USERS},
};

pub use super::snapshot::Snapshot;

struct Write {
    key: String,
    /// `None`: delete.
    value: Option<Vec<u8>>,
    done: oneshot::Sender<Result<(), String>>,
}

enum Backend {
    Local(Arc<Store>),
    /// Records under `PREFIX records/` (`prefix` here), apart from the
    /// replicas' keys, so those never make a replica read the records again.
    Etcd {
        etcd: Arc<Etcd>,
        base: String,
        prefix: String,
        queue: mpsc::UnboundedSender<Write>,
    },
}

/// Book-keeping shared with the etcd writer task.
#[derive(Default)]
struct Progress {
    /// Writes queued and not yet made.
    pending: AtomicUsize,
    /// Revision of the newest write made.
    written: AtomicI64,
    /// Revision the state was last reconciled with (-1: read again).
    synced: AtomicI64,
    /// The records' version then (newest modification, count).
    synced_version: (AtomicI64, AtomicI64),
    /// A write failed: the state may hold a change etcd does not.
    failed: AtomicBool,
    /// Times every record was read (a change elsewhere, or not known).
    full_reads: AtomicUsize,
}

pub struct Records {
    backend: Backend,
    progress: Arc<Progress>,
    /// The newest snapshot read, which the next read brings forward.
    last: std::sync::Mutex<Option<Snapshot>>,
}

/// A write on its way to the store.
pub struct Pending(Option<oneshot::Receiver<Result<(), String>>>);

impl Pending {
    /// Waits until the write is durable.
    pub async fn done(self) -> Result<(), String> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.unwrap_or_else(|_| Err("the store's writer stopped".into())),
        }
    }
}

fn json<T: Serialize>(key: &str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Json { key: key.into(), source })
}

impl Records {
    /// The records in the local store.
    pub fn local(store: Arc<Store>) -> Self {
        Self { backend: Backend::Local(store), progress: Arc::default(), last: Default::default() }
    }

    /// The records in etcd under `prefix`, written by a task of the current
    /// runtime.
    pub fn etcd(etcd: Arc<Etcd>, base: String) -> Self {
        let prefix = format!("{base}records/");
        let (queue, mut rx) = mpsc::unbounded_channel::<Write>();
        let progress = Arc::new(Progress { synced: AtomicI64::new(-1), ..Progress::default() });
        let (e, p, records) = (etcd.clone(), progress.clone(), prefix.clone());
        tokio::spawn(async move {
            while let Some(w) = rx.recv().await {
                let r = match &w.value {
                    Some(v) => e.put_counting(&w.key, v).await.map(|(rev, new)| (rev, Some(i64::from(new)))),
                    None => e.delete(&w.key).await.map(|(rev, _)| (rev, None)),
                };
                let r = match r {
                    Ok((rev, added)) => {
                        p.written.fetch_max(rev, Ordering::SeqCst);
                        // After a delete the newest record's revision is not
                        // known: the next change reads every record.
                        if let Some(added) = added {
                            keep_in_sync(&e, &records, &p, rev, added).await;
                        }
                        Ok(())
                    }
                    Err(err) => {
                        warn!("store: writing {}: {err}", w.key);
                        p.failed.store(true, Ordering::SeqCst);
                        Err(err.to_string())
                    }
                };
                p.pending.fetch_sub(1, Ordering::SeqCst);
                let _ = w.done.send(r);
            }
        });
        Self { backend: Backend::Etcd { etcd, base, prefix, queue }, progress, last: Default::default() }
    }

    /// How many times every record was read (not only those changed).
    pub fn full_reads(&self) -> usize {
        self.progress.full_reads.load(Ordering::SeqCst)
    }

    /// Where the records are, for `/v1/stats` and logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(_) => "local".into(),
            Backend::Etcd { base, .. } => format!("etcd {base}"),
        }
    }

    fn send(&self, table: TableDefinition<&str, &str>, key: &str, value: Option<Vec<u8>>) -> Pending {
        let Backend::Etcd { prefix, queue, .. } = &self.backend else { return Pending(None) };
        let (done, rx) = oneshot::channel();
        self.progress.pending.fetch_add(1, Ordering::SeqCst);
        let w = Write { key: format!("{prefix}{}/{key}", table.name()), value, done };
        if let Err(mpsc::error::SendError(w)) = queue.send(w) {
            self.progress.pending.fetch_sub(1, Ordering::SeqCst);
            let _ = w.done.send(Err("the store's writer stopped".into()));
        }
        Pending(Some(rx))
    }

    /// Inserts or replaces `key` in `table`.
    pub fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &str>,
        key: &str,
        v: &T,
    ) -> Result<Pending, StoreError> {
        match &self.backend {
            Backend::Local(s) => s.put(table, key, v).map(|()| Pending(None)),
            Backend::Etcd { .. } => Ok(self.send(table, key, Some(json(key, v)?))),
        }
    }

    /// Removes `key` from `table`.
    pub fn delete(&self, table: TableDefinition<&str, &str>, key: &str) -> Result<Pending, StoreError> {
        match &self.backend {
            Backend::Local(s) => s.delete(table, key).map(|_| Pending(None)),
            Backend::Etcd { .. } => Ok(self.send(table, key, None)),
        }
    }

    /// Every record.
    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        match &self.backend {
            Backend::Local(s) => local_snapshot(s).map_err(|e| e.to_string()),
            Backend::Etcd { etcd, prefix, .. } => {
                self.progress.full_reads.fetch_add(1, Ordering::SeqCst);
                let changed = etcd.range_changed(prefix, 0).await.map_err(|e| e.to_string())?;
                let snap = Snapshot::read(prefix, changed);
                self.keep(&snap);
                Ok(snap)
            }
        }
    }

    /// Every record: the last snapshot brought forward by the records
    /// changed since (read in full when one was removed, or none was read).
    async fn read_changes(&self) -> Result<Snapshot, String> {
        let Backend::Etcd { etcd, prefix, .. } = &self.backend else { return self.snapshot().await };
        let since = self.lock_last().as_ref().map(|s| s.revision);
        let Some(since) = since else { return self.snapshot().await };
        let changed = etcd.range_changed(prefix, since + 1).await.map_err(|e| e.to_string())?;
        let next = self.lock_last().as_ref().filter(|s| s.revision == since).and_then(|s| s.advanced(prefix, changed));
        match next {
            Some(next) => {
                self.keep(&next);
                Ok(next)
            }
            None => self.snapshot().await,
        }
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `snap` to bring forward next, unless a newer one is kept.
    fn keep(&self, snap: &Snapshot) {
        let mut last = self.lock_last();
        if last.as_ref().is_none_or(|l| l.revision <= snap.revision) {
            *last = Some(snap.clone());
        }
    }

    /// The records again when another replica changed them since the last
    /// reconciliation, and none of this one's writes is on its way (a
    /// snapshot older than them would undo them in memory). Checked again
    /// under the state's lock with [`Records::still_fresh`].
    pub async fn refresh(&self) -> Result<Option<Snapshot>, String> {
        let Backend::Etcd { etcd, prefix, .. } = &self.backend else { return Ok(None) };
        let p = &self.progress;
        if p.pending.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        let failed = p.failed.load(Ordering::SeqCst);
        let version = etcd.version(prefix).await.map_err(|e| e.to_string())?;
        let synced = (p.synced_version.0.load(Ordering::SeqCst), p.synced_version.1.load(Ordering::SeqCst));
        if version == synced && p.synced.load(Ordering::SeqCst) >= 0 && !failed {
            return Ok(None);
        }
        let snap = self.read_changes().await?;
        Ok(self.fresh(&snap).then_some(snap))
    }

    fn fresh(&self, snap: &Snapshot) -> bool {
        let p = &self.progress;
        p.pending.load(Ordering::SeqCst) == 0 && snap.revision >= p.written.load(Ordering::SeqCst)
    }

    /// Under the state's write lock: whether `snap` still holds every write
    /// made, and is no older than the last one reconciled (refreshes run
    /// side by side); if so it counts as reconciled.
    pub fn still_fresh(&self, snap: &Snapshot) -> bool {
        if !self.fresh(snap) || snap.revision < self.progress.synced.load(Ordering::SeqCst) {
            return false;
        }
        self.progress.synced.store(snap.revision, Ordering::SeqCst);
        self.progress.synced_version.0.store(snap.version.0, Ordering::SeqCst);
        self.progress.synced_version.1.store(snap.version.1, Ordering::SeqCst);
        self.progress.failed.store(false, Ordering::SeqCst);
        true
    }

    /// Waits (at most `limit`) until every queued write is made.
    pub async fn drain(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.progress.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// After this replica's put of a record at `rev` (`added`: a new key): the
/// state, which made the change, is still in sync with etcd when no other
/// record changed since it last was, so the next change need not read
/// every record again (a burst of registrations through one replica was
/// quadratic). Nothing at all since (the revision moved by one) is known
/// at once; otherwise etcd is asked whether a record moved in between, as
/// keys outside the records (ownership, leases) move the revision too.
async fn keep_in_sync(e: &Etcd, records: &str, p: &Progress, rev: i64, added: i64) {
    if p.failed.load(Ordering::SeqCst) {
        return;
    }
    let synced = p.synced.load(Ordering::SeqCst);
    if synced < 0 || synced >= rev {
        return;
    }
    let expected = p.synced_version.1.load(Ordering::SeqCst) + added;
    let count = if synced == rev - 1 {
        expected
    } else {
        match e.changed_between(records, synced + 1, rev - 1).await {
            // A record removed in between shows in the count.
            Ok((false, count)) if count == expected => count,
            _ => return,
        }
    };
    if p.synced.compare_exchange(synced, rev, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
        p.synced_version.0.store(rev, Ordering::SeqCst);
        p.synced_version.1.store(count, Ordering::SeqCst);
    }
}

/// Every record of the local store.
pub fn local_snapshot(s: &Store) -> Result<Snapshot, StoreError> {
    Ok(Snapshot {
        revision: 0,
        version: (0, 0),
        hosts: s.load(HOSTS)?,
        users: s.load(USERS)?,
        apps: s.load(APPS)?,
        ceilings: s.load(CEILINGS)?,
    })
}
