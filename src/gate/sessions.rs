//! Session state: the labels and per-kind counts that earlier decisions left behind, which the
//! policy sees as `input.session`.
//!
//! Session ids come from peers, so everything here is bounded: at most `max` sessions (the
//! least recently used one is evicted to admit another), sessions idle longer than `ttl` are
//! forgotten (purged lazily), and each session keeps at most [`MAX_LABELS`] labels of at most
//! [`MAX_LABEL_LEN`] bytes. Labels beyond those bounds are dropped and counted
//! ([`Sessions::dropped_labels`]); a policy that relies on a label (taint) being present should
//! not emit unbounded label sets. Counts are keyed by [`Kind`], so they are bounded already.
//!
//! Forgetting a session (eviction, expiry) resets it to empty, which loosens flow policies that
//! look for labels; size `max` and `ttl` for the sessions a deployment really has.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::action::{Kind, Session};

/// Labels kept per session; more are dropped.
pub const MAX_LABELS: usize = 64;
/// Longest label kept, in bytes; longer ones are dropped.
pub const MAX_LABEL_LEN: usize = 128;

/// Bounded session state, keyed by (agent id, session id). `Send + Sync`.
pub struct Sessions {
    max: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

/// Agent id first: two agents using the same session id never share state.
type Key = (String, String);

struct Inner {
    entries: HashMap<Key, Entry>,
    /// Last touch → session, oldest first: the eviction order. Ticks are unique, so this is a
    /// strict order and finding the oldest is O(log n).
    order: BTreeMap<u64, Key>,
    tick: u64,
    evicted: u64,
    dropped_labels: u64,
}

struct Entry {
    tick: u64,
    seen: Instant,
    labels: BTreeSet<String>,
    counts: BTreeMap<Kind, u64>,
}

// === impl Sessions ===

impl Sessions {
    /// `max` is at least 1; `ttl` is how long a session may stay idle before it is forgotten.
    pub fn new(max: usize, ttl: Duration) -> Self {
        Sessions {
            max: max.max(1),
            ttl,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                evicted: 0,
                dropped_labels: 0,
            }),
        }
    }

    /// The session's state as the policy sees it; an unknown or expired session is empty.
    /// A known session is touched (most recently used, idle time restarts). An unknown one is
    /// not created: only [`Sessions::learn`] stores state, so reads alone cannot evict anyone.
    pub fn snapshot(&self, agent: &str, id: &str, now: Instant) -> Session {
        let mut inner = self.lock();
        inner.purge(now, self.ttl);
        let key = (agent.to_string(), id.to_string());
        let mut session = Session {
            id: id.to_string(),
            ..Session::default()
        };
        if let Some(e) = inner.live(&key, now, self.ttl) {
            session.labels = e.labels.clone();
            session.counts = e.counts.iter().map(|(k, n)| (k.to_string(), *n)).collect();
            inner.touch(key, now);
        }
        session
    }

    /// After a decision: `counts[kind] += 1` always (refused attempts count too); `labels` are
    /// added only when `released` (the action went ahead), since only then did it happen.
    pub fn learn(
        &self,
        agent: &str,
        id: &str,
        kind: Kind,
        labels: &[String],
        released: bool,
        now: Instant,
    ) {
        let mut inner = self.lock();
        let mut dropped = 0;
        if let Some(e) = inner.upsert(agent, id, now, self.max, self.ttl) {
            let n = e.counts.entry(kind).or_insert(0);
            *n = n.saturating_add(1);
            if released {
                dropped = e.add_labels(labels);
            }
        }
        inner.dropped_labels += dropped;
    }

    /// Add the labels of an action released later (an approved `ask`) whose decision was
    /// already counted by [`Sessions::learn`], so it is not counted twice.
    pub fn label(&self, agent: &str, id: &str, labels: &[String], now: Instant) {
        if labels.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let mut dropped = 0;
        if let Some(e) = inner.upsert(agent, id, now, self.max, self.ttl) {
            dropped = e.add_labels(labels);
        }
        inner.dropped_labels += dropped;
    }

    /// Sessions held, for metrics; may include expired ones not yet purged.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Sessions evicted to make room (expiry is not counted), for metrics.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// Labels dropped for being too long or over the per-session limit, for metrics.
    pub fn dropped_labels(&self) -> u64 {
        self.lock().dropped_labels
    }

    /// Nothing panics between the paired updates of `entries` and `order` (allocation failure
    /// aborts), so a poisoned lock still guards consistent maps.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Inner ===

impl Inner {
    /// The entry, unless it has expired (then it is removed).
    fn live(&mut self, key: &Key, now: Instant, ttl: Duration) -> Option<&mut Entry> {
        let expired = self.entries.get(key)?.expired(now, ttl);
        if expired {
            self.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    /// The live entry for this session, created (evicting the least recently used one if full)
    /// when absent or expired, and touched.
    fn upsert(
        &mut self,
        agent: &str,
        id: &str,
        now: Instant,
        max: usize,
        ttl: Duration,
    ) -> Option<&mut Entry> {
        self.purge(now, ttl);
        let key = (agent.to_string(), id.to_string());
        if self.live(&key, now, ttl).is_none() {
            while self.entries.len() >= max {
                self.evict_oldest();
            }
            let entry = Entry {
                // Ticks start at 1, so 0 is in no order slot; `touch` below assigns the real one.
                tick: 0,
                seen: now,
                labels: BTreeSet::new(),
                counts: BTreeMap::new(),
            };
            self.entries.insert(key.clone(), entry);
        }
        self.touch(key.clone(), now);
        self.entries.get_mut(&key)
    }

    /// Drop expired sessions from the old end of the order. Amortized O(1) per call; an expired
    /// session further in (only possible when callers' `now`s are out of order) goes when read.
    fn purge(&mut self, now: Instant, ttl: Duration) {
        while let Some((_, key)) = self.order.first_key_value() {
            if self.entries.get(key).is_some_and(|e| !e.expired(now, ttl)) {
                break;
            }
            // Pop from `order` itself, so this ends even if the two maps ever disagreed.
            if let Some((_, key)) = self.order.pop_first() {
                self.entries.remove(&key);
            }
        }
    }

    fn evict_oldest(&mut self) {
        let Some((_, key)) = self.order.pop_first() else {
            // Unreachable while `order` and `entries` agree; clearing restores that.
            self.entries.clear();
            return;
        };
        self.entries.remove(&key);
        self.evicted += 1;
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
        }
    }

    /// Mark as most recently used and restart its idle time.
    fn touch(&mut self, key: Key, now: Instant) {
        self.tick += 1;
        let tick = self.tick;
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let old = std::mem::replace(&mut e.tick, tick);
        e.seen = now;
        self.order.remove(&old);
        self.order.insert(tick, key);
    }
}

impl Entry {
    /// Returns how many labels did not fit.
    fn add_labels(&mut self, labels: &[String]) -> u64 {
        let mut dropped = 0;
        for label in labels {
            if self.labels.contains(label) {
                continue;
            }
            if label.len() > MAX_LABEL_LEN || self.labels.len() >= MAX_LABELS {
                dropped += 1;
                continue;
            }
            self.labels.insert(label.clone());
        }
        dropped
    }

    fn expired(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.seen) > ttl
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn s(secs: u64, base: Instant) -> Instant {
        base + Duration::from_secs(secs)
    }

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_session_is_empty_and_not_stored() {
        let sessions = Sessions::new(10, TTL);
        let snap = sessions.snapshot("a", "s1", Instant::now());
        assert_eq!(snap.id, "s1");
        assert!(snap.labels.is_empty() && snap.counts.is_empty());
        assert!(sessions.is_empty());
    }

    #[test]
    fn counts_always_labels_only_when_released() {
        let t = Instant::now();
        let sessions = Sessions::new(10, TTL);
        sessions.learn("a", "s", Kind::File, &labels(&["secret_read"]), false, t);
        let snap = sessions.snapshot("a", "s", t);
        assert!(snap.labels.is_empty(), "refused actions leave no labels");
        assert_eq!(snap.counts.get("file"), Some(&1));

        sessions.learn("a", "s", Kind::File, &labels(&["secret_read"]), true, t);
        sessions.learn("a", "s", Kind::Exec, &[], true, t);
        let snap = sessions.snapshot("a", "s", t);
        assert_eq!(snap.labels, BTreeSet::from(["secret_read".to_string()]));
        assert_eq!(snap.counts.get("file"), Some(&2));
        assert_eq!(snap.counts.get("exec"), Some(&1));
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn label_adds_without_counting() {
        let t = Instant::now();
        let sessions = Sessions::new(10, TTL);
        // An `ask`: counted when decided, labelled when approved.
        sessions.learn("a", "s", Kind::Exec, &labels(&["ran"]), false, t);
        sessions.label("a", "s", &labels(&["ran"]), s(1, t));
        let snap = sessions.snapshot("a", "s", s(1, t));
        assert_eq!(snap.counts.get("exec"), Some(&1));
        assert!(snap.labels.contains("ran"));
        sessions.label("a", "other", &[], t);
        assert_eq!(sessions.len(), 1, "no labels, no state");
    }

    #[test]
    fn agents_never_share_a_session() {
        let t = Instant::now();
        let sessions = Sessions::new(10, TTL);
        sessions.learn("a1", "same", Kind::Exec, &labels(&["tainted"]), true, t);
        let other = sessions.snapshot("a2", "same", t);
        assert!(other.labels.is_empty() && other.counts.is_empty());
        assert_eq!(sessions.snapshot("a1", "same", t).labels.len(), 1);
    }

    #[test]
    fn least_recently_used_is_evicted() {
        let t = Instant::now();
        let sessions = Sessions::new(3, TTL);
        for id in ["s1", "s2", "s3"] {
            sessions.learn("a", id, Kind::Exec, &labels(&[id]), true, t);
        }
        // Reading s1 saves it; s2 is now the oldest.
        sessions.snapshot("a", "s1", s(1, t));
        sessions.learn("a", "s4", Kind::Exec, &[], true, s(2, t));
        assert_eq!(sessions.len(), 3);
        assert_eq!(sessions.evicted(), 1);
        assert!(sessions.snapshot("a", "s2", s(3, t)).counts.is_empty());
        for id in ["s1", "s3", "s4"] {
            assert!(
                !sessions.snapshot("a", id, s(3, t)).counts.is_empty(),
                "{id}"
            );
        }
        // Learning touches too: s1 is refreshed, so s3 goes next.
        sessions.learn("a", "s1", Kind::Exec, &[], true, s(4, t));
        sessions.snapshot("a", "s4", s(4, t));
        sessions.learn("a", "s5", Kind::Exec, &[], true, s(5, t));
        assert!(sessions.snapshot("a", "s3", s(6, t)).counts.is_empty());
        assert!(!sessions.snapshot("a", "s1", s(6, t)).counts.is_empty());
        assert_eq!(sessions.evicted(), 2);
    }

    #[test]
    fn idle_sessions_expire() {
        let t = Instant::now();
        let sessions = Sessions::new(10, TTL);
        sessions.learn("a", "old", Kind::Exec, &labels(&["x"]), true, t);
        sessions.learn("a", "kept", Kind::Exec, &labels(&["x"]), true, t);
        // Exactly `ttl` idle is still alive, and reading restarts the idle time.
        assert_eq!(sessions.snapshot("a", "kept", s(60, t)).labels.len(), 1);
        assert_eq!(sessions.snapshot("a", "kept", s(100, t)).labels.len(), 1);
        assert!(sessions.snapshot("a", "old", s(100, t)).labels.is_empty());
        assert_eq!(sessions.len(), 1, "the expired one was purged");
        assert_eq!(sessions.evicted(), 0, "expiry is not eviction");

        // An expired session starts over.
        sessions.learn("a", "kept", Kind::File, &[], true, s(200, t));
        let snap = sessions.snapshot("a", "kept", s(200, t));
        assert!(snap.labels.is_empty());
        assert_eq!(snap.counts.len(), 1);
    }

    #[test]
    fn label_bounds() {
        let t = Instant::now();
        let sessions = Sessions::new(10, TTL);
        let long = "x".repeat(MAX_LABEL_LEN + 1);
        let edge = "y".repeat(MAX_LABEL_LEN);
        sessions.learn("a", "s", Kind::Exec, &[long, edge.clone()], true, t);
        assert_eq!(sessions.dropped_labels(), 1);

        let many: Vec<String> = (0..MAX_LABELS + 5).map(|i| format!("l{i}")).collect();
        sessions.learn("a", "s", Kind::Exec, &many, true, t);
        let snap = sessions.snapshot("a", "s", t);
        assert_eq!(snap.labels.len(), MAX_LABELS);
        assert!(snap.labels.contains(&edge));
        assert_eq!(sessions.dropped_labels(), 1 + 6);

        // Labels already held are not new, so repeating them drops nothing.
        sessions.learn("a", "s", Kind::Exec, &[edge], true, t);
        assert_eq!(sessions.dropped_labels(), 7);
    }

    #[test]
    fn sessions_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Sessions>();
    }
}
