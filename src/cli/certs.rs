//! `portcullis certs init`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::Failure;
use crate::server::certs::{self, InitOptions};

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a local CA and a server certificate (and client certificates for mutual TLS).
    /// Existing files are kept unless --force is given.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Names the server certificate is valid for (DNS names or IP addresses).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        hosts: Vec<String>,
        /// Also issue a client certificate for this agent name (repeatable).
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Regenerate everything, including the CA.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: CertsCommand) -> Result<ExitCode, Failure> {
    match cmd {
        CertsCommand::Init {
            dir,
            hosts,
            clients,
            force,
        } => {
            let report = certs::init(&InitOptions {
                dir,
                hosts,
                clients,
                force,
            })?;
            for p in &report.written {
                println!("wrote {}", p.display());
            }
            for p in &report.kept {
                println!("kept {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
