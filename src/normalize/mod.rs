//! Normalize in Rust, decide in Rego (DESIGN §1).
//!
//! Everything that is hard or unsafe to do in Rego is computed here, before evaluation, and
//! written into the Action's derived fields, overwriting whatever a caller put there. The Gate
//! and the CLI both call [`normalize`], so what `policy eval` shows is what would be enforced.
//!
//! The submodules are pure functions; the only I/O is the optional realpath step of `path`.

pub mod content;
pub mod net;
pub mod path;
pub mod secrets;
pub mod shell;

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;

use crate::action::{Action, Content, ExecFacet, Finding, HttpFacet};

/// What normalization needs to know about the environment.
#[derive(Debug, Clone)]
pub struct Context {
    /// Workspace roots, canonical; the first is the base of relative paths.
    pub roots: Vec<PathBuf>,
    /// Resolve symlinks (the realpath step).
    pub resolve_symlinks: bool,
}

/// Why an Action could not be normalized. The action is refused, not decided.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("file.path: {0}")]
    Path(#[from] path::PathError),
    #[error("http: {0}")]
    Net(#[from] net::NetError),
    #[error("file.path resolves to a path that is not valid UTF-8")]
    NonUtf8Path,
    #[error("{0}: missing; {1}")]
    Missing(&'static str, &'static str),
}

/// Fill every derived field of `action` from its raw fields.
pub fn normalize(action: &mut Action, ctx: &Context) -> Result<(), NormalizeError> {
    if action.id.is_empty() {
        action.id = ulid::Ulid::new().to_string();
    }
    if let Some(file) = &mut action.file {
        let base = ctx
            .roots
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("/"));
        let canonical = path::canonicalize(&file.path, &base, ctx.resolve_symlinks)?;
        // A lossy conversion would name a different file than the kernel opens: refuse.
        file.canonical = canonical
            .into_os_string()
            .into_string()
            .map_err(|_| NormalizeError::NonUtf8Path)?;
    }
    if let Some(exec) = &mut action.exec {
        normalize_exec(exec)?;
    }
    if let Some(http) = &mut action.http {
        normalize_http(http)?;
    }
    let findings = scan(action);
    if findings.is_empty() && action.content.is_none() {
        return Ok(());
    }
    action.content.get_or_insert_with(Content::default).findings = findings;
    Ok(())
}

fn normalize_exec(exec: &mut ExecFacet) -> Result<(), NormalizeError> {
    let line = if !exec.command.is_empty() {
        exec.command.clone()
    } else if !exec.argv.is_empty() {
        // An execve: quote the argv back into one command so wrappers (`sh -c`, `sudo`, …)
        // are unpacked by the same parser.
        exec.argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        return Err(NormalizeError::Missing(
            "exec",
            "give exec.command or exec.argv",
        ));
    };
    let parsed = shell::parse(&line);
    if !exec.command.is_empty() {
        exec.argv = parsed.commands.first().cloned().unwrap_or_default();
    }
    exec.commands = parsed.commands;
    exec.opaque = parsed.opaque;
    Ok(())
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn normalize_http(http: &mut HttpFacet) -> Result<(), NormalizeError> {
    let target = if !http.url.is_empty() {
        net::parse_url(&http.url)?
    } else if !http.host.is_empty() {
        net::parse_authority(&http.host, http.port)?
    } else {
        return Err(NormalizeError::Missing(
            "http",
            "give http.url or http.host and http.port",
        ));
    };
    http.method = http.method.to_ascii_uppercase();
    http.scheme = target.scheme;
    http.host = target.host;
    http.port = target.port;
    http.path = target.path;
    http.ip_literal = target.ip.is_some();
    // A literal is its own answer; a name has what the egress proxy resolved, if anything.
    match (target.ip, http.resolved.take()) {
        (Some(ip), _) => set_resolved(http, &[ip]),
        (None, Some(ips)) => {
            set_resolved(http, &ips);
            http.resolved = Some(ips);
        }
        (None, None) => set_resolved(http, &[]),
    }
    Ok(())
}

/// Record the addresses a request will really go to (the literal, or what the egress proxy
/// resolved) and their most sensitive class. Front ends that resolve call this after
/// [`normalize`]; nothing else may set `ips`.
pub fn set_resolved(http: &mut HttpFacet, ips: &[IpAddr]) {
    http.ips = ips.iter().map(IpAddr::to_string).collect();
    http.ip_class = net::most_sensitive(ips);
}

/// Scan every string an agent controls for secrets: tool arguments, free text, the command
/// line and what it parses to (quote removal can join a split token), and the URL. Text a model
/// will read (tool arguments, what a server returned, free text) is also scanned for invisible
/// characters and instruction-like text ([`content`]).
fn scan(action: &Action) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(tool) = &action.tool {
        scan_value(
            &tool.arguments,
            &mut String::from("tool.arguments"),
            &mut out,
        );
        if let Some(payload) = &tool.payload {
            scan_value(payload, &mut String::from("result"), &mut out);
        }
    }
    if let Some(payload) = action.model.as_ref().and_then(|m| m.payload.as_ref()) {
        let at = match action.kind {
            crate::action::Kind::ModelResponse => "response",
            _ => "request",
        };
        scan_value(payload, &mut String::from(at), &mut out);
    }
    if let Some(text) = action.content.as_ref().and_then(|c| c.text.as_deref()) {
        scan_str(text, "content.text", &mut out);
        scan_content(text, "content.text", &mut out);
    }
    if let Some(exec) = &action.exec {
        scan_str(&exec.command, "exec.command", &mut out);
        for (i, cmd) in exec.commands.iter().enumerate() {
            for (j, arg) in cmd.iter().enumerate() {
                scan_str(arg, &format!("exec.commands[{i}][{j}]"), &mut out);
            }
        }
    }
    if let Some(http) = &action.http {
        scan_str(&http.url, "http.url", &mut out);
        if let Some(body) = &http.body {
            // Invalid UTF-8 becomes U+FFFD: a secret is ASCII, so it is still seen whole.
            scan_str(&String::from_utf8_lossy(body), "http.body", &mut out);
        }
        for (name, value) in http.headers.iter().flatten() {
            scan_str(value, &format!("http.headers.{name}"), &mut out);
        }
    }
    out
}

fn scan_str(text: &str, location: &str, out: &mut Vec<Finding>) {
    for hit in secrets::scan(text) {
        out.push(Finding {
            kind: "secret".into(),
            kind_type: hit.kind_type.into(),
            location: location.to_string(),
            start: hit.start,
            end: hit.end,
        });
    }
}

fn scan_content(text: &str, location: &str, out: &mut Vec<Finding>) {
    for hit in content::scan(text) {
        out.push(Finding {
            kind: hit.kind.into(),
            kind_type: hit.kind_type.into(),
            location: location.to_string(),
            start: hit.start,
            end: hit.end,
        });
    }
}

fn scan_value(value: &Value, location: &mut String, out: &mut Vec<Finding>) {
    match value {
        Value::String(s) => {
            scan_str(s, location, out);
            scan_content(s, location, out);
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = location.len();
                location.push_str(&format!("[{i}]"));
                scan_value(item, location, out);
                location.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = location.len();
                push_key(location, key);
                // A key's findings are at `<path>#key`, never at its value's path: a redaction
                // there would mask the wrong bytes (and fails, so the whole text is withheld).
                let at_key = format!("{location}#key");
                scan_str(key, &at_key, out);
                scan_content(key, &at_key, out);
                scan_value(item, location, out);
                location.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `.key` for identifier-like keys, `["key"]` otherwise, so a location is never ambiguous.
fn push_key(location: &mut String, key: &str) {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        location.push('.');
        location.push_str(key);
    } else {
        location.push_str(&format!("[{}]", Value::from(key)));
    }
}

/// Mask every secret in every string of `value` (the audit copy of an action and decision).
/// Masks by scanning again rather than by finding locations, so values derived from a secret
/// (an argv element, a policy message quoting a command) are masked too.
pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::String(s) => {
            let hits = secrets::scan(s);
            if !hits.is_empty() {
                *s = secrets::mask(s, &hits);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        Value::Object(map) => map.values_mut().for_each(mask_secrets),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests;
