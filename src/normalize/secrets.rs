//! Credential detectors: find secrets in text an agent sends or receives, by offset only.
//!
//! [`scan`] reports where credentials are ([`Hit`]: a detector name and a byte range), never
//! what they are, so findings can go into the Action and the audit log (DESIGN §7.5).
//! [`mask`] replaces the reported ranges with `[REDACTED:<type>]` for the audit copy.
//!
//! # Detector types
//!
//! These names are an interface: policies match on them. Each pattern is anchored on ASCII word
//! boundaries or on a fixed prefix, and every candidate is checked again in code (exact lengths,
//! character mixes) to keep false positives low.
//!
//! | type | what |
//! |---|---|
//! | `aws_access_key` | `AKIA`/`ASIA` + 16 upper-case letters or digits (20 chars) |
//! | `aws_secret_key` | 40 base64 chars assigned to an `aws_secret_access_key`-like name (span: the value) |
//! | `gcp_api_key` | `AIza` + 35 chars of `[0-9A-Za-z_-]` |
//! | `azure_storage_key` | `AccountKey=` + 88 base64 chars (span: the value) |
//! | `github_token` | `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36 or more alphanumerics; `github_pat_…` |
//! | `gitlab_token` | `glpat-` + 20 or more chars |
//! | `slack_token` | `xoxb-`/`xoxa-`/`xoxp-`/`xoxr-`/`xoxs-` tokens |
//! | `slack_webhook` | `https://hooks.slack.com/services/T…/B…/…` |
//! | `discord_token` | a bot token: three dot-separated base64url parts of 24–28, 6 and 27–38 chars |
//! | `stripe_key` | `sk_live_`/`rk_live_` + 24 or more alphanumerics |
//! | `openai_api_key` | `sk-…`, `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…` (not `sk-ant-`) |
//! | `anthropic_api_key` | `sk-ant-…` (e.g. `sk-ant-api03-…`) |
//! | `huggingface_token` | `hf_` + 34 alphanumerics |
//! | `npm_token` | `npm_` + 36 alphanumerics |
//! | `private_key` | a PEM `-----BEGIN … PRIVATE KEY-----` block through its END line, or to the end of the scanned text when there is none (this also covers the key inside a GCP service-account JSON file) |
//! | `jwt` | `eyJ…`.`…`.`…`: three base64url segments |
//! | `high_entropy_assignment` | `name = value`, `name: value`, `"name": "value"`, `NAME=value` where the name contains `secret`, `token`, `password`, `passwd`, `pwd`, `api_key`, `apikey`, `access_key`, `private_key`, `client_secret` or `auth`, and the value is at least 16 chars of `[A-Za-z0-9+/=_.-]` with Shannon entropy of at least 3.5 bits per char (span: the value) |
//! | `scan_error` | the detectors failed to build (a bug); the whole scanned text is reported so that nothing is let through unmasked |
//!
//! # Overlaps
//!
//! Hits never overlap. Among the specific detectors, the longer match wins, and on equal
//! length the detector listed first above wins (for example `anthropic_api_key` over
//! `openai_api_key`). `high_entropy_assignment` is the fallback: its value is dropped when
//! it overlaps any other hit, so a value is never reported twice.
//!
//! # Cost and bounds
//!
//! This runs on every tool call and prompt. All patterns are compiled once into one
//! [`RegexSet`], so text without a candidate costs a single linear pass; only detectors the
//! set reports are run again to find positions. Only the first [`MAX_SCAN`] bytes are
//! scanned (cut back to a UTF-8 character boundary): a secret that starts after that prefix,
//! or straddles its end, is not reported (a private key block that starts inside it is
//! reported to the end of the prefix). Callers that need more must bound and split their
//! input themselves.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

/// Scan at most this many bytes of each text (1 MiB); see the module docs.
pub const MAX_SCAN: usize = 1 << 20;

/// Values shorter than this are never reported by `high_entropy_assignment`.
const MIN_ENTROPY_LEN: usize = 16;

/// Shannon entropy, in bits per byte, a `high_entropy_assignment` value must reach.
const MIN_ENTROPY_BITS: f64 = 3.5;

/// Type name of the fallback detector, which never wins an overlap.
const ENTROPY_KIND: &str = "high_entropy_assignment";

/// One credential found in a text. It carries where, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Detector name, one of the types in the module docs.
    pub kind_type: &'static str,
    /// Byte offset of the first byte of the secret.
    pub start: usize,
    /// Byte offset one past the last byte of the secret.
    pub end: usize,
}

/// One detector: a pattern that finds candidates and a check that confirms them.
struct Detector {
    kind: &'static str,
    /// Written with `+` runs rather than exact counts: exact counts multiply the states of
    /// the shared automaton, and `check` enforces the lengths instead.
    pattern: &'static str,
    /// Which part of the match is the secret.
    span: Span,
    /// Confirms a candidate, given the secret's text.
    check: fn(&str) -> bool,
}

/// Which part of a match is the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Span {
    /// The whole match.
    Whole,
    /// The value of a `name <sep> value` match: the name stays readable when masked.
    Value,
}

/// The compiled detectors: one set for the single pass, one regex each for positions.
struct Engine {
    set: RegexSet,
    regexes: Vec<Regex>,
}

// ASCII word boundary: the Unicode one would make the automaton give up on non-ASCII text.
macro_rules! wb {
    () => {
        r"(?-u:\b)"
    };
}

/// In priority order (most specific first); see the module docs for what each finds.
static DETECTORS: &[Detector] = &[
    Detector {
        kind: "private_key",
        pattern: r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----",
        span: Span::Whole,
        check: |_| true,
    },
    Detector {
        kind: "aws_access_key",
        pattern: concat!(wb!(), "(?:AKIA|ASIA)[0-9A-Z]+", wb!()),
        span: Span::Whole,
        check: |s| s.len() == 20,
    },
    Detector {
        kind: "aws_secret_key",
        pattern: concat!(
            r#"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)["']?[ \t]*(?::=|=>|[:=])"#,
            r#"[ \t]*["']?[A-Za-z0-9/+]+"#
        ),
        span: Span::Value,
        check: |s| s.len() == 40 && has_mix(s),
    },
    Detector {
        kind: "gcp_api_key",
        pattern: concat!(wb!(), "AIza[0-9A-Za-z_-]+"),
        span: Span::Whole,
        check: |s| s.len() == 39,
    },
    Detector {
        kind: "azure_storage_key",
        pattern: r"(?i:AccountKey)[ \t]*=[ \t]*[A-Za-z0-9+/]+={0,2}",
        span: Span::Value,
        check: |s| s.len() == 88 && s.ends_with("==") && has_mix(s),
    },
    Detector {
        kind: "github_token",
        pattern: concat!(
            wb!(),
            "(?:gh[pousr]_[A-Za-z0-9]+|github_pat_[A-Za-z0-9_]+)",
            wb!()
        ),
        span: Span::Whole,
        check: |s| s.len() >= 40 && s.len() <= 255 && has_mix(tail(s, 4)),
    },
    Detector {
        kind: "gitlab_token",
        pattern: concat!(wb!(), "glpat-[A-Za-z0-9_.-]+"),
        span: Span::Whole,
        check: |s| s.len() >= 26,
    },
    Detector {
        kind: "slack_token",
        pattern: concat!(wb!(), "xox[baprs]-[A-Za-z0-9-]+"),
        span: Span::Whole,
        check: |s| s.len() >= 15 && s.bytes().skip(5).any(|b| b.is_ascii_digit()),
    },
    Detector {
        kind: "slack_webhook",
        pattern: r"https://hooks\.slack\.com/services/[A-Za-z0-9_]+/[A-Za-z0-9_]+/[A-Za-z0-9_]+",
        span: Span::Whole,
        check: |s| s.len() >= 60,
    },
    Detector {
        kind: "discord_token",
        pattern: concat!(
            wb!(),
            r"[MNO][A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
            wb!()
        ),
        span: Span::Whole,
        check: discord_shape,
    },
    Detector {
        kind: "stripe_key",
        pattern: concat!(wb!(), "[rs]k_live_[0-9A-Za-z]+", wb!()),
        span: Span::Whole,
        check: |s| s.len() >= 32 && has_mix(tail(s, 8)),
    },
    Detector {
        kind: "anthropic_api_key",
        pattern: concat!(wb!(), "sk-ant-[A-Za-z0-9_-]+"),
        span: Span::Whole,
        check: |s| s.len() >= 39 && has_mix(tail(s, 7)),
    },
    Detector {
        kind: "openai_api_key",
        pattern: concat!(wb!(), "sk-[A-Za-z0-9_-]+"),
        span: Span::Whole,
        check: |s| !s.starts_with("sk-ant-") && s.len() >= 23 && has_mix(tail(s, 3)),
    },
    Detector {
        kind: "huggingface_token",
        pattern: concat!(wb!(), "hf_[A-Za-z0-9]+", wb!()),
        span: Span::Whole,
        check: |s| s.len() == 37 && has_mix(tail(s, 3)),
    },
    Detector {
        kind: "npm_token",
        pattern: concat!(wb!(), "npm_[A-Za-z0-9]+", wb!()),
        span: Span::Whole,
        check: |s| s.len() == 40 && has_mix(tail(s, 4)),
    },
    Detector {
        kind: "jwt",
        pattern: concat!(wb!(), r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
        span: Span::Whole,
        check: jwt_shape,
    },
    Detector {
        kind: ENTROPY_KIND,
        pattern: concat!(
            "[A-Za-z0-9_.-]*",
            "(?i:secret|token|passwd|password|pwd|api_?key|access_?key|private_?key|auth)",
            r#"[A-Za-z0-9_.-]*["']?[ \t]*(?::=|=>|[:=])[ \t]*["']?"#,
            r"(?:(?i:bearer|basic|token)[ \t]+)?[A-Za-z0-9+/=_.-]+"
        ),
        span: Span::Value,
        check: |s| s.len() >= MIN_ENTROPY_LEN && entropy(s) >= MIN_ENTROPY_BITS && has_mix(s),
    },
];

static ENGINE: LazyLock<Result<Engine, regex::Error>> = LazyLock::new(build);

// === impl Engine ===

fn build() -> Result<Engine, regex::Error> {
    let set = RegexSet::new(DETECTORS.iter().map(|d| d.pattern))?;
    let regexes = DETECTORS
        .iter()
        .map(|d| Regex::new(d.pattern))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Engine { set, regexes })
}

/// Find every credential in (the first [`MAX_SCAN`] bytes of) `text`.
///
/// Hits are sorted by `start` and never overlap; see the module docs for the rules.
pub fn scan(text: &str) -> Vec<Hit> {
    let text = prefix(text, MAX_SCAN);
    let engine = match &*ENGINE {
        Ok(engine) => engine,
        // Fail closed: unreachable unless a pattern is broken, which the tests rule out.
        Err(_) => {
            return vec![Hit {
                kind_type: "scan_error",
                start: 0,
                end: text.len(),
            }];
        }
    };
    let matched = engine.set.matches(text);
    if !matched.matched_any() {
        return Vec::new();
    }
    let mut specific = Vec::new();
    let mut fallback = Vec::new();
    for index in matched.iter() {
        let (Some(detector), Some(regex)) = (DETECTORS.get(index), engine.regexes.get(index))
        else {
            continue;
        };
        let out = if detector.kind == ENTROPY_KIND {
            &mut fallback
        } else {
            &mut specific
        };
        find_all(text, index, detector, regex, out);
    }
    resolve(specific, fallback)
}

/// Every confirmed candidate of one detector, as (hit, priority).
fn find_all(text: &str, priority: usize, d: &Detector, re: &Regex, out: &mut Vec<(Hit, usize)>) {
    for m in re.find_iter(text) {
        let (start, end) = match d.span {
            Span::Whole => (m.start(), m.end()),
            Span::Value => (m.start() + value_offset(m.as_str()), m.end()),
        };
        // The value check is cheap; the name check allocates, so it runs second.
        if !(d.check)(text.get(start..end).unwrap_or_default())
            || (d.kind == ENTROPY_KIND && !name_is_secret(m.as_str()))
        {
            continue;
        }
        let end = if d.kind == "private_key" {
            pem_end(text, end)
        } else {
            end
        };
        out.push((
            Hit {
                kind_type: d.kind,
                start,
                end,
            },
            priority,
        ));
    }
}

/// Offset of the value in a `name ["'] <sep> ["'] [bearer ] value` match.
///
/// Cheaper than capture groups, and exact: the patterns guarantee the name is a maximal run
/// of name characters, and the separators and quotes are not name characters.
fn value_offset(m: &str) -> usize {
    let b = m.as_bytes();
    let mut i = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
        .count();
    i += usize::from(matches!(b.get(i), Some(b'"' | b'\'')));
    i += count_blanks(b.get(i..).unwrap_or_default());
    i += match (b.get(i), b.get(i + 1)) {
        (Some(b':'), Some(b'=')) | (Some(b'='), Some(b'>')) => 2,
        _ => 1,
    };
    i += count_blanks(b.get(i..).unwrap_or_default());
    i += usize::from(matches!(b.get(i), Some(b'"' | b'\'')));
    let rest = b.get(i..).unwrap_or_default();
    for scheme in [&b"bearer"[..], b"basic", b"token"] {
        let blanks = count_blanks(rest.get(scheme.len()..).unwrap_or_default());
        if blanks > 0
            && rest
                .get(..scheme.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(scheme))
        {
            return (i + scheme.len() + blanks).min(m.len());
        }
    }
    i.min(m.len())
}

fn count_blanks(b: &[u8]) -> usize {
    b.iter().take_while(|c| matches!(c, b' ' | b'\t')).count()
}

/// Keep non-overlapping hits: longer wins, then priority; fallback hits only fill gaps.
fn resolve(mut specific: Vec<(Hit, usize)>, fallback: Vec<(Hit, usize)>) -> Vec<Hit> {
    specific.sort_by_key(|(h, p)| (h.start, usize::MAX - (h.end - h.start), *p));
    let mut kept: Vec<(Hit, usize)> = Vec::with_capacity(specific.len());
    for (hit, priority) in specific {
        match kept.last_mut() {
            Some((last, last_priority)) if hit.start < last.end => {
                let (len, last_len) = (hit.end - hit.start, last.end - last.start);
                if len > last_len || (len == last_len && priority < *last_priority) {
                    *last = hit;
                    *last_priority = priority;
                }
            }
            _ => kept.push((hit, priority)),
        }
    }
    let mut hits: Vec<Hit> = kept.into_iter().map(|(h, _)| h).collect();
    for (hit, _) in fallback {
        if !hits.iter().any(|h| h.start < hit.end && hit.start < h.end) {
            hits.push(hit);
        }
    }
    hits.sort_by_key(|h| h.start);
    hits
}

/// Replace each hit's span in `text` with `[REDACTED:<type>]`.
///
/// Accepts any hits, not only those from [`scan`] on this text: spans are clamped to the
/// text, widened to character boundaries and merged where they overlap, so this never panics
/// and never leaves part of an overlapping secret in place.
pub fn mask(text: &str, hits: &[Hit]) -> String {
    let mut sorted: Vec<&Hit> = hits.iter().collect();
    sorted.sort_by_key(|h| (h.start, h.end));
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for hit in sorted {
        let end = ceil_boundary(text, hit.end);
        let start = floor_boundary(text, hit.start).max(cursor);
        if start >= end {
            continue;
        }
        out.push_str(text.get(cursor..start).unwrap_or_default());
        out.push_str("[REDACTED:");
        out.push_str(hit.kind_type);
        out.push(']');
        cursor = end;
    }
    out.push_str(text.get(cursor..).unwrap_or_default());
    out
}

// === helpers ===

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    text.get(..floor_boundary(text, max)).unwrap_or_default()
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    if i >= text.len() {
        return text.len();
    }
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i.min(text.len())
}

/// End of a PEM block whose BEGIN line ends at `from`: past its END line, else the text end.
fn pem_end(text: &str, from: usize) -> usize {
    let rest = text.get(from..).unwrap_or_default();
    let Some(end_at) = rest.find("-----END") else {
        return text.len();
    };
    let after = end_at + "-----END".len();
    match rest.get(after..).and_then(|r| r.find("-----")) {
        Some(close) => from + after + close + "-----".len(),
        None => text.len(),
    }
}

/// The tail of a token after its fixed prefix.
fn tail(s: &str, prefix_len: usize) -> &str {
    s.get(prefix_len..).unwrap_or_default()
}

/// Random tokens mix digits with letters; words and identifiers of letters alone do not.
fn has_mix(s: &str) -> bool {
    let digit = s.bytes().any(|b| b.is_ascii_digit());
    let upper = s.bytes().any(|b| b.is_ascii_uppercase());
    let lower = s.bytes().any(|b| b.is_ascii_lowercase());
    (digit && (upper || lower)) || (upper && lower && entropy(s) >= MIN_ENTROPY_BITS)
}

/// Discord bot token: base64 user id (24–28), timestamp (6), HMAC (27–38).
fn discord_shape(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(id), Some(ts), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    (24..=28).contains(&id.len()) && ts.len() == 6 && (27..=38).contains(&mac.len()) && has_mix(s)
}

/// JWT: a JSON header (`eyJ` = `{"`) of some size, a payload and a signature.
///
/// Segments are bounded below only: a cap would let a padded token slip past unreported.
fn jwt_shape(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(header), Some(payload), Some(sig)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    header.len() >= 10 && payload.len() >= 4 && sig.len() >= 16
}

/// Name words whose presence at the end of a name word makes the value a likely secret.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "secrets",
    "secretkey",
    "token",
    "tokens",
    "password",
    "passwords",
    "passwd",
    "pwd",
    "apikey",
    "accesskey",
    "privatekey",
    "auth",
    "authorization",
];

/// Last name words that say the value is about a secret, not the secret itself.
const NOT_SECRET_WORDS: &[&str] = &[
    "path", "file", "filename", "dir", "url", "uri", "name", "type", "count", "len", "length",
    "size", "limit", "max", "min", "format", "header", "ttl", "expiry", "expires", "id",
];

/// Whether the name at the start of an assignment match names a secret.
///
/// The pattern only finds a keyword somewhere in the name; this checks it on word
/// boundaries (`_`, `-`, `.`, camelCase), so `API_TOKEN`, `apiKey` and `clientSecret`
/// count while `tokenizer`, `author` and `token_count` do not, and `PWD`/`OLDPWD` (the
/// shell's working directory) are excluded.
fn name_is_secret(assignment: &str) -> bool {
    let name: &str = assignment
        .split(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
        .next()
        .unwrap_or_default();
    if name.eq_ignore_ascii_case("pwd") || name.eq_ignore_ascii_case("oldpwd") {
        return false;
    }
    let words = name_words(name);
    if words
        .last()
        .is_some_and(|w| NOT_SECRET_WORDS.contains(&w.as_str()))
    {
        return false;
    }
    let ends_secret = |w: &str| SECRET_WORDS.iter().any(|k| w.ends_with(k));
    words.iter().any(|w| ends_secret(w))
        || words
            .windows(2)
            .any(|pair| ends_secret(&format!("{}{}", pair[0], pair[1])))
}

/// Lower-cased words of an identifier, split at `_`, `-`, `.` and camelCase humps.
fn name_words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            words.extend((!current.is_empty()).then(|| std::mem::take(&mut current)));
            continue;
        }
        let prev = i
            .checked_sub(1)
            .and_then(|j| chars.get(j))
            .copied()
            .unwrap_or('_');
        let next = chars.get(i + 1).copied().unwrap_or('_');
        let hump = c.is_ascii_uppercase()
            && (prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next.is_ascii_lowercase()));
        if hump && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.push(c.to_ascii_lowercase());
    }
    words.extend((!current.is_empty()).then_some(current));
    words
}

/// Shannon entropy of the bytes of `s`, in bits per byte.
fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test tokens are assembled from pieces so that this file does not itself look like it
    // holds live credentials to secret scanners. All are fake, only format-valid.

    fn aws_access() -> String {
        concat!("AKIA", "IOSFODNN7EXAMPLE").to_string()
    }
    fn aws_secret() -> String {
        concat!("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYEXAMPLEKEY").to_string()
    }
    fn gcp() -> String {
        format!("AIza{}", "SyD-9tSrke72PouQMnMX7KyT1pZ3fE_x0Yc")
    }
    fn azure() -> String {
        let body = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6";
        format!("{body}QUJDREVGR0hJSktMTU5PUF==")
    }
    fn github() -> String {
        format!("ghp_{}", "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8")
    }
    fn github_pat() -> String {
        format!(
            "github_{}_{}",
            "pat_11ABCDEFG0123456789abc",
            "Xy".repeat(29) + "Z"
        )
    }
    fn gitlab() -> String {
        format!("glpat-{}", "xR4nD0mT0k3nV4lu3Zz9")
    }
    fn slack() -> String {
        format!(
            "xoxb-{}-{}",
            "1234567890123", "9876543210987-AbCdEfGhIjKlMnOpQrStUvWx"
        )
    }
    fn slack_hook() -> String {
        format!(
            "https://hooks.slack.com/{}/T0123ABCD/B0456EFGH/{}",
            "services", "aBcDeFgHiJkLmNoPqRsTuVwX"
        )
    }
    fn discord() -> String {
        format!(
            "{}.{}.{}",
            "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ", "GhIjKl", "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456"
        )
    }
    fn stripe() -> String {
        format!("sk_{}_{}", "live", "4eC39HqLyjWDarjtT1zdp7dc")
    }
    fn openai() -> String {
        format!("sk-{}-{}", "proj", "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z")
    }
    fn openai_legacy() -> String {
        format!(
            "sk-{}T3BlbkFJ{}",
            "aB1cD2eF3gH4iJ5kL6mN", "oP7qR8sT9uV0wX1yZ2aB3cD4"
        )
    }
    fn anthropic() -> String {
        format!(
            "sk-ant-{}-{}",
            "api03",
            "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2Yz3Ab4Cd5Ef6Gh7Ij8Kl9Mn0Op1Qr2St3Uv4Wx5Yz6AA"
        )
    }
    fn huggingface() -> String {
        format!("hf_{}", "aBcDeFgHiJkLmNoPqRsTuVwXyZ12345678")
    }
    fn npm() -> String {
        format!("npm_{}", "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789")
    }
    fn jwt() -> String {
        format!(
            "eyJ{}.eyJ{}.{}",
            "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
            "zdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0",
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
        )
    }
    fn pem(kind: &str) -> String {
        format!(
            "-----BEGIN {kind}PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END {kind}PRIVATE KEY-----"
        )
    }

    fn kinds(text: &str) -> Vec<&'static str> {
        scan(text).iter().map(|h| h.kind_type).collect()
    }

    /// Scans `text` (which must contain `secret` once) and checks the single hit's span.
    fn assert_single(text: &str, secret: &str, kind: &'static str) {
        let hits = scan(text);
        assert_eq!(hits.len(), 1, "{kind}: {hits:?} in {text:?}");
        let start = text.find(secret).unwrap();
        assert_eq!(
            hits[0],
            Hit {
                kind_type: kind,
                start,
                end: start + secret.len()
            },
            "{text:?}"
        );
    }

    #[test]
    fn engine_builds() {
        assert!(ENGINE.is_ok(), "{:?}", ENGINE.as_ref().err());
    }

    #[test]
    fn positives() {
        let cases: Vec<(String, String, &'static str)> = vec![
            (
                format!("key {} here", aws_access()),
                aws_access(),
                "aws_access_key",
            ),
            (
                format!("aws_secret_access_key = {}", aws_secret()),
                aws_secret(),
                "aws_secret_key",
            ),
            (
                format!("\"SecretAccessKey\": \"{}\"", aws_secret()),
                aws_secret(),
                "aws_secret_key",
            ),
            (format!("url?key={}&x", gcp()), gcp(), "gcp_api_key"),
            (
                format!(
                    "DefaultEndpointsProtocol=https;AccountName=a;AccountKey={};E",
                    azure()
                ),
                azure(),
                "azure_storage_key",
            ),
            (
                format!("git push https://{}@github.com/x", github()),
                github(),
                "github_token",
            ),
            (
                format!("token {}", github_pat()),
                github_pat(),
                "github_token",
            ),
            (format!("glab {}", gitlab()), gitlab(), "gitlab_token"),
            (format!("slack {}", slack()), slack(), "slack_token"),
            (
                format!("curl -X POST {}", slack_hook()),
                slack_hook(),
                "slack_webhook",
            ),
            (format!("bot {}", discord()), discord(), "discord_token"),
            (format!("stripe {}", stripe()), stripe(), "stripe_key"),
            (format!("OPENAI {}", openai()), openai(), "openai_api_key"),
            (
                format!("OPENAI {}", openai_legacy()),
                openai_legacy(),
                "openai_api_key",
            ),
            (
                format!("x-api-key: {}", anthropic()),
                anthropic(),
                "anthropic_api_key",
            ),
            (
                format!("hf {}", huggingface()),
                huggingface(),
                "huggingface_token",
            ),
            (
                format!("//registry/:_authToken {}", npm()),
                npm(),
                "npm_token",
            ),
            (format!("Authorization: Bearer {}", jwt()), jwt(), "jwt"),
            (format!("x\n{}\ny", pem("")), pem(""), "private_key"),
            (pem("OPENSSH "), pem("OPENSSH "), "private_key"),
            (pem("RSA "), pem("RSA "), "private_key"),
        ];
        for (text, secret, kind) in &cases {
            assert_single(text, secret, kind);
        }
    }

    #[test]
    fn negatives() {
        let cases = [
            concat!("AKIA", "IOSFODNN7EXAMPL"),   // 19 chars
            concat!("XAKIA", "IOSFODNN7EXAMPLE"), // not on a word boundary
            concat!("AKIA", "IOSFODNN7EXAMPLEX"), // 21 chars
            "aws_secret_access_key = tooshort",
            "see https://example.com/AIzaTooShort",
            "AccountKey=c2hvcnQ=;",
            concat!("ghp_", "short"),
            "the ghp_ prefix is documented",
            "glpat-short",
            "xoxb-notatoken",
            "https://hooks.slack.com/services/",
            "Mr.Smith.went",
            concat!("sk_test_", "4eC39HqLyjWDarjtT1zdp7dc"),
            "a task-management-system-for-teams-and-more",
            "sk-this-is-just-a-long-lowercase-css-class",
            concat!("sk-ant-", "short"),
            "hf_model_name_is_long_but_has_underscores",
            concat!("npm_", "tooshort"),
            "eyJhbGciOi.eyJ.x",
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "password = aaaaaaaaaaaaaaaaaaaaaaaa",
            "password: hunter2",
            "the password is stored in the vault, token rotation is daily",
            "author: Jane Doe <jane@example.com>",
            "PWD=/home/someone/projects/portcullis-main-1",
            "OLDPWD=/home/someone/projects/portcullis-main-2",
            "tokenizer.model_path = models/bert-base-uncased-v2.bin",
            "author = Jane_Doe-1987.Example-Org",
            "secretName: db-credentials-prod-cluster",
            "private_key_path = /etc/ssl/private/server-2024.pem",
            "token_count: 12345678901234567890",
        ];
        for text in cases {
            assert!(scan(text).is_empty(), "{text:?} gave {:?}", kinds(text));
        }
    }

    #[test]
    fn entropy_assignments() {
        let value = "q8Zr2LmX9vT4kWp7Yc3N";
        for text in [
            format!("API_TOKEN={value}"),
            format!("client_secret = \"{value}\""),
            format!("\"password\": \"{value}\""),
            format!("db_passwd: {value}"),
            format!("export GH_AUTH_TOKEN='{value}'"),
            format!("Authorization: Bearer {value}"),
            format!("apikey := \"{value}\""),
        ] {
            assert_single(&text, value, ENTROPY_KIND);
        }
        // A value another detector matched is reported once, by that detector.
        let text = format!("GITHUB_TOKEN={}", github());
        assert_eq!(kinds(&text), vec!["github_token"]);
        let text = format!("OPENAI_API_KEY=\"{}\"", openai());
        assert_eq!(kinds(&text), vec!["openai_api_key"]);
        let text = format!("AWS_SECRET_ACCESS_KEY={}", aws_secret());
        assert_eq!(kinds(&text), vec!["aws_secret_key"]);
    }

    #[test]
    fn overlaps_prefer_longer_then_specific() {
        // The openai pattern also matches an Anthropic key: the specific detector wins.
        assert_eq!(kinds(&anthropic()), vec!["anthropic_api_key"]);
        // A JWT inside a private key block is part of the longer block.
        let block = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----",
            jwt()
        );
        let hits = scan(&block);
        assert_eq!(
            hits,
            vec![Hit {
                kind_type: "private_key",
                start: 0,
                end: block.len()
            }]
        );
        // Several secrets in a row stay separate and sorted.
        let text = format!("{} {} {}", npm(), aws_access(), github());
        assert_eq!(
            kinds(&text),
            vec!["npm_token", "aws_access_key", "github_token"]
        );
        for w in scan(&text).windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }

    #[test]
    fn private_key_without_end_runs_to_the_end() {
        let text = "conf:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\nmore";
        let hits = scan(text);
        assert_eq!(
            hits,
            vec![Hit {
                kind_type: "private_key",
                start: 6,
                end: text.len()
            }]
        );
        // The PEM inside a service-account JSON file, with escaped newlines.
        let json = format!(
            "{{\"type\": \"service_account\", \"private_key\": \"{}\\n\"}}",
            pem("").replace('\n', "\\n")
        );
        assert_eq!(kinds(&json), vec!["private_key"]);
    }

    #[test]
    fn offsets_are_bytes_after_multibyte_text() {
        let key = aws_access();
        let text = format!("héllo wörld — 密钥: {key} ✓");
        let hits = scan(&text);
        let start = text.find(&key).unwrap();
        assert!(
            start > "héllo wörld — 密钥: ".chars().count(),
            "offset is in bytes"
        );
        assert_eq!(
            hits,
            vec![Hit {
                kind_type: "aws_access_key",
                start,
                end: start + 20
            }]
        );
        assert_eq!(&text[hits[0].start..hits[0].end], key);
    }

    #[test]
    fn mask_replaces_each_span() {
        let text = format!("a {} b {} c", aws_access(), npm());
        let masked = mask(&text, &scan(&text));
        assert_eq!(
            masked,
            "a [REDACTED:aws_access_key] b [REDACTED:npm_token] c"
        );
        assert_eq!(mask("nothing", &[]), "nothing");
    }

    #[test]
    fn mask_never_panics_on_foreign_hits() {
        let text = "ü secret ü";
        let hits = [
            Hit {
                kind_type: "x",
                start: 1,
                end: 4,
            }, // inside a multibyte char
            Hit {
                kind_type: "y",
                start: 3,
                end: 100,
            }, // overlaps, past the end
            Hit {
                kind_type: "z",
                start: 50,
                end: 10,
            }, // inverted
        ];
        let masked = mask(text, &hits);
        assert_eq!(masked, "[REDACTED:x][REDACTED:y]");
    }

    #[test]
    fn only_the_prefix_is_scanned() {
        let mut text = "é".repeat(MAX_SCAN / 2); // exactly MAX_SCAN bytes
        text.push_str(&aws_access());
        assert!(scan(&text).is_empty());
        let text = format!("x{}", "é".repeat(MAX_SCAN / 2)); // the cut falls inside a char
        assert!(scan(&text).is_empty());
    }

    #[test]
    fn large_prose_finds_nothing() {
        let words = [
            "the",
            "agent",
            "reads",
            "a",
            "file",
            "and",
            "writes",
            "tokens",
            "to",
            "its",
            "log;",
            "authors",
            "said:",
            "password",
            "rotation",
            "matters.",
            "See",
            "https://example.com/docs?page=2",
            "commit",
            "3f2a9c0d1e4b5a6978877665544332211aabbccd",
            "uuid",
            "123e4567-e89b-12d3-a456-426614174000",
            "Skipping",
            "sk-learn",
            "AKIA",
            "eyJ",
            "-----BEGIN",
            "secret:",
            "none",
            "MNO.ab.cd",
            "key=value",
        ];
        let mut text = String::new();
        let mut i = 0usize;
        while text.len() < 100 * 1024 {
            text.push_str(words[(i * 7 + i / 3) % words.len()]);
            text.push(if i % 13 == 12 { '\n' } else { ' ' });
            i += 1;
        }
        assert!(scan(&text).is_empty(), "{:?}", kinds(&text));
    }

    #[test]
    fn secret_names_are_matched_on_word_boundaries() {
        for name in [
            "API_TOKEN",
            "apiKey",
            "x-api-key",
            "clientSecret",
            "AUTH",
            "npmAuthToken",
            "DB_PASSWORD",
            "passwd",
            "APIKey",
            "ghtoken",
        ] {
            assert!(name_is_secret(&format!("{name}=x")), "{name}");
        }
        for name in [
            "tokenizer",
            "author",
            "token_count",
            "PWD",
            "OLDPWD",
            "secret_file",
            "keyboard",
        ] {
            assert!(!name_is_secret(&format!("{name}=x")), "{name}");
        }
        assert_eq!(
            name_words("myAPIKey_v2.x-y"),
            vec!["my", "api", "key", "v2", "x", "y"]
        );
    }

    #[test]
    fn entropy_is_bits_per_byte() {
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
        assert!(entropy("q8Zr2LmX9vT4kWp7Yc3N") >= MIN_ENTROPY_BITS);
    }
}
