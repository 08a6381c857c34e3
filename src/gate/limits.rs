//! Rate limits and token budgets: per-agent quotas checked before an action reaches policy.
//!
//! Rate limits are governor GCRA limiters, one per `[[limits]]` rule, keyed by agent id. Token
//! budgets (`[[budgets]]`) are token buckets of our own: GCRA state is a single arrival time, so
//! it cannot absorb a charge of thousands of tokens that arrives after the request went out.
//! Both run on the same governor [`Clock`], so a fake clock drives them together in tests.
//!
//! Every keyed store is bounded by `max_keys`, because the keys (agent ids) come from peers.
//! When a store is full, entries indistinguishable from fresh ones (limiter: `retain_recent`;
//! budget: bucket refilled to capacity) are dropped to make room; if none can go, the new key
//! is refused (fail closed) rather than admitted untracked. Keys already present are unaffected.

use crate::sync::lock;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::Deserialize;

use crate::action::{Action, Kind};

/// How long a caller refused for a full key store is told to wait. Any positive value works:
/// room appears only as other agents go quiet, which no one can predict.
const FULL_RETRY: Duration = Duration::from_secs(1);

/// One `[[limits]]` entry, as written in the config file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    /// Shown in deny messages and metrics; default `limits[<index>]`.
    pub name: Option<String>,
    /// Glob on the agent id.
    #[serde(default = "any")]
    pub agent: String,
    /// Only actions of this kind.
    pub kind: Option<Kind>,
    /// Glob on `<tool.server>.<tool.name>`; an action without a tool facet does not match.
    pub tool: Option<String>,
    /// Glob on `http.host`; an action without an http facet does not match.
    pub host: Option<String>,
    /// Events per `per`.
    pub rate: u32,
    pub per: RatePer,
    /// Events allowed back to back; default `rate`.
    pub burst: Option<u32>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RatePer {
    Second,
    Minute,
    Hour,
}

/// One `[[budgets]]` entry: model tokens (input + output) an agent may use per period.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BudgetRule {
    /// Glob on the agent id.
    #[serde(default = "any")]
    pub agent: String,
    pub tokens: u64,
    pub per: BudgetPer,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPer {
    Minute,
    Hour,
    Day,
}

fn any() -> String {
    "*".to_string()
}

/// Why an action was refused: which rule, and when trying again can succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The limit's name (`limits[i]` / `budgets[i]` unless named).
    pub rule: String,
    pub retry_after: Duration,
    /// A token budget ran out (as opposed to a rate limit).
    pub budget: bool,
}

/// Check rules before building [`Limits`]. The error is (field path, message), e.g.
/// `("limits[2].burst", "must be at least 1")`; the first problem found is reported.
pub fn validate(limits: &[LimitRule], budgets: &[BudgetRule]) -> Result<(), (String, String)> {
    let err = |path: String, msg: &str| Err((path, msg.to_string()));
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, r) in limits.iter().enumerate() {
        let at = |field: &str| format!("limits[{i}].{field}");
        if r.name.as_deref() == Some("") {
            return err(at("name"), "must not be empty");
        }
        if let Some(first) = names.insert(limit_name(i, r), i) {
            return Err((at("name"), format!("same name as limits[{first}]")));
        }
        let globs = [("agent", Some(&r.agent)), ("tool", r.tool.as_ref())];
        for (field, glob) in globs {
            if glob.is_some_and(|g| g.is_empty()) {
                return err(at(field), "must not be empty (use \"*\" for any)");
            }
        }
        if let Some(host) = &r.host {
            if host.is_empty() {
                return err(at("host"), "must not be empty (use \"*\" for any)");
            }
            // Hosts are compared in their canonical lowercase form; an uppercase pattern
            // would silently never match.
            if host.bytes().any(|b| b.is_ascii_uppercase()) {
                return err(at("host"), "must be lowercase (hosts are canonicalized)");
            }
        }
        if r.rate == 0 {
            return err(at("rate"), "must be at least 1");
        }
        if r.burst == Some(0) {
            return err(at("burst"), "must be at least 1");
        }
    }
    for (i, b) in budgets.iter().enumerate() {
        if b.agent.is_empty() {
            return err(
                format!("budgets[{i}].agent"),
                "must not be empty (use \"*\" for any)",
            );
        }
        if b.tokens == 0 {
            return err(format!("budgets[{i}].tokens"), "must be at least 1");
        }
    }
    Ok(())
}

fn limit_name(i: usize, r: &LimitRule) -> String {
    r.name.clone().unwrap_or_else(|| format!("limits[{i}]"))
}

/// Rate limits and token budgets for all agents. `Send + Sync`; share it behind an `Arc`.
pub struct Limits<C: Clock = DefaultClock> {
    rates: Vec<Rate<C>>,
    budgets: Vec<Budget<C::Instant>>,
    max_keys: usize,
    clock: C,
}

/// One limit rule at run time.
struct Rate<C: Clock> {
    name: String,
    select: Select,
    /// The same map `limiter` keeps its state in, so `check` can tell a new key from a known one
    /// (governor's own stores only expose `len`).
    keys: Store,
    // The middleware must be spelled out: its default is tied to `DefaultClock`, not `C`.
    limiter: RateLimiter<String, Store, C, NoOpMiddleware<C::Instant>>,
    /// Makes "is there room for this key" and the insertion one step; without it concurrent
    /// first calls could each see room and overshoot the bound.
    admit: Mutex<()>,
}

/// Which actions a limit rule applies to.
struct Select {
    agent: String,
    kind: Option<Kind>,
    tool: Option<String>,
    host: Option<String>,
}

/// A governor keyed state store: the GCRA theoretical arrival time per agent id.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<HashMap<String, Nanos>>>);

/// One budget rule at run time.
struct Budget<I> {
    name: String,
    agent: String,
    tokens: u64,
    per_ns: u64,
    buckets: Mutex<HashMap<String, Bucket<I>>>,
}

/// Tokens left, scaled by `per_ns` so that continuous refill needs no fractions: the bucket
/// holds `tokens * per_ns` units when full and gains `tokens` units per nanosecond.
struct Bucket<I> {
    units: u128,
    at: I,
}

// === impl Limits ===

impl Limits {
    /// Rules should have passed [`validate`]; out-of-range values are clamped, never a panic.
    /// `max_keys` bounds each rule's keyed store (0 refuses every agent).
    pub fn new(limits: Vec<LimitRule>, budgets: Vec<BudgetRule>, max_keys: usize) -> Self {
        Limits::with_clock(limits, budgets, max_keys, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    pub fn with_clock(
        limits: Vec<LimitRule>,
        budgets: Vec<BudgetRule>,
        max_keys: usize,
        clock: C,
    ) -> Self {
        let rates = limits
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rate::new(limit_name(i, &r), r, clock.clone()))
            .collect();
        let budgets = budgets
            .into_iter()
            .enumerate()
            .map(|(i, b)| Budget::new(format!("budgets[{i}]"), b))
            .collect();
        Limits {
            rates,
            budgets,
            max_keys,
            clock,
        }
    }

    /// Every matching limit rule is charged one event (keyed by agent id); the first that is
    /// exhausted gives `Err`, and rules after it are not charged (those before it stay charged:
    /// a refused attempt still counts). For `model_request`, a matching budget with no token
    /// left gives `Err` first, before any rate is charged.
    pub fn check(&self, agent: &str, action: &Action) -> Result<(), Limited> {
        let now = self.clock.now();
        if action.kind == Kind::ModelRequest {
            for b in self.budgets.iter().filter(|b| glob(&b.agent, agent)) {
                b.check(agent, now, self.max_keys)?;
            }
        }
        let key = agent.to_string();
        for r in self
            .rates
            .iter()
            .filter(|r| r.select.matches(agent, action))
        {
            r.check(&key, self.max_keys)?;
        }
        Ok(())
    }

    /// Model usage feeds the budgets: subtract `tokens` from every matching budget of this
    /// agent. A bucket stops at zero (debt is not carried). If a budget's store is full of
    /// agents still spending, the charge cannot be recorded; `check` then refuses that agent.
    pub fn charge_tokens(&self, agent: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let now = self.clock.now();
        for b in self.budgets.iter().filter(|b| glob(&b.agent, agent)) {
            b.charge(agent, tokens, now, self.max_keys);
        }
    }

    /// Live keyed entries across all rules and budgets, for metrics.
    pub fn keys(&self) -> usize {
        let rates: usize = self.rates.iter().map(|r| r.limiter.len()).sum();
        let budgets: usize = self.budgets.iter().map(|b| lock(&b.buckets).len()).sum();
        rates + budgets
    }
}

// === impl Rate ===

impl<C: Clock> Rate<C> {
    fn new(name: String, r: LimitRule, clock: C) -> Self {
        let rate = NonZeroU32::new(r.rate).unwrap_or(NonZeroU32::MIN);
        let burst = r.burst.and_then(NonZeroU32::new).unwrap_or(rate);
        let quota = match r.per {
            RatePer::Second => Quota::per_second(rate),
            RatePer::Minute => Quota::per_minute(rate),
            RatePer::Hour => Quota::per_hour(rate),
        }
        .allow_burst(burst);
        let keys = Store::default();
        Rate {
            name,
            select: Select {
                agent: r.agent,
                kind: r.kind,
                tool: r.tool,
                host: r.host,
            },
            limiter: RateLimiter::new(quota, keys.clone(), clock),
            keys,
            admit: Mutex::new(()),
        }
    }

    fn check(&self, key: &String, max_keys: usize) -> Result<(), Limited> {
        let _admit = lock(&self.admit);
        if !self.keys.has_room_for(key, max_keys) {
            self.limiter.retain_recent();
            if !self.keys.has_room_for(key, max_keys) {
                return Err(self.limited(FULL_RETRY));
            }
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| self.limited(not_until.wait_time_from(self.limiter.clock().now())))
    }

    fn limited(&self, retry_after: Duration) -> Limited {
        Limited {
            rule: self.name.clone(),
            retry_after,
            budget: false,
        }
    }
}

impl Select {
    fn matches(&self, agent: &str, action: &Action) -> bool {
        if !glob(&self.agent, agent) || self.kind.is_some_and(|k| k != action.kind) {
            return false;
        }
        if let Some(pattern) = &self.tool {
            match &action.tool {
                Some(t) if glob(pattern, &format!("{}.{}", t.server, t.name)) => {}
                _ => return false,
            }
        }
        if let Some(pattern) = &self.host {
            match &action.http {
                Some(h) if glob(pattern, &h.host) => {}
                _ => return false,
            }
        }
        true
    }
}

// === impl Store ===

impl Store {
    fn has_room_for(&self, key: &String, max_keys: usize) -> bool {
        let map = lock(&self.0);
        map.contains_key(key) || map.len() < max_keys
    }
}

impl StateStore for Store {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // Under the lock there is no one to race, so governor's compare-and-swap loop is not
        // needed: measure, then store.
        let mut map = lock(&self.0);
        if let Some(tat) = map.get_mut(key) {
            let (out, next) = f(Some(*tat))?;
            *tat = next;
            return Ok(out);
        }
        let (out, next) = f(None)?;
        map.insert(key.clone(), next);
        Ok(out)
    }
}

impl ShrinkableKeyedStateStore<String> for Store {
    fn retain_recent(&self, drop_below: Nanos) {
        lock(&self.0).retain(|_, tat| *tat > drop_below);
    }

    fn shrink_to_fit(&self) {
        lock(&self.0).shrink_to_fit();
    }

    fn len(&self) -> usize {
        lock(&self.0).len()
    }

    fn is_empty(&self) -> bool {
        lock(&self.0).is_empty()
    }
}

// === impl Budget ===

impl<I: Reference> Budget<I> {
    fn new(name: String, b: BudgetRule) -> Self {
        let per = match b.per {
            BudgetPer::Minute => 60,
            BudgetPer::Hour => 60 * 60,
            BudgetPer::Day => 24 * 60 * 60,
        };
        Budget {
            name,
            agent: b.agent,
            tokens: b.tokens.max(1),
            per_ns: per * 1_000_000_000,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn full(&self) -> u128 {
        u128::from(self.tokens) * u128::from(self.per_ns)
    }

    /// Bring a bucket up to `now`.
    fn refill(&self, b: &mut Bucket<I>, now: I) {
        // Past one period the bucket is full whatever the gap, which also keeps this in range.
        let elapsed = now.duration_since(b.at).as_u64().min(self.per_ns);
        b.units = (b.units + u128::from(elapsed) * u128::from(self.tokens)).min(self.full());
        b.at = now;
    }

    /// Drop buckets that have refilled to capacity: they are the same as absent ones.
    fn evict_full(&self, buckets: &mut HashMap<String, Bucket<I>>, now: I) {
        let full = self.full();
        buckets.retain(|_, b| {
            self.refill(b, now);
            b.units < full
        });
    }

    fn check(&self, agent: &str, now: I, max_keys: usize) -> Result<(), Limited> {
        let mut buckets = lock(&self.buckets);
        let Some(b) = buckets.get_mut(agent) else {
            // Absent means a full bucket, unless there would be no room to record its use.
            if buckets.len() >= max_keys {
                self.evict_full(&mut buckets, now);
                if buckets.len() >= max_keys {
                    return Err(self.limited(FULL_RETRY));
                }
            }
            return Ok(());
        };
        self.refill(b, now);
        let one = u128::from(self.per_ns);
        if b.units >= one {
            return Ok(());
        }
        // Time for the missing units to one whole token, rounded up.
        let wait_ns = (one - b.units).div_ceil(u128::from(self.tokens));
        let wait = Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX));
        Err(self.limited(wait))
    }

    fn charge(&self, agent: &str, tokens: u64, now: I, max_keys: usize) {
        let mut buckets = lock(&self.buckets);
        if !buckets.contains_key(agent) && buckets.len() >= max_keys {
            self.evict_full(&mut buckets, now);
            if buckets.len() >= max_keys {
                // Nowhere to record it; `check` refuses this agent while the store stays full.
                return;
            }
        }
        let full = self.full();
        let b = match buckets.entry(agent.to_string()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Bucket {
                units: full,
                at: now,
            }),
        };
        self.refill(b, now);
        b.units = b
            .units
            .saturating_sub(u128::from(tokens) * u128::from(self.per_ns));
    }

    fn limited(&self, retry_after: Duration) -> Limited {
        Limited {
            rule: self.name.clone(),
            retry_after,
            budget: true,
        }
    }
}

/// `*` matches any run of characters (dots included); everything else is literal and
/// case-sensitive.
fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, tail)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
    // Taking each middle piece at its leftmost match leaves the most room for the rest.
    for piece in middle.split('*').filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::action::{HttpFacet, Tool};
    use governor::clock::FakeRelativeClock;

    fn action(kind: Kind) -> Action {
        serde_json::from_value(serde_json::json!({"kind": kind, "via": "decide"})).unwrap()
    }

    fn tool_call(server: &str, name: &str) -> Action {
        let mut a = action(Kind::ToolCall);
        a.tool = Some(Tool {
            server: server.into(),
            name: name.into(),
            arguments: serde_json::json!({}),
            description_digest: None,
            pinned_digest: None,
            payload: None,
        });
        a
    }

    fn http(host: &str) -> Action {
        let mut a = action(Kind::HttpRequest);
        a.http = Some(HttpFacet {
            host: host.into(),
            ..HttpFacet::default()
        });
        a
    }

    fn rule(rate: u32, per: RatePer) -> LimitRule {
        LimitRule {
            name: None,
            agent: "*".into(),
            kind: None,
            tool: None,
            host: None,
            rate,
            per,
            burst: None,
        }
    }

    fn budget(tokens: u64, per: BudgetPer) -> BudgetRule {
        BudgetRule {
            agent: "*".into(),
            tokens,
            per,
        }
    }

    fn limits(
        rules: Vec<LimitRule>,
        budgets: Vec<BudgetRule>,
    ) -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            Limits::with_clock(rules, budgets, 100, clock.clone()),
            clock,
        )
    }

    #[test]
    fn glob_matches_only_star() {
        for (p, t) in [
            ("*", ""),
            ("*", "a.b.c"),
            ("fs.*", "fs.read"),
            ("fs.write_*", "fs.write_file"),
            ("*.github.com", "api.github.com"),
            ("*.github.com", "a.b.github.com"),
            ("a*b*c", "abc"),
            ("a*b*c", "aXbYbZc"),
            ("**", "x"),
            ("ä*ö", "äüö"),
            ("exact", "exact"),
        ] {
            assert!(glob(p, t), "{p} should match {t}");
        }
        for (p, t) in [
            ("", "a"),
            ("exact", "exac"),
            ("fs.*", "fsXread"),
            ("*.github.com", "github.com"),
            ("*.github.com", "evil-github.com"),
            ("a*a", "a"),
            ("a*b*c", "acb"),
            ("Fs.*", "fs.read"),
            ("?", "a"),
            ("[a]", "a"),
        ] {
            assert!(!glob(p, t), "{p} should not match {t}");
        }
    }

    #[test]
    fn burst_then_deny_then_refill() {
        let mut r = rule(2, RatePer::Second);
        r.burst = Some(4);
        let (l, clock) = limits(vec![r], vec![]);
        let a = action(Kind::Exec);
        for _ in 0..4 {
            l.check("a1", &a).unwrap();
        }
        let e = l.check("a1", &a).unwrap_err();
        assert_eq!(e.rule, "limits[0]");
        assert!(!e.budget);
        // 2/s: one event comes back every 500 ms.
        assert!(e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_millis(500));

        clock.advance(e.retry_after);
        l.check("a1", &a).unwrap();
        l.check("a1", &a).unwrap_err();
        clock.advance(Duration::from_secs(2));
        for _ in 0..4 {
            l.check("a1", &a).unwrap();
        }
        l.check("a1", &a).unwrap_err();
    }

    #[test]
    fn per_minute_and_hour_quotas() {
        let (l, clock) = limits(
            vec![rule(1, RatePer::Minute), rule(60, RatePer::Hour)],
            vec![],
        );
        let a = action(Kind::Exec);
        l.check("a", &a).unwrap();
        let e = l.check("a", &a).unwrap_err();
        assert_eq!(e.rule, "limits[0]");
        assert!(e.retry_after > Duration::from_secs(59), "{e:?}");
        clock.advance(Duration::from_secs(60));
        l.check("a", &a).unwrap();
    }

    #[test]
    fn agents_are_isolated() {
        let (l, _clock) = limits(vec![rule(1, RatePer::Hour)], vec![]);
        let a = action(Kind::Exec);
        l.check("a1", &a).unwrap();
        l.check("a1", &a).unwrap_err();
        l.check("a2", &a).unwrap();
        l.check("a2", &a).unwrap_err();
        assert_eq!(l.keys(), 2);
    }

    #[test]
    fn selectors() {
        let sel = |f: fn(&mut LimitRule)| {
            let mut r = rule(1, RatePer::Hour);
            f(&mut r);
            limits(vec![r], vec![]).0
        };
        // Whether a second identical action is refused tells whether the rule applied.
        let applies = |l: &Limits<FakeRelativeClock>, agent: &str, a: &Action| {
            l.check(agent, a).is_ok() && l.check(agent, a).is_err()
        };

        let l = sel(|r| r.kind = Some(Kind::ToolCall));
        assert!(applies(&l, "a", &tool_call("fs", "read")));
        assert!(!applies(&l, "a", &action(Kind::Exec)));

        let l = sel(|r| r.tool = Some("fs.write_*".into()));
        assert!(applies(&l, "a", &tool_call("fs", "write_file")));
        assert!(!applies(&l, "b", &tool_call("fs", "read_file")));
        assert!(!applies(&l, "c", &tool_call("git", "write_file")));
        assert!(!applies(&l, "d", &action(Kind::ToolCall)), "no tool facet");

        let l = sel(|r| r.host = Some("*.github.com".into()));
        assert!(applies(&l, "a", &http("api.github.com")));
        assert!(!applies(&l, "b", &http("github.com")));
        assert!(
            !applies(&l, "c", &action(Kind::HttpRequest)),
            "no http facet"
        );

        let l = sel(|r| r.agent = "ci-*".into());
        assert!(applies(&l, "ci-1", &action(Kind::Exec)));
        assert!(!applies(&l, "dev-1", &action(Kind::Exec)));
    }

    #[test]
    fn first_exhausted_rule_refuses() {
        let mut writes = rule(1, RatePer::Hour);
        writes.name = Some("writes".into());
        writes.tool = Some("fs.write*".into());
        let mut all = rule(3, RatePer::Hour);
        all.name = Some("all".into());
        let (l, _clock) = limits(vec![writes, all], vec![]);
        let write = tool_call("fs", "write");
        let read = tool_call("fs", "read");
        l.check("a", &write).unwrap();
        assert_eq!(l.check("a", &write).unwrap_err().rule, "writes");
        // Refused by `writes`, so `all` was not charged: two of its three remain.
        l.check("a", &read).unwrap();
        l.check("a", &read).unwrap();
        assert_eq!(l.check("a", &read).unwrap_err().rule, "all");
    }

    #[test]
    fn budget_blocks_only_model_requests_and_refills() {
        let (l, clock) = limits(vec![], vec![budget(1000, BudgetPer::Hour)]);
        let model = action(Kind::ModelRequest);
        l.check("a", &model).unwrap();
        l.charge_tokens("a", 999);
        l.check("a", &model).unwrap();
        l.charge_tokens("a", 1);
        let e = l.check("a", &model).unwrap_err();
        assert!(e.budget);
        assert_eq!(e.rule, "budgets[0]");
        // 1000 tokens/hour: one token every 3.6 s.
        assert_eq!(e.retry_after, Duration::from_millis(3600));

        l.check("a", &action(Kind::ModelResponse)).unwrap();
        l.check("a", &tool_call("fs", "read")).unwrap();
        l.check("b", &model).unwrap();

        clock.advance(Duration::from_millis(3599));
        l.check("a", &model).unwrap_err();
        clock.advance(Duration::from_millis(1));
        l.check("a", &model).unwrap();
        // A long idle refills to capacity, not beyond.
        clock.advance(Duration::from_secs(10 * 3600));
        l.charge_tokens("a", 1000);
        l.check("a", &model).unwrap_err();
    }

    #[test]
    fn charge_never_underflows() {
        let (l, clock) = limits(vec![], vec![budget(100, BudgetPer::Minute)]);
        let model = action(Kind::ModelRequest);
        l.charge_tokens("a", u64::MAX);
        l.charge_tokens("a", u64::MAX);
        l.check("a", &model).unwrap_err();
        // No debt: one token's worth of time (600 ms) is enough.
        clock.advance(Duration::from_millis(600));
        l.check("a", &model).unwrap();
    }

    #[test]
    fn budget_agent_glob() {
        let mut b = budget(10, BudgetPer::Day);
        b.agent = "ci-*".into();
        let (l, _clock) = limits(vec![], vec![b]);
        let model = action(Kind::ModelRequest);
        l.charge_tokens("ci-1", 10);
        l.charge_tokens("dev", 10);
        l.check("ci-1", &model).unwrap_err();
        l.check("dev", &model).unwrap();
        assert_eq!(l.keys(), 1, "non-matching agents are not tracked");
    }

    #[test]
    fn rate_store_is_bounded() {
        let clock = FakeRelativeClock::default();
        let l = Limits::with_clock(vec![rule(1, RatePer::Second)], vec![], 3, clock.clone());
        let a = action(Kind::Exec);
        for agent in ["a1", "a2", "a3"] {
            l.check(agent, &a).unwrap();
        }
        let e = l.check("a4", &a).unwrap_err();
        assert_eq!((e.rule.as_str(), e.retry_after), ("limits[0]", FULL_RETRY));
        assert_eq!(l.keys(), 3);
        // Known agents are still served (and limited) normally.
        assert_eq!(
            l.check("a1", &a).unwrap_err().retry_after,
            Duration::from_secs(1)
        );

        // Once the others' state is indistinguishable from fresh, they make room.
        clock.advance(Duration::from_secs(3));
        l.check("a4", &a).unwrap();
        assert_eq!(l.keys(), 1);
    }

    #[test]
    fn budget_store_is_bounded() {
        let clock = FakeRelativeClock::default();
        let l = Limits::with_clock(
            vec![],
            vec![budget(60, BudgetPer::Minute)],
            2,
            clock.clone(),
        );
        let model = action(Kind::ModelRequest);
        l.charge_tokens("a1", 30);
        l.charge_tokens("a2", 30);
        l.charge_tokens("a3", 30);
        assert_eq!(l.keys(), 2);
        let e = l.check("a3", &model).unwrap_err();
        assert!(e.budget && e.retry_after == FULL_RETRY, "{e:?}");
        l.check("a1", &model).unwrap();

        // Refilled buckets are dropped to make room.
        clock.advance(Duration::from_secs(30));
        l.check("a3", &model).unwrap();
        l.charge_tokens("a3", 60);
        l.check("a3", &model).unwrap_err();
        assert_eq!(l.keys(), 1);
    }

    #[test]
    fn bound_holds_under_contention() {
        let clock = FakeRelativeClock::default();
        let l = Limits::with_clock(vec![rule(1, RatePer::Hour)], vec![], 10, clock);
        let a = action(Kind::Exec);
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (l, a, admitted) = (&l, &a, &admitted);
                s.spawn(move || {
                    for i in 0..50 {
                        if l.check(&format!("t{t}-{i}"), a).is_ok() {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(l.keys(), 10);
        assert_eq!(admitted.into_inner(), 10);
    }

    #[test]
    fn zero_max_keys_refuses_everyone() {
        let clock = FakeRelativeClock::default();
        let l = Limits::with_clock(vec![rule(10, RatePer::Second)], vec![], 0, clock);
        l.check("a", &action(Kind::Exec)).unwrap_err();
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(Vec<LimitRule>, Vec<BudgetRule>, &str)> = vec![
            (vec![rule(0, RatePer::Second)], vec![], "limits[0].rate"),
            (
                vec![rule(1, RatePer::Second), rule(1, RatePer::Second), {
                    let mut r = rule(1, RatePer::Second);
                    r.burst = Some(0);
                    r
                }],
                vec![],
                "limits[2].burst",
            ),
            (
                vec![{
                    let mut r = rule(1, RatePer::Second);
                    r.host = Some("*.GitHub.com".into());
                    r
                }],
                vec![],
                "limits[0].host",
            ),
            (
                vec![{
                    let mut r = rule(1, RatePer::Second);
                    r.tool = Some(String::new());
                    r
                }],
                vec![],
                "limits[0].tool",
            ),
            (
                vec![rule(1, RatePer::Second), {
                    let mut r = rule(1, RatePer::Second);
                    r.name = Some("limits[0]".into());
                    r
                }],
                vec![],
                "limits[1].name",
            ),
            (vec![], vec![budget(0, BudgetPer::Day)], "budgets[0].tokens"),
            (
                vec![],
                vec![budget(1, BudgetPer::Day), {
                    let mut b = budget(1, BudgetPer::Day);
                    b.agent = String::new();
                    b
                }],
                "budgets[1].agent",
            ),
        ];
        for (l, b, field) in cases {
            let (path, msg) = validate(&l, &b).unwrap_err();
            assert_eq!(path, field, "{msg}");
            assert!(!msg.is_empty());
        }
        validate(&[rule(1, RatePer::Second)], &[budget(1, BudgetPer::Day)]).unwrap();
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrap {
        #[serde(default)]
        limits: Vec<LimitRule>,
        #[serde(default)]
        budgets: Vec<BudgetRule>,
    }

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let w: Wrap = toml::from_str(
            r#"
            [[limits]]
            name = "tool-calls"
            kind = "tool_call"
            tool = "fs.write_*"
            rate = 10
            per = "second"
            burst = 20

            [[limits]]
            host = "*.github.com"
            rate = 1
            per = "minute"

            [[budgets]]
            tokens = 1000000
            per = "hour"
            "#,
        )
        .unwrap();
        assert_eq!(w.limits.len(), 2);
        assert_eq!(w.limits[0].kind, Some(Kind::ToolCall));
        assert_eq!(w.limits[0].burst, Some(20));
        assert_eq!(w.limits[1].agent, "*");
        assert_eq!(w.budgets[0].per, BudgetPer::Hour);
        validate(&w.limits, &w.budgets).unwrap();

        for (text, needle) in [
            (
                "[[limits]]\nrate = 1\nper = \"second\"\nburts = 2\n",
                "burts",
            ),
            (
                "[[budgets]]\ntokens = 1\nper = \"hour\"\nname = \"x\"\n",
                "name",
            ),
            ("[[limits]]\nrate = 1\nper = \"day\"\n", "day"),
            ("[[budgets]]\ntokens = 1\nper = \"second\"\n", "second"),
            (
                "[[limits]]\nrate = 1\nper = \"second\"\nkind = \"tool\"\n",
                "tool",
            ),
            ("[[limits]]\nrate = -1\nper = \"second\"\n", "rate"),
        ] {
            let e = toml::from_str::<Wrap>(text).err().unwrap().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn limits_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Limits>();
        check::<Limits<FakeRelativeClock>>();
    }
}
