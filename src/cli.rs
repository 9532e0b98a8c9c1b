//! Command-line interface: clap definitions mirroring the command line, dispatched to the library.
//!
//! Conventions: data on stdout, diagnostics and progress on stderr; `--format json` wherever a command reports
//! something; exit codes from [`crate::exit`].

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "kup",
    version,
    about = "Declarative live kernel updates for virtualisation hosts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {}

// `expect`, not `allow`: the first subcommand makes `Command` inhabited, and this attribute must then go.
#[expect(
    unreachable_code,
    reason = "`Command` has no variants yet, so `Cli` cannot be constructed"
)]
pub fn main() -> ExitCode {
    match Cli::parse().command {}
}
