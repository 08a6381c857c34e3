//! Apply a decision's `redact` list to a payload before it goes on (a tool result to the
//! client, a prompt to the model provider, a model's answer to the agent).
//!
//! Findings locate a span by `where` (a path such as `result.content[0].text`) and byte
//! offsets; the policy names which (where, type) pairs to redact. Secrets become
//! `[REDACTED:<type>]`; invisible characters are removed.

use serde_json::Value;

use crate::action::{Finding, Redaction};

/// Redact, in `payload` (what findings locate as `<prefix>…`, e.g. `result` for the JSON-RPC
/// `result` member), every finding the policy named. A named finding that cannot be applied is
/// an error: the payload must then not be passed on at all.
pub fn apply(
    payload: &mut Value,
    prefix: &str,
    findings: &[Finding],
    redact: &[Redaction],
) -> Result<(), String> {
    let mut spans: Vec<&Finding> = findings
        .iter()
        .filter(|f| {
            redact
                .iter()
                .any(|r| r.location == f.location && r.kind_type == f.kind_type)
        })
        .collect();
    // Back to front within a string, so earlier offsets stay valid.
    spans.sort_by(|a, b| (&a.location, b.start).cmp(&(&b.location, a.start)));
    let mut last: Option<(&str, usize)> = None;
    for f in spans {
        let unusable = || format!("cannot redact {} at {}", f.kind_type, f.location);
        // Only the payload goes on; spans elsewhere in the action are not ours.
        let Some(path) = f.location.strip_prefix(prefix) else {
            continue;
        };
        let Some(Value::String(s)) = navigate(payload, path) else {
            return Err(unusable());
        };
        // A span overlapping the one redacted after it ends where that one began.
        let end = match last {
            Some((loc, start)) if loc == f.location => f.end.min(start),
            _ => f.end,
        };
        if f.start > end
            || end > s.len()
            || !s.is_char_boundary(f.start)
            || !s.is_char_boundary(end)
        {
            return Err(unusable());
        }
        let with = if f.kind == "invisible_unicode" {
            String::new()
        } else {
            format!("[REDACTED:{}]", f.kind_type)
        };
        s.replace_range(f.start..end, &with);
        last = Some((f.location.as_str(), f.start));
    }
    Ok(())
}

/// Follow `.key`, `["key"]` and `[N]` steps (the locations normalize writes).
fn navigate<'a>(mut v: &'a mut Value, mut path: &str) -> Option<&'a mut Value> {
    while !path.is_empty() {
        if let Some(rest) = path.strip_prefix('.') {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            v = v.get_mut(&rest[..end])?;
            path = &rest[end..];
        } else if path.starts_with("[\"") {
            // A JSON string key: find its closing quote by parsing it.
            let mut de = serde_json::Deserializer::from_str(&path[1..]).into_iter::<String>();
            let key = de.next()?.ok()?;
            let used = de.byte_offset();
            let after = path[1 + used..].strip_prefix(']')?;
            v = v.get_mut(&key)?;
            path = after;
        } else if let Some(rest) = path.strip_prefix('[') {
            let end = rest.find(']')?;
            let i: usize = rest[..end].parse().ok()?;
            v = v.get_mut(i)?;
            path = &rest[end + 1..];
        } else {
            return None;
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finding(kind: &str, t: &str, at: &str, start: usize, end: usize) -> Finding {
        Finding {
            kind: kind.into(),
            kind_type: t.into(),
            location: at.into(),
            start,
            end,
        }
    }

    fn redaction(at: &str, t: &str) -> Redaction {
        Redaction {
            location: at.into(),
            kind_type: t.into(),
        }
    }

    #[test]
    fn named_spans_are_redacted_others_kept() {
        let mut r = json!({"content": [{"type": "text", "text": "k=AKIAXXXX and AKIAYYYY"}], "odd key": {"x": "abc"}});
        let f = vec![
            finding("secret", "aws_access_key", "result.content[0].text", 2, 10),
            finding("secret", "aws_access_key", "result.content[0].text", 15, 23),
            finding("secret", "other", "result[\"odd key\"].x", 0, 1),
        ];
        apply(
            &mut r,
            "result",
            &f,
            &[redaction("result.content[0].text", "aws_access_key")],
        )
        .unwrap();
        assert_eq!(
            r["content"][0]["text"],
            "k=[REDACTED:aws_access_key] and [REDACTED:aws_access_key]"
        );
        assert_eq!(r["odd key"]["x"], "abc", "not named by the policy");
        apply(
            &mut r,
            "result",
            &f[2..],
            &[redaction("result[\"odd key\"].x", "other")],
        )
        .unwrap();
        assert_eq!(r["odd key"]["x"], "[REDACTED:other]bc");
    }

    #[test]
    fn invisible_characters_are_removed() {
        let text = "a\u{E0041}\u{E0042}b";
        let mut r = json!({"content": [{"type": "text", "text": text}]});
        let f = vec![finding(
            "invisible_unicode",
            "tag_characters",
            "result.content[0].text",
            1,
            9,
        )];
        apply(
            &mut r,
            "result",
            &f,
            &[redaction("result.content[0].text", "tag_characters")],
        )
        .unwrap();
        assert_eq!(r["content"][0]["text"], "ab");
    }

    #[test]
    fn a_named_finding_that_cannot_be_applied_is_an_error() {
        for (at, start, end) in [
            ("result.content[0].text", 1, 2),
            ("result.content[5].text", 0, 1),
            ("result.content[0].text", 0, 99),
            ("result.nothing", 0, 1),
        ] {
            let mut r = json!({"content": [{"text": "é"}]});
            let f = vec![finding("secret", "t", at, start, end)];
            assert!(
                apply(&mut r, "result", &f, &[redaction(at, "t")]).is_err(),
                "{at} {start}..{end}"
            );
        }
    }

    #[test]
    fn overlapping_spans_are_both_covered() {
        let mut r = json!({"content": [{"text": "0123456789"}]});
        let at = "result.content[0].text";
        let f = vec![
            finding("secret", "a", at, 1, 6),
            finding("secret", "b", at, 4, 8),
        ];
        apply(
            &mut r,
            "result",
            &f,
            &[redaction(at, "a"), redaction(at, "b")],
        )
        .unwrap();
        assert_eq!(r["content"][0]["text"], "0[REDACTED:a][REDACTED:b]89");
    }
}
