//! The classic guardian's event log: store, expire, count, consume.

use std::collections::VecDeque;

use crate::decision::Direction;

/// One up or down event, stamped with the tick that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// When it was made, ms.
    pub time_ms: u64,
    /// Which way.
    pub direction: Direction,
}

/// Events of one resource, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: VecDeque<Event>,
}

/// Live event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Up events (U).
    pub ups: u32,
    /// Down events (D).
    pub downs: u32,
}

impl Counts {
    /// Events of `direction`.
    pub fn of(&self, direction: Direction) -> u32 {
        match direction {
            Direction::Up => self.ups,
            Direction::Down => self.downs,
        }
    }
}

impl EventLog {
    /// Store an event.
    pub fn push(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Drop events with `time_ms < now - timeout` (strict, as the original).
    pub fn expire(&mut self, now_ms: u64, timeout_ms: u64) {
        let Some(horizon) = now_ms.checked_sub(timeout_ms) else {
            return;
        };
        self.events.retain(|e| e.time_ms >= horizon);
    }

    /// Count the events held.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in &self.events {
            match e.direction {
                Direction::Up => c.ups += 1,
                Direction::Down => c.downs += 1,
            }
        }
        c
    }

    /// Consume up to `n` events after a rule fired. The kind consumed is the
    /// only live kind, or, with both live, ups when `U > D` and downs
    /// otherwise (the original's choice, whatever rule fired). Oldest first.
    /// Returns the kind consumed and how many.
    pub fn consume(&mut self, n: u32) -> Option<(Direction, u32)> {
        let c = self.counts();
        let kind = match (c.ups, c.downs) {
            (0, 0) => return None,
            (_, 0) => Direction::Up,
            (0, _) => Direction::Down,
            (u, d) if u > d => Direction::Up,
            _ => Direction::Down,
        };
        let mut left = n;
        self.events.retain(|e| {
            if left > 0 && e.direction == kind {
                left -= 1;
                false
            } else {
                true
            }
        });
        Some((kind, n - left))
    }

    /// Events held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, d: Direction) -> Event {
        Event { time_ms: t, direction: d }
    }

    #[test]
    fn expiry_is_strict() {
        let mut log = EventLog::default();
        log.push(ev(0, Direction::Up));
        log.push(ev(10, Direction::Up));
        // now - timeout = 0: the event at 0 is not older than that, it stays.
        log.expire(40, 40);
        assert_eq!(log.counts().ups, 2);
        log.expire(41, 40);
        assert_eq!(log.counts().ups, 1);
        // Before the first timeout has elapsed nothing expires.
        log.expire(5, 40);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn consumes_majority_kind_oldest_first() {
        let mut log = EventLog::default();
        for (t, d) in [(1, Direction::Down), (2, Direction::Up), (3, Direction::Up), (4, Direction::Up)] {
            log.push(ev(t, d));
        }
        assert_eq!(log.consume(2), Some((Direction::Up, 2)));
        let left: Vec<_> = log.iter().map(|e| e.time_ms).collect();
        assert_eq!(left, vec![1, 4]);
        // Now U = 1, D = 1: a tie consumes downs.
        assert_eq!(log.consume(2), Some((Direction::Down, 1)));
        assert_eq!(log.consume(5), Some((Direction::Up, 1)));
        assert!(log.is_empty());
        assert_eq!(log.consume(1), None);
    }
}
