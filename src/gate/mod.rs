//! The Gate: the one code path that normalizes an Action, evaluates policy and writes the audit
//! record (DESIGN §1). Front ends and the CLI call it once per action and enforce what it says.
//!
//! Two entry points share that path. [`Gate::decide`] decides an Action as given (the CLI,
//! where `agent` and `session` come from the document). [`Gate::decide_for`] is the service
//! path: it sets `agent` and `session` from the caller's credentials, charges rate limits,
//! counts the action in its session and parks an `ask` for a human.
//!
//! A decision is released only once its audit record is durable ([`Pending::finish`],
//! [`Pending::release`]); if the record cannot be written the decision becomes a deny with
//! reason `audit_unavailable`.

pub mod approvals;
pub mod identity;
pub mod limits;
pub mod sessions;
pub mod state;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::action::{Action, Decision, Outcome, Reason, reason};
use crate::audit::{AuditLog, Entry, Receipt};
use crate::input::InputError;
use crate::metrics::Metrics;
use crate::normalize::{self, Context, NormalizeError};
use crate::policy::PolicySet;
use approvals::{ApprovalError, Status, Ticket};
use identity::Caller;
use state::StateStore;

/// Why an action was refused before it could be decided. Nothing is recorded for these.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("invalid action: {0}")]
    Normalize(#[from] NormalizeError),
    #[error("{0} is set by the proxy from the caller's credentials; remove it from the action")]
    Reserved(&'static str),
    #[error("id: must be 1 to 128 characters of letters, digits and `-_.:` (or absent)")]
    BadId,
}

/// Normalization context, policy, the audit log and (for the service) session state.
pub struct Gate {
    ctx: Context,
    policy: RwLock<PolicySet>,
    audit: Option<AuditLog>,
    state: Option<Arc<dyn StateStore>>,
    metrics: Option<Arc<Metrics>>,
    /// Set at shutdown: no new approvals are parked, since nobody would resolve them.
    stopping: std::sync::atomic::AtomicBool,
    /// Set where nobody can answer an `ask` (a stdio wrapper without an admin API): asks are
    /// denied at once, with this explanation, instead of parked until they time out.
    no_approver: Option<&'static str>,
}

/// A decided action not yet recorded (see [`Gate::decide_unrecorded`]).
pub struct Decided {
    action: Action,
    decision: Decision,
    latency_us: u64,
}

impl Decided {
    /// The normalized action, as the policy saw it.
    pub fn action(&self) -> &Action {
        &self.action
    }
}

/// A decided action whose audit record may still be on its way to disk.
pub struct Pending {
    pub action: Action,
    decision: Decision,
    receipt: Option<Result<Receipt, String>>,
    latency_us: u64,
    /// Set on the service path: where to learn and park.
    service: Option<Service>,
}

struct Service {
    state: Arc<dyn StateStore>,
    metrics: Option<Arc<Metrics>>,
    agent: String,
    session: String,
    /// The parked approval of an `ask`.
    approval: Option<Ticket>,
}

/// What a front end enforces: the decision, and for a parked `ask` the approval to wait on.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Decision,
    pub approval: Option<Ticket>,
}

/// The audit record body for one decision (DESIGN §4).
#[derive(Serialize)]
struct DecisionRecord<'a> {
    #[serde(rename = "type")]
    record_type: &'static str,
    action: &'a Action,
    decision: &'a Decision,
    policy_digest: &'a str,
    latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: Option<&'a str>,
}

/// The audit record body for one approval resolution.
#[derive(Serialize)]
struct ApprovalRecord<'a> {
    #[serde(rename = "type")]
    record_type: &'static str,
    approval_id: &'a str,
    action_id: &'a str,
    action_digest: &'a str,
    agent: &'a str,
    session: &'a str,
    resolution: &'static str,
    /// The admin who resolved it; empty for expiry and shutdown.
    approver: &'a str,
}

/// Why an approval could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error("the action digest does not match approval {0:?}: it is not the action you reviewed")]
    DigestMismatch(String),
    #[error("the resolution could not be recorded: {0}")]
    Audit(String),
    #[error("this gate has no approval queue")]
    NoState,
}

// === impl Gate ===

impl Gate {
    pub fn new(ctx: Context, policy: PolicySet, audit: Option<AuditLog>) -> Gate {
        Gate {
            ctx,
            policy: RwLock::new(policy),
            audit,
            state: None,
            metrics: None,
            stopping: std::sync::atomic::AtomicBool::new(false),
            no_approver: None,
        }
    }

    /// Deny every `ask` at once with `why`: nobody here can approve.
    pub fn without_approver(mut self, why: &'static str) -> Gate {
        self.no_approver = Some(why);
        self
    }

    /// Keep sessions, limits and approvals in `state` (the service path).
    pub fn with_state(mut self, state: Arc<dyn StateStore>, metrics: Arc<Metrics>) -> Gate {
        self.state = Some(state);
        self.metrics = Some(metrics);
        self
    }

    /// The policy set in force now.
    pub fn policy(&self) -> PolicySet {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Put `set` in force. Decisions already running finish on the set they started with.
    pub fn replace_policy(&self, set: PolicySet) {
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = set;
    }

    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    pub fn state(&self) -> Option<&Arc<dyn StateStore>> {
        self.state.as_ref()
    }

    /// Normalize `action` in place (derived fields overwritten). Exposed so callers can show
    /// exactly what the policy will see.
    pub fn normalize(&self, action: &mut Action) -> Result<(), GateError> {
        normalize::normalize(action, &self.ctx)?;
        Ok(())
    }

    /// Decide one action as given and enqueue its audit record. Call [`Pending::finish`] to
    /// release it.
    pub fn decide(&self, action: Action) -> Result<Pending, GateError> {
        let decided = self.decide_unrecorded(action)?;
        Ok(self.record_decided(decided))
    }

    /// The first half of [`Gate::decide`]: normalize and evaluate, touching nothing else, so
    /// it may run on any thread. Nothing is enforceable until [`Gate::record_decided`] has
    /// recorded it; a caller that never records it has decided nothing.
    pub fn decide_unrecorded(&self, mut action: Action) -> Result<Decided, GateError> {
        let start = Instant::now();
        self.normalize(&mut action)?;
        let decision = evaluate(&self.policy(), &action);
        Ok(Decided {
            action,
            decision,
            latency_us: micros_since(start),
        })
    }

    /// The second half of [`Gate::decide`]: enqueue the audit record. Records are appended in
    /// the order of these calls.
    pub fn record_decided(&self, d: Decided) -> Pending {
        self.record(d.action, d.decision, d.latency_us, None)
    }

    /// Decide and wait until the record is durable (synchronous callers).
    pub fn decide_now(&self, action: Action) -> Result<(Action, Decision), GateError> {
        let pending = self.decide(action)?;
        let action = pending.action.clone();
        Ok((action, pending.finish()))
    }

    /// The service path: `caller` and `session` come from credentials and headers, never from
    /// the action. Rate limits are charged before the policy runs; an `ask` is parked.
    pub fn decide_for(
        &self,
        caller: &Caller,
        session: &str,
        mut action: Action,
    ) -> Result<Pending, GateError> {
        let start = Instant::now();
        if action.agent.is_some() {
            return Err(GateError::Reserved("agent"));
        }
        if action.session.is_some() {
            return Err(GateError::Reserved("session"));
        }
        // The id reaches logs and lookups: keep it short and plain.
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        if action.id.len() > 128 || !action.id.bytes().all(plain) {
            return Err(GateError::BadId);
        }
        let Some(state) = self.state.clone() else {
            return self.decide(action);
        };
        self.normalize(&mut action)?;
        let agent = caller.agent.id.as_str();
        action.agent = Some(caller.agent.clone());
        action.session = Some(state.session(agent, session));
        let policy = self.policy();
        let mut decision = match state.check_limits(agent, &action) {
            Ok(()) => evaluate(&policy, &action),
            Err(limited) => {
                if let Some(m) = &self.metrics {
                    m.rate_limited(&limited.rule);
                }
                let what = if limited.budget {
                    "token budget"
                } else {
                    "rate limit"
                };
                Decision::deny(
                    reason::RATE_LIMITED,
                    format!(
                        "{what} {:?} exhausted; retry in {} ms",
                        limited.rule,
                        limited.retry_after.as_millis()
                    ),
                    policy.digest(),
                )
            }
        };
        state.count(agent, session, action.kind);
        // Model usage feeds the token budgets, whatever is decided: the tokens were spent.
        if action.kind == crate::action::Kind::ModelResponse
            && let Some(m) = &action.model
        {
            let tokens = m.usage.input_tokens.saturating_add(m.usage.output_tokens);
            state.charge_tokens(agent, tokens);
        }
        let mut approval = None;
        if decision.outcome == Outcome::Ask
            && self.stopping.load(std::sync::atomic::Ordering::SeqCst)
        {
            decision.tighten(
                Outcome::Deny,
                Reason {
                    rule: reason::APPROVAL_CANCELLED.into(),
                    message: "the service is stopping and cannot ask a human".into(),
                },
            );
        }
        if decision.outcome == Outcome::Ask
            && let Some(why) = self.no_approver
        {
            decision.tighten(
                Outcome::Deny,
                Reason {
                    rule: reason::APPROVAL_UNAVAILABLE.into(),
                    message: why.into(),
                },
            );
        }
        if decision.outcome == Outcome::Ask {
            match state
                .approvals()
                .park(ticket(&action, &decision, agent, session), Instant::now())
            {
                Ok(t) => approval = Some(t),
                Err(e) => {
                    decision.tighten(
                        Outcome::Deny,
                        Reason {
                            rule: reason::APPROVALS_FULL.into(),
                            message: format!("cannot ask a human: {e}"),
                        },
                    );
                }
            }
        }
        let service = Service {
            state,
            metrics: self.metrics.clone(),
            agent: agent.to_string(),
            session: session.to_string(),
            approval,
        };
        Ok(self.record(action, decision, micros_since(start), Some(service)))
    }

    /// The service path for an action the front end refuses on its own authority (a model's
    /// tool call whose arguments are not JSON, a call cut off by the upstream, one over a held
    /// bytes limit): no policy runs, but the action gets its one audit record like any other.
    pub fn refuse_for(
        &self,
        caller: &Caller,
        session: &str,
        mut action: Action,
        rule: &str,
        message: String,
    ) -> Pending {
        let start = Instant::now();
        let policy = self.policy();
        let decision = Decision::deny(rule, message, policy.digest());
        if action.id.is_empty() {
            action.id = ulid::Ulid::new().to_string();
        }
        // Best effort: the findings of what could be read are recorded; nothing is decided on them.
        let _ = self.normalize(&mut action);
        let agent = caller.agent.id.as_str();
        action.agent = Some(caller.agent.clone());
        let service = self.state.clone().map(|state| {
            action.session = Some(state.session(agent, session));
            state.count(agent, session, action.kind);
            Service {
                state,
                metrics: self.metrics.clone(),
                agent: agent.to_string(),
                session: session.to_string(),
                approval: None,
            }
        });
        self.record(action, decision, micros_since(start), service)
    }

    fn record(
        &self,
        action: Action,
        decision: Decision,
        latency_us: u64,
        service: Option<Service>,
    ) -> Pending {
        let approval_id = service
            .as_ref()
            .and_then(|s| s.approval.as_ref())
            .map(|t| t.id.as_str());
        let receipt = self.audit.as_ref().map(|log| {
            let entry = audit_entry(&action, &decision, latency_us, approval_id)?;
            log.submit(entry).map_err(|e| e.to_string())
        });
        Pending {
            action,
            decision,
            receipt,
            latency_us,
            service,
        }
    }

    /// Approve or deny a parked action as `approver`. The resolution is recorded durably before
    /// the waiting caller sees it; if it cannot be recorded the approval stays pending.
    /// `digest`, when given, must be the digest of the action the approver reviewed.
    pub async fn resolve(
        &self,
        id: &str,
        approver: &str,
        approve: bool,
        digest: Option<&str>,
    ) -> Result<Ticket, ResolveError> {
        let state = self.state.as_ref().ok_or(ResolveError::NoState)?;
        let queue = state.approvals();
        let ticket = queue.claim(id)?;
        if digest.is_some_and(|d| d != ticket.action_digest) {
            queue.release(id);
            return Err(ResolveError::DigestMismatch(id.to_string()));
        }
        let status = if approve {
            Status::Approved {
                by: approver.to_string(),
            }
        } else {
            Status::Denied {
                by: approver.to_string(),
            }
        };
        if let Err(e) = self.record_resolution(&ticket, &status).await {
            queue.release(id);
            return Err(ResolveError::Audit(e));
        }
        if approve {
            state.label(&ticket.agent, &ticket.session, &ticket.decision.labels);
        }
        queue.finish(id, status, Instant::now());
        self.count_resolution();
        Ok(ticket)
    }

    /// Stop parking approvals (shutdown); asks are denied from now on.
    pub fn stop_asking(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Deny every approval past its deadline (or every pending one, at shutdown). A resolution
    /// that cannot be recorded still denies: that is the safe side.
    pub async fn expire_approvals(&self, all: bool) -> usize {
        let Some(state) = &self.state else { return 0 };
        let due = state.approvals().claim_due(Instant::now(), all);
        let status = if all {
            Status::Cancelled
        } else {
            Status::Expired
        };
        for t in &due {
            if let Err(e) = self.record_resolution(t, &status).await {
                tracing::error!(approval.id = %t.id, audit.error = %e, "approval resolution not recorded");
            }
            state
                .approvals()
                .finish(&t.id, status.clone(), Instant::now());
            self.count_resolution();
        }
        due.len()
    }

    fn count_resolution(&self) {
        if let Some(m) = &self.metrics {
            m.approvals_resolved
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    async fn record_resolution(&self, t: &Ticket, status: &Status) -> Result<(), String> {
        let approver = match status {
            Status::Approved { by } | Status::Denied { by } => by.as_str(),
            _ => "",
        };
        let record = ApprovalRecord {
            record_type: "approval",
            approval_id: &t.id,
            action_id: &t.action.id,
            action_digest: &t.action_digest,
            agent: &t.agent,
            session: &t.session,
            resolution: approvals::status_name(status),
            approver,
        };
        tracing::info!(approval.id = %t.id, approval.resolution = record.resolution, approval.approver = approver, "approval resolved");
        let Some(log) = &self.audit else {
            return Ok(());
        };
        let entry = Entry::from_serialize(&record).map_err(|e| e.to_string())?;
        let receipt = log.submit(entry).map_err(|e| e.to_string())?;
        receipt
            .durable()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A decision as finally enforced: what the policy said, or for an `ask` what its human said.
#[derive(Debug, Clone)]
pub struct Concluded {
    pub action_id: String,
    pub decision: Decision,
    pub approval_id: Option<String>,
}

impl Gate {
    /// Release `pending` once its record is durable; an `ask` then waits for its human (up to
    /// the approval timeout), and one still pending at the deadline is a deny (the expiry task
    /// records it).
    pub async fn conclude(&self, pending: Pending) -> Concluded {
        let action_id = pending.action.id.clone();
        let verdict = pending.release().await;
        let approval_id = verdict.approval.as_ref().map(|t| t.id.clone());
        let parked = verdict.approval.as_ref().and_then(|t| {
            let state = self.state.as_ref()?;
            let (_, rx) = state.approvals().get(&t.id)?;
            Some((rx, state.approvals().timeout()))
        });
        let decision = match parked {
            None => verdict.decision,
            Some((rx, timeout)) => {
                let status = approvals::wait(rx, timeout).await;
                resolved_decision(&verdict.decision, &status).unwrap_or_else(|| {
                    let mut d = verdict.decision;
                    d.outcome = Outcome::Deny;
                    d
                })
            }
        };
        Concluded {
            action_id,
            decision,
            approval_id,
        }
    }

    /// Conclude every pending decision; the strictest wins (the first of equals).
    pub async fn conclude_all(&self, pendings: Vec<Pending>) -> Option<Concluded> {
        let mut worst: Option<Concluded> = None;
        for p in pendings {
            let c = self.conclude(p).await;
            if worst
                .as_ref()
                .is_none_or(|w| c.decision.outcome > w.decision.outcome)
            {
                worst = Some(c);
            }
        }
        worst
    }
}

/// What a resolved approval means for the action.
pub fn resolved_decision(ask: &Decision, status: &Status) -> Option<Decision> {
    let (outcome, rule, message) = match status {
        Status::Pending => return None,
        Status::Approved { by } => (
            Outcome::Allow,
            reason::APPROVED,
            format!("approved by {by}"),
        ),
        Status::Denied { by } => (
            Outcome::Deny,
            reason::APPROVAL_DENIED,
            format!("denied by {by}"),
        ),
        Status::Expired => (
            Outcome::Deny,
            reason::APPROVAL_TIMEOUT,
            "nobody answered in time".into(),
        ),
        Status::Cancelled => (
            Outcome::Deny,
            reason::APPROVAL_CANCELLED,
            "the service stopped".into(),
        ),
    };
    let mut d = ask.clone();
    d.outcome = outcome;
    d.reasons.push(Reason {
        rule: rule.into(),
        message,
    });
    Some(d)
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn evaluate(policy: &PolicySet, action: &Action) -> Decision {
    match to_input(action) {
        Ok(input) => policy.decide(input),
        // Never decide on a partial input: the policy could allow what it cannot see.
        Err(e) => Decision::deny(reason::POLICY_ERROR, e, policy.digest()),
    }
}

/// sha256 over the Action's JSON: what an approval is bound to.
pub fn action_digest(action: &Action) -> String {
    let bytes = serde_json::to_vec(action).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// What approvers see: secret values masked, as in the audit log (policy messages may quote
/// the command). The digest is still over the real action.
fn masked<T: Serialize + serde::de::DeserializeOwned + Clone>(action: &Action, item: &T) -> T {
    let has_findings = action
        .content
        .as_ref()
        .is_some_and(|c| !c.findings.is_empty());
    if !has_findings {
        return item.clone();
    }
    let Ok(mut value) = serde_json::to_value(item) else {
        return item.clone();
    };
    normalize::mask_secrets(&mut value);
    serde_json::from_value(value).unwrap_or_else(|_| item.clone())
}

fn ticket(action: &Action, decision: &Decision, agent: &str, session: &str) -> Ticket {
    Ticket {
        id: ulid::Ulid::new().to_string(),
        agent: agent.to_string(),
        session: session.to_string(),
        action_digest: action_digest(action),
        action: masked(action, action),
        decision: masked(action, decision),
        created: std::time::SystemTime::now(),
        expires: std::time::SystemTime::now(),
    }
}

/// The policy `input`: the Action as a regorus value.
pub fn to_input(action: &Action) -> Result<regorus::Value, String> {
    serde_json::to_value(action)
        .map(regorus::Value::from)
        .map_err(|e| format!("cannot build the policy input: {e}"))
}

/// The audit body, with every secret value masked (DESIGN §7.5).
fn audit_entry(
    action: &Action,
    decision: &Decision,
    latency_us: u64,
    approval_id: Option<&str>,
) -> Result<Entry, String> {
    let record = DecisionRecord {
        record_type: "decision",
        action,
        decision,
        policy_digest: &decision.policy_digest,
        latency_us,
        approval_id,
    };
    let has_findings = action
        .content
        .as_ref()
        .is_some_and(|c| !c.findings.is_empty());
    if !has_findings {
        return Entry::from_serialize(&record).map_err(|e| e.to_string());
    }
    let mut value = serde_json::to_value(&record).map_err(|e| e.to_string())?;
    normalize::mask_secrets(&mut value);
    match value {
        Value::Object(map) => Entry::from_json_object(&map).map_err(|e| e.to_string()),
        _ => Err("audit record is not an object".into()),
    }
}

// === impl Pending ===

impl Pending {
    /// The decision as made, before its record is durable (and before an `ask` is answered):
    /// for planning only, never for enforcing.
    pub fn provisional(&self) -> &Decision {
        &self.decision
    }

    /// Block until the audit record is durable; release the decision only if it is. For
    /// synchronous callers (the CLI); asynchronous code uses [`Pending::release`].
    pub fn finish(mut self) -> Decision {
        let written = match self.receipt.take() {
            None => Ok(()),
            Some(Ok(receipt)) => receipt.wait().map(|_| ()).map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e),
        };
        self.settle(written).decision
    }

    /// The verdict now, if the audit record's fate is already known (always in buffered mode,
    /// where the record was written before `decide` returned); else `self` back, to be
    /// [`release`](Pending::release)d (boxed: it is large, and this is the slow path). A
    /// caller that may be cancelled can thus settle without handing the wait to a task.
    pub fn try_release(mut self) -> Result<Verdict, Box<Pending>> {
        let written = match &mut self.receipt {
            None => Ok(()),
            Some(Ok(receipt)) => match receipt.try_durable() {
                None => return Err(Box::new(self)),
                Some(r) => r.map(|_| ()).map_err(|e| e.to_string()),
            },
            Some(Err(e)) => Err(std::mem::take(e)),
        };
        self.receipt = None;
        Ok(self.settle(written))
    }

    /// Wait for the audit record without blocking the thread.
    pub async fn release(mut self) -> Verdict {
        let written = match self.receipt.take() {
            None => Ok(()),
            Some(Ok(receipt)) => receipt
                .durable()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e),
        };
        self.settle(written)
    }

    /// The decision as it is enforced, and the one structured event that says so.
    fn settle(self, written: Result<(), String>) -> Verdict {
        let mut approval = None;
        let decision = match written {
            Ok(()) => {
                if let Some(s) = &self.service {
                    approval = s.approval.clone();
                    if self.decision.outcome == Outcome::Allow {
                        s.state.label(&s.agent, &s.session, &self.decision.labels);
                    }
                }
                self.decision
            }
            Err(e) => {
                // Nobody can have been told about an ask that was never recorded.
                if let Some(s) = &self.service
                    && let Some(t) = &s.approval
                {
                    s.state.approvals().forget(&t.id);
                }
                audit_unavailable(e, &self.decision.policy_digest)
            }
        };
        if let Some(m) = self.service.as_ref().and_then(|s| s.metrics.as_ref()) {
            m.decided(self.action.kind, &decision, self.latency_us);
        }
        tracing::info!(
            action.id = %self.action.id,
            action.kind = %self.action.kind,
            agent = self.service.as_ref().map(|s| s.agent.as_str()).unwrap_or(""),
            session = self.service.as_ref().map(|s| s.session.as_str()).unwrap_or(""),
            decision.outcome = %decision.outcome,
            decision.rule = decision.reasons.first().map(|r| r.rule.as_str()).unwrap_or(""),
            approval.id = approval.as_ref().map(|t| t.id.as_str()).unwrap_or(""),
            latency_us = self.latency_us,
            "decision"
        );
        Verdict { decision, approval }
    }
}

fn audit_unavailable(message: String, digest: &str) -> Decision {
    tracing::error!(audit.error = %message, "audit record not written; denying");
    Decision::deny(
        reason::AUDIT_UNAVAILABLE,
        format!("the audit log cannot record this decision: {message}"),
        digest,
    )
}

#[cfg(test)]
mod tests;
