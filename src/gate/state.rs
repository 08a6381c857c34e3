//! Session, approval and rate-limit state behind one small interface, so that a shared backend
//! for multi-replica deployments can replace the in-memory one without touching the pipeline.

use std::time::{Duration, Instant};

use crate::action::{Action, Kind, Session};
use crate::config::Config;
use crate::gate::approvals::Approvals;
use crate::gate::limits::{Limited, Limits};
use crate::gate::sessions::Sessions;

/// Bound on live rate-limit keys per rule (agent ids), so no peer can grow the stores.
pub const MAX_RATE_KEYS: usize = 65_536;

/// Everything the Gate remembers between actions.
pub trait StateStore: Send + Sync {
    /// The session as the policy sees it (`input.session`).
    fn session(&self, agent: &str, id: &str) -> Session;
    /// Count a decided action in its session.
    fn count(&self, agent: &str, id: &str, kind: Kind);
    /// Add the labels of an action that went ahead.
    fn label(&self, agent: &str, id: &str, labels: &[String]);
    /// Charge rate limits and check budgets for one action.
    fn check_limits(&self, agent: &str, action: &Action) -> Result<(), Limited>;
    /// Model usage feeds the token budgets.
    fn charge_tokens(&self, agent: &str, tokens: u64);
    fn approvals(&self) -> &Approvals;
    fn stats(&self) -> StateStats;
}

/// Sizes, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateStats {
    pub sessions: usize,
    pub sessions_evicted: u64,
    pub rate_keys: usize,
    pub approvals_pending: usize,
}

/// The single-process store.
pub struct InMemory {
    sessions: Sessions,
    limits: Limits,
    approvals: Approvals,
}

impl InMemory {
    pub fn new(config: &Config) -> InMemory {
        InMemory {
            sessions: Sessions::new(config.sessions.max, config.sessions.ttl),
            limits: Limits::new(config.limits.clone(), config.budgets.clone(), MAX_RATE_KEYS),
            approvals: Approvals::new(config.approvals.max_pending, config.approvals.timeout),
        }
    }

    /// A store with explicit parts (tests with a fake clock).
    pub fn from_parts(sessions: Sessions, limits: Limits, approvals: Approvals) -> InMemory {
        InMemory {
            sessions,
            limits,
            approvals,
        }
    }

    pub fn approval_timeout(&self) -> Duration {
        self.approvals.timeout()
    }
}

impl StateStore for InMemory {
    fn session(&self, agent: &str, id: &str) -> Session {
        self.sessions.snapshot(agent, id, Instant::now())
    }

    fn count(&self, agent: &str, id: &str, kind: Kind) {
        self.sessions
            .learn(agent, id, kind, &[], false, Instant::now());
    }

    fn label(&self, agent: &str, id: &str, labels: &[String]) {
        if !labels.is_empty() {
            self.sessions.label(agent, id, labels, Instant::now());
        }
    }

    fn check_limits(&self, agent: &str, action: &Action) -> Result<(), Limited> {
        self.limits.check(agent, action)
    }

    fn charge_tokens(&self, agent: &str, tokens: u64) {
        self.limits.charge_tokens(agent, tokens);
    }

    fn approvals(&self) -> &Approvals {
        &self.approvals
    }

    fn stats(&self) -> StateStats {
        StateStats {
            sessions: self.sessions.len(),
            sessions_evicted: self.sessions.evicted(),
            rate_keys: self.limits.keys(),
            approvals_pending: self.approvals.pending_count(),
        }
    }
}
