//! The command line: one file per subcommand. `anyhow` is used here and nowhere below.
//!
//! Exit codes: 0 success, 1 a check failed (`policy test`, `audit verify`), 2 bad input,
//! configuration or usage.

mod approvals;
mod audit;
mod certs;
mod config;
mod mcp;
mod policy;
mod run;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// portcullis: a security proxy that gates autonomous agents.
#[derive(Parser, Debug)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// Log level filter (e.g. `info`, `portcullis=debug`); logs go to stderr.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway: every listener in the configuration.
    Serve(serve::ServeArgs),
    /// Wrap a stdio MCP server: relay JSON-RPC between the agent's client and the server,
    /// deciding every tool call, result, listing and server request.
    Mcp(mcp::McpArgs),
    /// Run a program (an agent) in a sandbox whose only ways out are the egress proxy and the
    /// model gateway, with Landlock file-system roots from a profile.
    Run(run::RunArgs),
    /// List, approve and deny parked actions (talks to the admin API).
    Approvals(approvals::ApprovalsArgs),
    /// Create development certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Evaluate and test policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Verify, query and replay audit logs.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Check configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure {
            code: 2,
            error: e.into(),
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(&cli.log, cli.log_json);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Mcp(args) => mcp::run(args),
        Command::Run(args) => run::run(args),
        Command::Approvals(args) => approvals::run(args),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Config(cmd) => config::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("portcullis: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialization (tests calling run twice) is harmless; ignore it.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Load the configuration the way every command does: `--config`, else `portcullis.toml` in
/// the working directory, else built-in defaults.
fn load_config(explicit: Option<&Path>) -> Result<Config, Failure> {
    let cwd = std::env::current_dir()?;
    let config = Config::discover(explicit, &cwd)?;
    tracing::info!(config = %config.describe(), "configuration loaded");
    Ok(config)
}

/// `--policies DIR` wins over the configuration's `policy.dir`.
fn policy_dir(config: &Config, explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| config.policy.dir.clone())
}
