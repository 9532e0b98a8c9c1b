//! Command-line interface: clap definitions mirroring the command line, dispatched to [`crate::commands`].
//!
//! Conventions: data on stdout, diagnostics and progress on stderr; `--format json` wherever a command reports
//! something; exit codes from [`crate::exit`] (clap's own usage errors also exit 2).

use crate::commands;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
    /// Work with plans: validate them, show their step graph, dry-run them.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Print the JSON Schema of the plan format.
    Schema,
    /// Kernel boot phases and time to init, from a kernel log or the running kernel's.
    BootTime(crate::boot::BootTimeArgs),
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Check plans offline and report every problem with its file, line and a hint.
    Validate {
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: commands::validate::Format,
        /// Plan files, or directories searched recursively for `*.toml`.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Show a plan's steps, their order, what runs in parallel and the downtime estimate.
    Graph {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: commands::graph::Format,
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
    },
    /// Print every action a plan would take (dry run only: applying for real is not implemented yet).
    Apply {
        /// Print the actions instead of performing them. Required: kup cannot apply a plan yet.
        #[arg(long, required = true)]
        dry_run: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: commands::apply::Format,
        /// The running kernel's command line, which a plan with `inherit = true` starts from.
        #[arg(long, value_name = "FILE", default_value = "/proc/cmdline")]
        current_cmdline: PathBuf,
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan(PlanCommand::Validate { format, paths }) => {
            commands::validate::run(&paths, format)
        }
        Command::Plan(PlanCommand::Graph { format, plan }) => commands::graph::run(&plan, format),
        Command::Plan(PlanCommand::Apply {
            dry_run: _,
            format,
            current_cmdline,
            plan,
        }) => commands::apply::run(&plan, format, &current_cmdline),
        Command::Schema => commands::schema::run(),
        Command::BootTime(args) => crate::boot::command::run(&args),
    }
}
