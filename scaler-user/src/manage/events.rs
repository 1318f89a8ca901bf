//! The decisions log: every limit change the agent makes or notices, kept in
//! a bounded ring for `GET /v1/events` and broadcast live for
//! `GET /v1/events/stream`.

use std::collections::VecDeque;

use policies::Resource;
use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub id: u64,
    pub time_ms: u64,
    pub container: String,
    pub resource: Resource,
    /// `None` = unlimited.
    pub old: Option<u64>,
    pub new: Option<u64>,
    pub reason: String,
}

pub struct EventLog {
    ring: VecDeque<Event>,
    cap: usize,
    next_id: u64,
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
        Self { ring: VecDeque::with_capacity(cap.min(4096)), cap: cap.max(1), next_id: 1, live }
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
        let e = Event { id: self.next_id, time_ms, container: container.to_owned(), resource, old, new, reason };
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
}
