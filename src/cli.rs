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
pub enum Command {
    /// Kernel boot phases and time to init, from a kernel log or the running kernel's.
    BootTime(crate::boot::BootTimeArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::BootTime(args) => crate::boot::command::run(&args),
    }
}
