//! Counters and histograms, rendered in the Prometheus text format (version 0.0.4).
//!
//! A handful of atomics and small maps: no registry crate is needed for what the admin
//! listener exposes. Label sets that a policy controls (rule ids) are bounded; beyond the bound
//! they are counted under `rule="other"`.

use crate::sync::lock;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::action::{Decision, Kind, Outcome};

/// Most distinct (outcome, kind, rule) series kept.
const MAX_SERIES: usize = 2048;

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// A cumulative histogram of microsecond durations.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, us: u64) {
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = *b as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Everything the service counts.
#[derive(Default)]
pub struct Metrics {
    decisions: Mutex<HashMap<(Outcome, Kind, String), u64>>,
    pub decision_latency: Histogram,
    rate_limited: Mutex<HashMap<String, u64>>,
    http: Mutex<HashMap<(&'static str, u16), u64>>,
    pub request_latency: Histogram,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// 1 when the last reload attempt succeeded (or none was made), else 0.
    pub reload_healthy: AtomicI64,
    pub connections_active: AtomicI64,
    pub connections_rejected: AtomicU64,
    pub approvals_resolved: AtomicU64,
}

/// Gauges read from other parts at render time.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub audit_queue_depth: u64,
    pub audit_records: u64,
    pub audit_last_fsync_us: u64,
    pub audit_failures: u64,
    pub audit_queue_full: u64,
    pub audit_failed: bool,
    pub sessions: usize,
    pub sessions_evicted: u64,
    pub rate_keys: usize,
    pub approvals_pending: usize,
    pub policy_digest: String,
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics::default();
        m.reload_healthy.store(1, Ordering::Relaxed);
        m
    }

    pub fn decided(&self, kind: Kind, decision: &Decision, latency_us: u64) {
        let rule = decision
            .reasons
            .first()
            .map(|r| r.rule.as_str())
            .unwrap_or("");
        bump(
            &self.decisions,
            (decision.outcome, kind, rule.to_string()),
            |(o, k, _)| (o, k, "other".to_string()),
        );
        self.decision_latency.observe(latency_us);
    }

    pub fn rate_limited(&self, rule: &str) {
        bump(&self.rate_limited, rule.to_string(), |_| {
            "other".to_string()
        });
    }

    pub fn http(&self, listener: &'static str, status: u16, latency_us: u64) {
        bump(&self.http, (listener, status), |k| k);
        self.request_latency.observe(latency_us);
    }

    /// The whole exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(8192);
        header(
            &mut out,
            "portcullis_decisions_total",
            "counter",
            "Decisions by outcome, kind and first rule.",
        );
        let mut rows: Vec<_> = lock(&self.decisions)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        rows.sort();
        for ((outcome, kind, rule), n) in rows {
            let outcome = outcome_str(outcome);
            let rule = escape(&rule);
            let _ = writeln!(
                out,
                "portcullis_decisions_total{{outcome=\"{outcome}\",kind=\"{kind}\",rule=\"{rule}\"}} {n}"
            );
        }
        header(
            &mut out,
            "portcullis_decision_duration_seconds",
            "histogram",
            "Time to normalize and decide one action.",
        );
        self.decision_latency
            .render(&mut out, "portcullis_decision_duration_seconds", "");
        header(
            &mut out,
            "portcullis_http_requests_total",
            "counter",
            "HTTP responses by listener and status.",
        );
        let mut rows: Vec<_> = lock(&self.http).iter().map(|(k, v)| (*k, *v)).collect();
        rows.sort();
        for ((listener, status), n) in rows {
            let _ = writeln!(
                out,
                "portcullis_http_requests_total{{listener=\"{listener}\",code=\"{status}\"}} {n}"
            );
        }
        header(
            &mut out,
            "portcullis_http_request_duration_seconds",
            "histogram",
            "Time from request head to response head.",
        );
        self.request_latency
            .render(&mut out, "portcullis_http_request_duration_seconds", "");
        header(
            &mut out,
            "portcullis_rate_limited_total",
            "counter",
            "Actions denied by a rate limit or budget, by rule.",
        );
        let mut rows: Vec<_> = lock(&self.rate_limited)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        rows.sort();
        for (rule, n) in rows {
            let _ = writeln!(
                out,
                "portcullis_rate_limited_total{{rule=\"{}\"}} {n}",
                escape(&rule)
            );
        }
        let counters: [(&str, &str, u64); 5] = [
            (
                "portcullis_policy_reloads_total{result=\"ok\"}",
                "",
                self.reloads_ok.load(Ordering::Relaxed),
            ),
            (
                "portcullis_policy_reloads_total{result=\"failed\"}",
                "",
                self.reloads_failed.load(Ordering::Relaxed),
            ),
            (
                "portcullis_connections_rejected_total",
                "Connections closed at accept because the cap was reached.",
                self.connections_rejected.load(Ordering::Relaxed),
            ),
            (
                "portcullis_approvals_resolved_total",
                "Approvals resolved (approved, denied, expired or cancelled).",
                self.approvals_resolved.load(Ordering::Relaxed),
            ),
            (
                "portcullis_audit_failures_total",
                "Audit batches that could not be written.",
                g.audit_failures,
            ),
        ];
        header(
            &mut out,
            "portcullis_policy_reloads_total",
            "counter",
            "Policy reload attempts by result.",
        );
        for (name, help, v) in counters {
            if !help.is_empty() {
                header(&mut out, name, "counter", help);
            }
            let _ = writeln!(out, "{name} {v}");
        }
        let gauges: [(&str, &str, f64); 10] = [
            (
                "portcullis_policy_reload_healthy",
                "1 if the last policy reload succeeded.",
                self.reload_healthy.load(Ordering::Relaxed) as f64,
            ),
            (
                "portcullis_connections_active",
                "Open client connections.",
                self.connections_active.load(Ordering::Relaxed) as f64,
            ),
            (
                "portcullis_audit_queue_depth",
                "Records waiting for the audit writer.",
                g.audit_queue_depth as f64,
            ),
            (
                "portcullis_audit_records_written",
                "Records written to the audit log since start.",
                g.audit_records as f64,
            ),
            (
                "portcullis_audit_last_fsync_seconds",
                "Duration of the last fdatasync.",
                g.audit_last_fsync_us as f64 / 1e6,
            ),
            (
                "portcullis_audit_writable",
                "0 while the audit log cannot be written.",
                if g.audit_failed { 0.0 } else { 1.0 },
            ),
            ("portcullis_sessions", "Live sessions.", g.sessions as f64),
            (
                "portcullis_sessions_evicted",
                "Sessions evicted to stay within the bound.",
                g.sessions_evicted as f64,
            ),
            (
                "portcullis_rate_limit_keys",
                "Live rate-limit keys.",
                g.rate_keys as f64,
            ),
            (
                "portcullis_approvals_pending",
                "Actions waiting for a human.",
                g.approvals_pending as f64,
            ),
        ];
        for (name, help, v) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
        header(
            &mut out,
            "portcullis_audit_queue_full_total",
            "counter",
            "Submissions refused because the audit queue was full.",
        );
        let _ = writeln!(
            out,
            "portcullis_audit_queue_full_total {}",
            g.audit_queue_full
        );
        header(
            &mut out,
            "portcullis_policy_info",
            "gauge",
            "The policy set in force.",
        );
        let _ = writeln!(
            out,
            "portcullis_policy_info{{digest=\"{}\"}} 1",
            escape(&g.policy_digest)
        );
        out
    }
}

fn bump<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, u64>>,
    key: K,
    overflow: impl FnOnce(K) -> K,
) {
    let mut m = lock(map);
    let key = if m.len() >= MAX_SERIES && !m.contains_key(&key) {
        overflow(key)
    } else {
        key
    };
    *m.entry(key).or_insert(0) += 1;
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let base = name.split('{').next().unwrap_or(name);
    let _ = writeln!(out, "# HELP {base} {help}");
    let _ = writeln!(out, "# TYPE {base} {kind}");
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::Ask => "ask",
        Outcome::Deny => "deny",
    }
}

/// Label values are policy-controlled strings: escape what the text format requires.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Reason;

    #[test]
    fn renders_counters_histograms_and_bounds_series() {
        let m = Metrics::new();
        let mut d = Decision::deny("x\"y", "m", "sha256:d");
        m.decided(Kind::Exec, &d, 7);
        m.decided(Kind::Exec, &d, 30);
        d.reasons = vec![Reason {
            rule: "a".into(),
            message: String::new(),
        }];
        d.outcome = Outcome::Allow;
        m.decided(Kind::File, &d, 2_000_000);
        let text = m.render(&Gauges {
            policy_digest: "sha256:d".into(),
            ..Gauges::default()
        });
        assert!(
            text.contains(
                "portcullis_decisions_total{outcome=\"deny\",kind=\"exec\",rule=\"x\\\"y\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("portcullis_decision_duration_seconds_bucket{le=\"0.00001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_decision_duration_seconds_bucket{le=\"0.000025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_decision_duration_seconds_bucket{le=\"0.00005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_decision_duration_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_decision_duration_seconds_count 3"),
            "{text}"
        );
        for i in 0..(MAX_SERIES + 10) {
            m.rate_limited(&format!("r{i}"));
        }
        let text = m.render(&Gauges::default());
        assert!(
            text.contains("portcullis_rate_limited_total{rule=\"other\"} "),
            "{text}"
        );
        assert_eq!(lock(&m.rate_limited).len(), MAX_SERIES + 1);
    }
}
