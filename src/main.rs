//! Thin entry point: parse the command line and hand it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "__sandbox-init")
    {
        std::process::exit(portcullis::sandbox::init_main());
    }
    portcullis::cli::run(portcullis::cli::Cli::parse())
}
