//! The MCP front end (DESIGN §5): `portcullis mcp` (stdio) and, from the gateway, `/mcp/{server}`.
//!
//! The relay ([`relay`]) is transport-agnostic; [`stdio`] carries it over a child process's
//! pipes. Error codes portcullis answers with are in [`jsonrpc`] and `docs/mcp.md`.

pub mod http;
pub mod jsonrpc;
pub mod pins;
pub mod relay;
pub mod shared;
pub mod stdio;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::action::Agent;
use crate::audit::{AuditConfig, AuditLog};
use crate::config::{Config, McpServer};
use crate::gate::Gate;
use crate::gate::identity::Caller;
use crate::gate::state::{InMemory, StateStore};
use crate::metrics::Metrics;
use crate::normalize::Context;
use crate::policy::{PolicyFiles, PolicySet};
use relay::{Relay, RelayConfig};

/// How a sandboxed server of one MCP session reaches the network: the server layer serves
/// the egress proxy on a Unix socket for that session alone, so what the server fetches is
/// decided as the session's agent, in the session (the front ends do not know each other).
pub trait SessionEgress: Send + Sync {
    /// Serve egress for `caller` in `session` on a new Unix socket at `path`, until the
    /// returned guard is dropped.
    fn serve(
        &self,
        path: &std::path::Path,
        caller: &Caller,
        session: &str,
    ) -> std::io::Result<Box<dyn Send>>;
}

/// Builds the egress of a sandboxed stdio wrapper's server from its Gate (the caller knows the
/// egress front end; this one does not).
pub type EgressFactory =
    Box<dyn FnOnce(Arc<Gate>) -> Result<Arc<dyn SessionEgress>, String> + Send>;

/// Why the stdio wrapper could not run.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("policy: {0}")]
    Policy(String),
    #[error("audit log {path}: {message}")]
    Audit { path: PathBuf, message: String },
    #[error(transparent)]
    Pins(#[from] pins::PinError),
    #[error("{0}; nothing was started")]
    Sandbox(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Each stdio wrapper is its own process with its own audit chain:
/// `<audit.path without .jsonl>.mcp-<server>.jsonl`.
pub fn stdio_audit_path(audit: &Path, server: &str) -> PathBuf {
    let stem = audit
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".jsonl").unwrap_or(&stem);
    audit.with_file_name(format!("{stem}.mcp-{server}.jsonl"))
}

/// Run `server` as a stdio MCP server behind the Gate, relaying our stdin and stdout, until the
/// client closes stdin or SIGTERM/SIGINT. A sandboxed server reaches the network only through
/// the egress `egress` builds, as this wrapper's session; without it, not at all.
pub async fn run_stdio(
    config: Config,
    server: McpServer,
    egress: Option<EgressFactory>,
) -> Result<(), McpError> {
    let mut spawn = stdio::Spawn::new(&config, &server).map_err(McpError::Sandbox)?;
    let files = match &config.policy.dir {
        Some(dir) => PolicyFiles::from_dir(dir).map_err(|e| McpError::Policy(e.to_string()))?,
        None => PolicyFiles::embedded(),
    };
    let policy = PolicySet::load(
        files,
        &config.policy_data(),
        &config.policy.entrypoint,
        config.policy.timeout,
    )
    .map_err(|e| McpError::Policy(e.to_string()))?;
    let audit_path = stdio_audit_path(&config.audit.path, &server.name);
    let mut audit_cfg = AuditConfig::new(audit_path.clone());
    audit_cfg.durability = config.audit.durability;
    audit_cfg.rotate_bytes = config.audit.rotate_bytes;
    audit_cfg.queue_capacity = config.audit.queue_capacity;
    let (audit, _) = AuditLog::open(audit_cfg).map_err(|e| McpError::Audit {
        path: audit_path.clone(),
        message: e.to_string(),
    })?;
    let state: Arc<dyn StateStore> = Arc::new(InMemory::new(&config));
    let ctx = Context {
        roots: config.workspace.roots.clone(),
        resolve_symlinks: config.workspace.resolve_symlinks,
    };
    let gate = Arc::new(
        Gate::new(ctx, policy, Some(audit.clone()))
            .with_state(state, Arc::new(Metrics::new()))
            .without_approver(
                "this action needs approval, and a stdio wrapper has no admin API to give it: \
                 reach the server through `portcullis serve` (/mcp/{server}) to have it approved",
            ),
    );
    let agent = config.identity.anonymous.as_ref().map_or_else(
        || Agent {
            id: "local".into(),
            labels: Default::default(),
            authenticated: false,
        },
        |a| Agent {
            id: a.id.clone(),
            labels: a.labels.clone(),
            authenticated: false,
        },
    );
    let session = ulid::Ulid::new().to_string();
    let caller = Caller {
        agent,
        default_session: session.clone(),
    };
    let pins = Arc::new(pins::Pins::load(&config.mcp.pins)?);
    let mut map = server
        .preset
        .as_deref()
        .and_then(crate::config::preset)
        .unwrap_or_default();
    map.extend(server.map.iter().cloned());
    let network = match egress {
        Some(build) if spawn.sandbox.is_some() => {
            let egress = build(gate.clone()).map_err(McpError::Sandbox)?;
            stdio::session_network(&mut spawn, egress.as_ref(), &caller, &session)?
        }
        _ => None,
    };
    let (client_tx, client_rx) = mpsc::channel(256);
    let (server_tx, server_rx) = mpsc::channel(256);
    let relay = Arc::new(Relay::new(
        gate,
        caller,
        session,
        RelayConfig {
            server: server.name.clone(),
            map,
            detect_preset: server.preset.is_none(),
            max_line_bytes: config.mcp.max_line_bytes,
            max_pending: config.mcp.max_pending,
        },
        pins,
        client_tx,
        server_tx,
    ));
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
    });
    tracing::info!(mcp.server = %server.name, command = ?server.command, audit = %audit_path.display(), "stdio MCP wrapper starting");
    let backoff = config.mcp.restart_backoff;
    // Pipes (what MCP clients give their servers) are read and written on the runtime's own
    // reactor; anything else through tokio's blocking stdin/stdout.
    let result = match client_pipes() {
        Some((input, output)) => {
            stdio::run(
                relay, spawn, backoff, input, output, client_rx, server_rx, stop,
            )
            .await
        }
        None => {
            let (input, output) = (tokio::io::stdin(), tokio::io::stdout());
            stdio::run(
                relay, spawn, backoff, input, output, client_rx, server_rx, stop,
            )
            .await
        }
    };
    drop(network);
    // Records still queued are written and synced before we exit.
    tokio::task::spawn_blocking(move || audit.close())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .map_err(|e| McpError::Audit {
            path: audit_path,
            message: e.to_string(),
        })?;
    result?;
    Ok(())
}

/// Our stdin and stdout as non-blocking pipe ends, if both are pipes.
fn client_pipes() -> Option<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use std::os::fd::AsFd;
    let input = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(input).ok()?;
    let tx = tokio::net::unix::pipe::Sender::from_owned_fd(output).ok()?;
    Some((rx, tx))
}

/// The server name for `portcullis mcp -- CMD ARGS…` without `--name`: the file name of the
/// command, or for a launcher (`npx`, `node`, `uvx`, `python`, …) of its first argument that
/// is not a flag, without a `.js`/`.py` suffix or npm scope.
pub fn default_name(argv: &[String]) -> String {
    const LAUNCHERS: &[&str] = &[
        "npx", "node", "uvx", "uv", "python", "python3", "deno", "bun", "bunx", "pipx", "pnpx",
    ];
    let base = |s: &str| {
        let s = s.rsplit('/').next().unwrap_or(s);
        let s = s.split('@').find(|p| !p.is_empty()).unwrap_or(s);
        s.trim_end_matches(".js")
            .trim_end_matches(".py")
            .to_string()
    };
    let mut it = argv.iter();
    let Some(cmd) = it.next() else {
        return "stdio".into();
    };
    let first = base(cmd);
    let name = if LAUNCHERS.contains(&first.as_str()) {
        it.find(|a| !a.starts_with('-') && *a != "run")
            .map(|a| base(a))
            .unwrap_or(first)
    } else {
        first
    };
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "stdio".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        let n = |a: &[&str]| default_name(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            n(&["npx", "-y", "@modelcontextprotocol/server-filesystem", "/w"]),
            "server-filesystem"
        );
        assert_eq!(n(&["/usr/bin/mcp-server-git"]), "mcp-server-git");
        assert_eq!(n(&["python3", "-m", "notes_server"]), "notes_server");
        assert_eq!(n(&["node", "dist/index.js"]), "index");
        assert_eq!(n(&["uvx", "mcp-server-fetch@1.2"]), "mcp-server-fetch");
        assert_eq!(n(&[]), "stdio");
    }

    #[test]
    fn stdio_audit_paths_are_per_server() {
        assert_eq!(
            stdio_audit_path(Path::new("/var/log/portcullis-audit.jsonl"), "fs"),
            Path::new("/var/log/portcullis-audit.mcp-fs.jsonl")
        );
        assert_eq!(
            stdio_audit_path(Path::new("/a/log"), "x"),
            Path::new("/a/log.mcp-x.jsonl")
        );
    }
}
