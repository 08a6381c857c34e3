//! `portcullis mcp`: the stdio MCP wrapper. The agent's MCP client starts it as the server
//! command; it starts the real server and gates what passes between them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use clap::Args;

use super::{Failure, load_config};
use crate::config::McpServer;
use crate::proxy::mcp;

#[derive(Args, Debug)]
pub struct McpArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// A server from the configuration's `[[mcp.servers]]`.
    #[arg(long, conflicts_with = "command")]
    server: Option<String>,
    /// The server name policies see (`tool.server`) for `-- CMD`; default: from the command.
    #[arg(long, requires = "command")]
    name: Option<String>,
    /// Argument mappings shipped with portcullis (`filesystem`), for `-- CMD`; default: detected
    /// from the server's `serverInfo.name`.
    #[arg(long, requires = "command")]
    preset: Option<String>,
    /// Confine `-- CMD` by this `[run.profiles.NAME]` (`default` is built in), as
    /// `[[mcp.servers]] sandbox` does for a configured server.
    #[arg(long, requires = "command")]
    sandbox: Option<String>,
    /// The server's command line.
    #[arg(last = true)]
    command: Vec<String>,
}

pub fn run(args: McpArgs) -> Result<ExitCode, Failure> {
    let config = load_config(args.config.as_deref())?;
    let server = match (&args.server, args.command.is_empty()) {
        (Some(name), _) => config
            .mcp
            .servers
            .iter()
            .find(|s| &s.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = config.mcp.servers.iter().map(|s| s.name.as_str()).collect();
                anyhow!(
                    "--server {name:?}: no such server in [[mcp.servers]] of {} (known: {known:?})",
                    config.describe()
                )
            })?,
        (None, false) => {
            if let Some(p) = &args.preset
                && crate::config::preset(p).is_none()
            {
                return Err(anyhow!("--preset {p:?}: unknown preset").into());
            }
            McpServer {
                name: args
                    .name
                    .clone()
                    .unwrap_or_else(|| mcp::default_name(&args.command)),
                command: args.command.clone(),
                url: None,
                headers: Default::default(),
                env: Default::default(),
                preset: args.preset.clone(),
                map: Vec::new(),
                process: Default::default(),
                sandbox: args.sandbox.clone(),
            }
        }
        (None, true) => {
            return Err(anyhow!("give --server NAME or the server's command after `--`").into());
        }
    };
    if let Some(url) = &server.url {
        return Err(anyhow!(
            "server {:?} is an upstream url ({url}): reach it through `portcullis serve` at /mcp/{}; the stdio wrapper runs a command",
            server.name,
            server.name
        )
        .into());
    }
    // One client, one server: a single thread relays without cross-thread wake-ups (the audit
    // writer has its own thread).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // A sandboxed server's one way out: the egress proxy, in this process, as its session.
    let egress: Option<mcp::EgressFactory> = server.sandbox.is_some().then(|| {
        let (cfg, limits) = (config.egress.clone(), config.server.clone());
        Box::new(move |gate| {
            let max = limits.max_connections;
            let egress = crate::proxy::egress::Egress::new(gate, cfg, &[], max)?;
            Ok(Arc::new(crate::server::egress::SessionEgress {
                egress: Arc::new(egress),
                limits,
                metrics: Arc::new(crate::metrics::Metrics::new()),
            }) as Arc<dyn mcp::SessionEgress>)
        }) as mcp::EgressFactory
    });
    runtime.block_on(mcp::run_stdio(config, server, egress))?;
    Ok(ExitCode::SUCCESS)
}
