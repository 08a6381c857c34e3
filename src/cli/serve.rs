//! `portcullis serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{Failure, load_config};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> Result<ExitCode, Failure> {
    let config = load_config(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portcullis")
        .build()?;
    runtime.block_on(crate::server::serve(config))?;
    Ok(ExitCode::SUCCESS)
}
