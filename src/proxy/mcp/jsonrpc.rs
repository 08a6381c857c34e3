//! JSON-RPC 2.0 framing for MCP: strict parsing (one reading of the bytes, DESIGN §7.4),
//! classification, and the error replies portcullis sends.

use serde_json::{Map, Value, json};

use crate::input::{self, InputError};

/// JSON-RPC's own codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
/// The policy denied the request (or the response it would have produced). `error.data`
/// carries the action id, the outcome and the reasons.
pub const DENIED: i64 = -32010;
/// The tool server exited or is restarting; the request may be retried.
pub const SERVER_UNAVAILABLE: i64 = -32011;
/// Too many requests in flight on this session (`mcp.max_pending`).
pub const TOO_MANY_PENDING: i64 = -32012;

/// Deepest JSON accepted in one message (tool schemas nest; nothing legitimate nests 64 deep).
const MAX_DEPTH: usize = 64;

/// One line, parsed.
pub enum Line {
    One(Value),
    Batch(Vec<Value>),
}

/// A message, by shape.
pub enum Message<'a> {
    Request {
        id: &'a Value,
        method: &'a str,
        params: Option<&'a Value>,
    },
    Notification {
        method: &'a str,
    },
    Response {
        id: &'a Value,
    },
}

/// Parse one line strictly: duplicate keys, invalid UTF-8, lone surrogates and numbers that do
/// not fit are errors, and nothing of such a line is forwarded.
pub fn parse_line(bytes: &[u8], max_bytes: usize) -> Result<Line, InputError> {
    match input::parse_value_limited(bytes, max_bytes, MAX_DEPTH)? {
        Value::Array(items) => Ok(Line::Batch(items)),
        v => Ok(Line::One(v)),
    }
}

/// The ids of a line that failed strict parsing (each element of a batch), as far as a lenient
/// reading finds them, so the errors can be addressed. The lenient reading is used for nothing
/// else.
pub fn salvage_ids(bytes: &[u8]) -> Vec<Value> {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return Vec::new();
    };
    let items = match v {
        Value::Array(items) => items,
        v => vec![v],
    };
    items
        .into_iter()
        .filter_map(|m| m.get("id").filter(|id| valid_id(id)).cloned())
        .collect()
}

/// The id of a line too long to parse, if it shows one near its start or end (where
/// serializers put `id`). Only used to fail that request instead of letting it hang.
pub fn sniff_id(head: &[u8], tail: &[u8]) -> Option<Value> {
    static ID: std::sync::LazyLock<Option<regex::bytes::Regex>> = std::sync::LazyLock::new(|| {
        regex::bytes::Regex::new(r#""id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?[0-9]{1,19})"#).ok()
    });
    let re = ID.as_ref()?;
    [head, tail].iter().find_map(|part| {
        let m = re.captures(part)?.get(1)?;
        serde_json::from_slice::<Value>(m.as_bytes())
            .ok()
            .filter(valid_id)
    })
}

/// Strings, and integers a JavaScript peer holds exactly (beyond ±(2^53 − 1) two ids could
/// be one to the server and two to us).
pub fn valid_id(id: &Value) -> bool {
    const MAX: i64 = (1 << 53) - 1;
    matches!(id, Value::String(_)) || id.as_i64().is_some_and(|n| (-MAX..=MAX).contains(&n))
}

/// The bytes to forward for a message parsed from `raw`: `raw` itself, unless it holds a line
/// break (legal JSON whitespace, but a peer that splits lines would read several messages in
/// it); then the message is serialized again, with no raw line break possible.
pub fn forwardable(raw: Vec<u8>, v: &Value) -> Vec<u8> {
    if raw.iter().any(|&b| b == b'\n' || b == b'\r') {
        to_line(v)
    } else {
        raw
    }
}

/// Classify a message; `Err` says why it is not a JSON-RPC 2.0 message.
pub fn classify(v: &Value) -> Result<Message<'_>, &'static str> {
    let Value::Object(m) = v else {
        return Err("a message must be a JSON object");
    };
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("`jsonrpc` must be \"2.0\"");
    }
    let id = m.get("id");
    if let Some(id) = id
        && !valid_id(id)
    {
        return Err("`id` must be a string or an integer");
    }
    match (m.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request {
            id,
            method,
            params: m.get("params"),
        }),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method }),
        (Some(_), _) => Err("`method` must be a string"),
        (None, Some(id)) if m.contains_key("result") != m.contains_key("error") => {
            Ok(Message::Response { id })
        }
        (None, Some(_)) => Err("a response has exactly one of `result` and `error`"),
        (None, None) => Err("a message needs `method` or `id`"),
    }
}

/// The map key of an id (its JSON text: `"a"` and `1` stay distinct).
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

/// A JSON-RPC error response, as one line (without the newline).
pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let mut err = Map::new();
    err.insert("code".into(), code.into());
    err.insert("message".into(), message.into());
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    to_line(&json!({"jsonrpc": "2.0", "id": id, "error": err}))
}

/// A success response carrying `result`.
pub fn result(id: &Value, result: Value) -> Vec<u8> {
    to_line(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// Serialize a message as one line. serde_json escapes control characters, so the line has
/// no raw newline.
pub fn to_line(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let line = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"path":"a","path":"b"}}}"#;
        assert!(parse_line(line, 1 << 20).is_err());
        assert_eq!(salvage_ids(line), vec![json!(1)]);
        let batch = br#"[{"jsonrpc":"2.0","id":"a","method":"x","params":{"k":1,"k":2}},{"jsonrpc":"2.0","id":2,"method":"y"}]"#;
        assert_eq!(salvage_ids(batch), vec![json!("a"), json!(2)]);
    }

    #[test]
    fn ids_are_sniffed_from_the_ends_of_an_over_long_line() {
        assert_eq!(
            sniff_id(
                br#"{"jsonrpc":"2.0","id":42,"result":{"x":"aaa"#,
                b"aaa\"}}"
            ),
            Some(json!(42))
        );
        assert_eq!(
            sniff_id(
                br#"{"result":{"content":"aaa"#,
                br#"aaa"},"id":"r-1","jsonrpc":"2.0"}"#
            ),
            Some(json!("r-1"))
        );
        assert_eq!(sniff_id(b"{\"result\":", b"}"), None);
    }

    #[test]
    fn shapes() {
        let req = json!({"jsonrpc":"2.0","id":"a","method":"ping"});
        assert!(matches!(
            classify(&req),
            Ok(Message::Request { method: "ping", .. })
        ));
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        assert!(matches!(classify(&note), Ok(Message::Notification { .. })));
        let resp = json!({"jsonrpc":"2.0","id":3,"result":{}});
        assert!(matches!(classify(&resp), Ok(Message::Response { .. })));
        for bad in [
            json!({"jsonrpc":"1.0","id":1,"method":"x"}),
            json!({"jsonrpc":"2.0","id":1.5,"method":"x"}),
            json!({"jsonrpc":"2.0","id":null,"method":"x"}),
            json!({"jsonrpc":"2.0","id":1,"result":{},"error":{}}),
            json!({"jsonrpc":"2.0","id":1}),
            json!({"jsonrpc":"2.0","method":7}),
            json!([1]),
        ] {
            assert!(classify(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_keep_their_type() {
        assert_ne!(id_key(&json!("1")), id_key(&json!(1)));
    }

    #[test]
    fn error_lines_have_no_newline() {
        let line = error(&json!(1), DENIED, "a\nb", None);
        assert!(!line.contains(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["error"]["code"], DENIED);
    }
}
