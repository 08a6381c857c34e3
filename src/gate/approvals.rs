//! Parked `ask` decisions waiting for a human (DESIGN §3).
//!
//! An approval is bound to the exact Action it was asked for (its digest is recorded with the
//! resolution), resolved once, and denied when nobody answers in time. The queue is bounded:
//! when it is full the Gate denies instead of parking. Resolved entries stay visible for a while
//! so a caller polling `GET /v1/approvals/{id}` learns the outcome, within the same bound.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::action::{Action, Decision};

/// Where an approval stands. Everything but `Pending` is final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved {
        by: String,
    },
    Denied {
        by: String,
    },
    /// Nobody answered before the deadline.
    Expired,
    /// The service stopped while the approval was pending.
    Cancelled,
}

/// What an approver sees and what the resolution record carries.
#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub id: String,
    pub agent: String,
    pub session: String,
    /// sha256 over the Action's JSON: the approval is for exactly this action.
    pub action_digest: String,
    pub action: Action,
    /// The `ask` decision: the rules that asked, and the labels approval adds to the session.
    pub decision: Decision,
    #[serde(serialize_with = "rfc3339")]
    pub created: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub expires: SystemTime,
}

/// Why an approval could not be parked or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("the approval queue is full ({0} pending)")]
    Full(usize),
    #[error("no approval {0:?}")]
    NotFound(String),
    #[error("approval {id:?} is already resolved ({status})")]
    Resolved { id: String, status: String },
    #[error("approval {0:?} is being resolved by another request")]
    Busy(String),
}

struct Entry {
    ticket: Ticket,
    deadline: Instant,
    /// A resolution is being recorded; nobody else may resolve or expire it meanwhile.
    claimed: bool,
    resolved_at: Option<Instant>,
    status: watch::Sender<Status>,
}

/// The in-memory approval queue.
pub struct Approvals {
    entries: Mutex<HashMap<String, Entry>>,
    max_pending: usize,
    timeout: Duration,
}

/// Wait up to `wait` for a final status.
pub async fn wait(mut rx: watch::Receiver<Status>, wait: Duration) -> Status {
    let done = tokio::time::timeout(wait, rx.wait_for(|s| *s != Status::Pending))
        .await
        .map(|r| r.map(|s| s.clone()));
    match done {
        Ok(Ok(s)) => s,
        // Still pending, or the queue dropped the entry (aged out): report what we last saw.
        Ok(Err(_)) | Err(_) => rx.borrow().clone(),
    }
}

/// How long a resolved approval stays visible to pollers.
const KEEP_RESOLVED: Duration = Duration::from_secs(300);

impl Approvals {
    pub fn new(max_pending: usize, timeout: Duration) -> Approvals {
        Approvals {
            entries: Mutex::new(HashMap::new()),
            max_pending,
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Park a ticket. `ticket.created`/`expires` are set here.
    pub fn park(&self, mut ticket: Ticket, now: Instant) -> Result<Ticket, ApprovalError> {
        let mut entries = lock(&self.entries);
        purge_resolved(&mut entries, now, self.max_pending);
        let pending = entries.values().filter(|e| e.resolved_at.is_none()).count();
        if pending >= self.max_pending {
            return Err(ApprovalError::Full(pending));
        }
        ticket.created = SystemTime::now();
        ticket.expires = ticket.created + self.timeout;
        let (status, _) = watch::channel(Status::Pending);
        entries.insert(
            ticket.id.clone(),
            Entry {
                ticket: ticket.clone(),
                deadline: now + self.timeout,
                claimed: false,
                resolved_at: None,
                status,
            },
        );
        Ok(ticket)
    }

    /// Reserve a pending approval for resolution; [`Approvals::finish`] or
    /// [`Approvals::release`] must follow. Separating the two lets the resolution be recorded
    /// durably before anyone sees it.
    pub fn claim(&self, id: &str) -> Result<Ticket, ApprovalError> {
        let mut entries = lock(&self.entries);
        let e = entries
            .get_mut(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        if e.resolved_at.is_some() {
            return Err(ApprovalError::Resolved {
                id: id.to_string(),
                status: status_name(&e.status.borrow()).to_string(),
            });
        }
        if e.claimed {
            return Err(ApprovalError::Busy(id.to_string()));
        }
        e.claimed = true;
        Ok(e.ticket.clone())
    }

    /// Undo a claim whose resolution could not be recorded; the approval stays pending.
    pub fn release(&self, id: &str) {
        if let Some(e) = lock(&self.entries).get_mut(id) {
            e.claimed = false;
        }
    }

    /// Publish the final status of a claimed approval.
    pub fn finish(&self, id: &str, status: Status, now: Instant) {
        if let Some(e) = lock(&self.entries).get_mut(id) {
            e.claimed = false;
            e.resolved_at = Some(now);
            e.status.send_replace(status);
        }
    }

    /// Claim every pending approval past its deadline (or all of them, when `all`), for the
    /// caller to record and then [`Approvals::finish`].
    pub fn claim_due(&self, now: Instant, all: bool) -> Vec<Ticket> {
        let mut entries = lock(&self.entries);
        purge_resolved(&mut entries, now, self.max_pending);
        entries
            .values_mut()
            .filter(|e| e.resolved_at.is_none() && !e.claimed && (all || e.deadline <= now))
            .map(|e| {
                e.claimed = true;
                e.ticket.clone()
            })
            .collect()
    }

    /// Remove an approval nobody can have seen (its ask was never recorded).
    pub fn forget(&self, id: &str) {
        lock(&self.entries).remove(id);
    }

    /// The ticket and a receiver that sees its status change.
    pub fn get(&self, id: &str) -> Option<(Ticket, watch::Receiver<Status>)> {
        lock(&self.entries)
            .get(id)
            .map(|e| (e.ticket.clone(), e.status.subscribe()))
    }

    /// Pending approvals, oldest first.
    pub fn pending(&self) -> Vec<Ticket> {
        let entries = lock(&self.entries);
        let mut out: Vec<Ticket> = entries
            .values()
            .filter(|e| e.resolved_at.is_none())
            .map(|e| e.ticket.clone())
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        out
    }

    pub fn pending_count(&self) -> usize {
        lock(&self.entries)
            .values()
            .filter(|e| e.resolved_at.is_none())
            .count()
    }

    /// The earliest deadline of a pending approval, for the expiry timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        lock(&self.entries)
            .values()
            .filter(|e| e.resolved_at.is_none() && !e.claimed)
            .map(|e| e.deadline)
            .min()
    }
}

/// Drop resolved entries older than [`KEEP_RESOLVED`], and the oldest ones beyond `max`.
fn purge_resolved(entries: &mut HashMap<String, Entry>, now: Instant, max: usize) {
    entries.retain(|_, e| {
        e.resolved_at
            .is_none_or(|t| now.saturating_duration_since(t) < KEEP_RESOLVED)
    });
    let mut resolved: Vec<(Instant, String)> = entries
        .iter()
        .filter_map(|(id, e)| e.resolved_at.map(|t| (t, id.clone())))
        .collect();
    if resolved.len() > max {
        resolved.sort();
        for (_, id) in resolved.iter().take(resolved.len() - max) {
            entries.remove(id);
        }
    }
}

pub fn status_name(s: &Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Approved { .. } => "approved",
        Status::Denied { .. } => "denied",
        Status::Expired => "expired",
        Status::Cancelled => "cancelled",
    }
}

/// RFC 3339 with milliseconds, UTC: how every time in the API is written.
pub(crate) fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let t: chrono::DateTime<chrono::Utc> = (*t).into();
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::action_from_value;

    fn ticket(id: &str) -> Ticket {
        Ticket {
            id: id.into(),
            agent: "a".into(),
            session: "s".into(),
            action_digest: "sha256:00".into(),
            action: action_from_value(
                serde_json::json!({"kind": "exec", "via": "decide", "exec": {"command": "ls"}}),
            )
            .unwrap(),
            decision: Decision::deny("x", "y", "z"),
            created: SystemTime::UNIX_EPOCH,
            expires: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn bounded_claim_once_and_expire() {
        let q = Approvals::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        q.park(ticket("a"), t0).unwrap();
        q.park(ticket("b"), t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(q.park(ticket("c"), t0).unwrap_err(), ApprovalError::Full(2));

        let (_, mut rx) = q.get("a").unwrap();
        q.claim("a").unwrap();
        assert_eq!(q.claim("a").unwrap_err(), ApprovalError::Busy("a".into()));
        q.finish("a", Status::Approved { by: "alice".into() }, t0);
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            *rx.borrow_and_update(),
            Status::Approved { by: "alice".into() }
        );
        assert!(matches!(q.claim("a"), Err(ApprovalError::Resolved { .. })));
        assert_eq!(q.pending_count(), 1);
        // A resolved approval frees its slot.
        q.park(ticket("c"), t0).unwrap();

        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(q.claim_due(t0 + Duration::from_secs(9), false).is_empty());
        let due = q.claim_due(t0 + Duration::from_secs(10), false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].id, "c");
        // Claimed entries are not handed out twice.
        assert!(q.claim_due(t0 + Duration::from_secs(10), false).is_empty());
        assert_eq!(q.claim_due(t0, true).len(), 1);
    }

    #[test]
    fn released_claims_stay_pending_and_resolved_entries_age_out() {
        let q = Approvals::new(4, Duration::from_secs(10));
        let t0 = Instant::now();
        q.park(ticket("a"), t0).unwrap();
        q.claim("a").unwrap();
        q.release("a");
        q.claim("a").unwrap();
        q.finish("a", Status::Expired, t0);
        assert!(q.get("a").is_some());
        q.claim_due(t0 + KEEP_RESOLVED, false);
        assert!(q.get("a").is_none());
        assert_eq!(
            q.claim("zz").unwrap_err(),
            ApprovalError::NotFound("zz".into())
        );
    }
}
