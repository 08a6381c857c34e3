//! The Gate: the one code path that normalizes an Action, evaluates policy and writes the audit
//! record (DESIGN §1). Front ends and the CLI call it once per action and enforce what it says.
//!
//! A decision is released only once its audit record is durable ([`Pending::finish`]); if the
//! record cannot be written the decision becomes a deny with reason `audit_unavailable`.
//! Identity, limits, sessions and approvals join this pipeline with the gateway runtime.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::action::{Action, Decision, reason};
use crate::audit::{AuditLog, Entry, Receipt};
use crate::input::InputError;
use crate::normalize::{self, Context, NormalizeError};
use crate::policy::PolicySet;

/// Why an action was refused before it could be decided. Nothing is recorded for these.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("invalid action: {0}")]
    Normalize(#[from] NormalizeError),
}

/// Normalization context, policy and (optionally) the audit log.
pub struct Gate {
    ctx: Context,
    policy: PolicySet,
    audit: Option<AuditLog>,
}

/// A decided action whose audit record may still be on its way to disk.
pub struct Pending {
    pub action: Action,
    decision: Decision,
    receipt: Option<Result<Receipt, String>>,
    latency_us: u64,
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
}

// === impl Gate ===

impl Gate {
    pub fn new(ctx: Context, policy: PolicySet, audit: Option<AuditLog>) -> Gate {
        Gate { ctx, policy, audit }
    }

    pub fn policy(&self) -> &PolicySet {
        &self.policy
    }

    /// Normalize `action` in place (derived fields overwritten). Exposed so callers can show
    /// exactly what the policy will see.
    pub fn normalize(&self, action: &mut Action) -> Result<(), GateError> {
        normalize::normalize(action, &self.ctx)?;
        Ok(())
    }

    /// Decide one action and enqueue its audit record. Call [`Pending::finish`] to release it.
    pub fn decide(&self, mut action: Action) -> Result<Pending, GateError> {
        let start = Instant::now();
        self.normalize(&mut action)?;
        let decision = match to_input(&action) {
            Ok(input) => self.policy.decide(input),
            // Never decide on a partial input: the policy could allow what it cannot see.
            Err(e) => Decision::deny(reason::POLICY_ERROR, e, self.policy.digest()),
        };
        let latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let receipt = self.audit.as_ref().map(|log| {
            let entry = audit_entry(&action, &decision, latency_us)?;
            log.submit(entry).map_err(|e| e.to_string())
        });
        Ok(Pending {
            action,
            decision,
            receipt,
            latency_us,
        })
    }

    /// Decide and wait until the record is durable.
    pub fn decide_now(&self, action: Action) -> Result<(Action, Decision), GateError> {
        let pending = self.decide(action)?;
        let action = pending.action.clone();
        Ok((action, pending.finish()))
    }
}

/// The policy `input`: the Action as a regorus value.
pub fn to_input(action: &Action) -> Result<regorus::Value, String> {
    serde_json::to_value(action)
        .map(regorus::Value::from)
        .map_err(|e| format!("cannot build the policy input: {e}"))
}

/// The audit body, with every secret value masked (DESIGN §7.5).
fn audit_entry(action: &Action, decision: &Decision, latency_us: u64) -> Result<Entry, String> {
    let record = DecisionRecord {
        record_type: "decision",
        action,
        decision,
        policy_digest: &decision.policy_digest,
        latency_us,
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
    /// Wait for the audit record; release the decision only if it is durable. Logs the one
    /// structured event of this decision, with the outcome that is enforced.
    pub fn finish(self) -> Decision {
        let digest = &self.decision.policy_digest;
        let decision = match self.receipt {
            None => self.decision,
            Some(Ok(receipt)) => match receipt.wait() {
                Ok(_) => self.decision,
                Err(e) => audit_unavailable(e.to_string(), digest),
            },
            Some(Err(e)) => audit_unavailable(e, digest),
        };
        tracing::info!(
            action.id = %self.action.id,
            action.kind = %self.action.kind,
            decision.outcome = %decision.outcome,
            decision.rule = decision.reasons.first().map(|r| r.rule.as_str()).unwrap_or(""),
            latency_us = self.latency_us,
            "decision"
        );
        decision
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
