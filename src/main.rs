//! Thin entry point: parse the command line and hand it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    portcullis::cli::run(portcullis::cli::Cli::parse())
}
