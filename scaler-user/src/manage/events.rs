//! The decisions log: every limit change the agent makes or notices, kept in
//! a bounded ring for `GET /v1/events`, broadcast live for
//! `GET /v1/events/stream`, and stored with the state once a tick (so it
//! survives a restart; what a crash loses is at most the last tick's).

use std::collections::VecDeque;

use policies::Resource;
use tokio::sync::broadcast;

pub use scaler_api::wire::Event;

pub struct EventLog {
    ring: VecDeque<Event>,
    cap: usize,
    next_id: u64,
    /// The newest id stored.
    saved_up_to: u64,
    live: broadcast::Sender<Event>,
}

/// Filter for [`EventLog::query`].
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub since_id: Option<u64>,
    pub since_ms: Option<u64>,
    pub container: Option<String>,
    pub limit: usize,
}

impl EventLog {
    pub fn new(cap: usize) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self { ring: VecDeque::with_capacity(cap.min(4096)), cap: cap.max(1), next_id: 1, saved_up_to: 0, live }
    }

    /// Takes back stored events (oldest first): the newest `cap` are kept
    /// and ids go on from the last one.
    pub fn restore(&mut self, mut events: Vec<Event>) {
        events.sort_by_key(|e| e.id);
        let skip = events.len().saturating_sub(self.cap);
        self.ring = events.into_iter().skip(skip).collect();
        let last = self.ring.back().map_or(0, |e| e.id);
        self.next_id = self.next_id.max(last + 1);
        self.saved_up_to = last;
    }

    /// Events not stored yet, oldest first.
    pub fn unsaved(&self) -> Vec<Event> {
        // Ids rise along the ring: walk back only over the new ones (this
        // runs every tick; the ring holds up to 10,000).
        let n = self.ring.iter().rev().take_while(|e| e.id > self.saved_up_to).count();
        self.ring.iter().skip(self.ring.len() - n).cloned().collect()
    }

    /// Everything up to `id` is stored.
    pub fn mark_saved(&mut self, id: u64) {
        self.saved_up_to = self.saved_up_to.max(id);
    }

    /// The oldest id kept (stored ones below it can go).
    pub fn oldest_id(&self) -> u64 {
        self.ring.front().map_or(self.next_id, |e| e.id)
    }

    pub fn push(
        &mut self,
        time_ms: u64,
        container: &str,
        resource: Resource,
        old: Option<u64>,
        new: Option<u64>,
        reason: String,
    ) {
        self.push_event(Event {
            id: 0,
            time_ms,
            container: container.to_owned(),
            resource: Some(resource),
            old,
            new,
            reason,
        });
    }

    /// A configuration change (no limit changed): of `container`'s policy,
    /// or with `container` empty, of the agent's own settings.
    pub fn push_config(&mut self, time_ms: u64, container: &str, reason: String) {
        self.push_event(Event {
            id: 0,
            time_ms,
            container: container.to_owned(),
            resource: None,
            old: None,
            new: None,
            reason,
        });
    }

    fn push_event(&mut self, mut e: Event) {
        e.id = self.next_id;
        self.next_id += 1;
        if self.ring.len() == self.cap {
            self.ring.pop_front();
        }
        // No subscriber is fine.
        let _ = self.live.send(e.clone());
        self.ring.push_back(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Matching events, oldest first, at most the newest `limit`.
    pub fn query(&self, q: &EventQuery) -> Vec<Event> {
        let matching: Vec<&Event> = self
            .ring
            .iter()
            .filter(|e| q.since_id.is_none_or(|id| e.id > id))
            .filter(|e| q.since_ms.is_none_or(|t| e.time_ms > t))
            .filter(|e| q.container.as_deref().is_none_or(|c| e.container == c))
            .collect();
        let skip = matching.len().saturating_sub(q.limit.max(1));
        matching.into_iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_filtered_and_broadcast() {
        let mut log = EventLog::new(3);
        let mut rx = log.subscribe();
        for i in 0..5u64 {
            log.push(i * 10, if i % 2 == 0 { "a" } else { "b" }, Resource::Cpu, Some(i), Some(i + 1), "r".into());
        }
        let all = log.query(&EventQuery { limit: 100, ..Default::default() });
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3, 4, 5]);
        let a = log.query(&EventQuery { container: Some("a".into()), limit: 100, ..Default::default() });
        assert_eq!(a.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3, 5]);
        assert_eq!(log.query(&EventQuery { since_id: Some(4), limit: 100, ..Default::default() }).len(), 1);
        assert_eq!(log.query(&EventQuery { limit: 1, ..Default::default() })[0].id, 5);
        assert_eq!(rx.try_recv().map(|e| e.id).ok(), Some(1));
    }

    #[test]
    fn restored_events_keep_their_ids_and_new_ones_go_on() {
        let mut log = EventLog::new(3);
        for i in 0..4u64 {
            log.push(i, "a", Resource::Cpu, None, Some(i), "r".into());
        }
        assert_eq!(log.unsaved().len(), 3, "the ring holds 3");
        log.mark_saved(4);
        assert!(log.unsaved().is_empty());
        let stored = log.query(&EventQuery { limit: 100, ..Default::default() });
        let mut back = EventLog::new(2);
        back.restore(stored);
        assert_eq!(back.oldest_id(), 3);
        back.push(9, "a", Resource::Cpu, None, None, "r".into());
        let ids: Vec<u64> = back.query(&EventQuery { limit: 100, ..Default::default() }).iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![4, 5]);
        assert_eq!(back.unsaved().iter().map(|e| e.id).collect::<Vec<_>>(), vec![5]);
    }
}
