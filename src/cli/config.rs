//! `portcullis config check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{Failure, load_config, policy};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration and its policy set without starting anything.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn run(cmd: ConfigCommand) -> Result<ExitCode, Failure> {
    match cmd {
        ConfigCommand::Check { config } => {
            let config = load_config(config.as_deref())?;
            let set = policy::load_set(&config, None)?;
            println!("{}: ok", config.describe());
            println!(
                "policy: {} ({:?}), {}",
                policy::describe_origin(&set),
                set.mode(),
                set.digest()
            );
            println!("workspace roots: {:?}", config.workspace.roots);
            println!("audit: {}", config.audit.path.display());
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            println!(
                "gateway: {scheme}://{}, admin: {scheme}://{}{}",
                config.server.listen,
                config.server.admin_listen,
                match &config.tls {
                    Some(t) if t.require_client_cert => ", client certificates required",
                    Some(t) if t.client_ca.is_some() => ", client certificates accepted",
                    _ => "",
                }
            );
            println!(
                "agents: {}{}, admins: {}, limits: {}, budgets: {}",
                config.identity.agents.len(),
                match &config.identity.anonymous {
                    Some(a) => format!(" (+ anonymous as {:?})", a.id),
                    None => String::new(),
                },
                config.identity.admins.len(),
                config.limits.len(),
                config.budgets.len()
            );
            match config.egress.listen {
                Some(a) => println!(
                    "egress: http://{a}{}",
                    match &config.egress.intercept {
                        Some(i) => format!(", intercepting {}", i.hosts.join(", ")),
                        None => String::new(),
                    }
                ),
                None => println!("egress: off"),
            }
            if !config.run.profiles.is_empty() {
                let names: Vec<&str> = config.run.profiles.keys().map(String::as_str).collect();
                println!("run profiles: {}", names.join(", "));
            }
            println!("mcp pins: {}", config.mcp.pins.display());
            for s in &config.mcp.servers {
                let how = match &s.url {
                    Some(u) => format!("upstream {u}"),
                    None => format!("command {:?}", s.command),
                };
                println!(
                    "mcp server {:?}: {how}, /mcp/{}{}",
                    s.name,
                    s.name,
                    s.preset
                        .as_deref()
                        .map(|p| format!(", preset {p}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
