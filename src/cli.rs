//! Command-line interface: clap definitions mirroring the command line, dispatched to [`crate::commands`].
//!
//! Conventions: data on stdout, diagnostics and progress on stderr; `--format json` wherever a command reports
//! something; exit codes from `crate::exit` (clap's own usage errors also exit 2).

use crate::{commands, exit};
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "kup",
    version,
    about = "Declarative live kernel updates for virtualisation hosts",
    after_long_help = "Exit codes: 0 success, 1 invalid plan, 2 usage or I/O error, 3 refused, 4 locked, 5 rolled \
                       back, 6 needs an operator (docs/exit-codes.md). `kup plan explain CODE` explains a \
                       diagnostic code. Documentation: docs/ in the source tree."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Work with plans: validate them, show their step graph, dry-run them.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Print the JSON Schema of the plan format.
    Schema,
    /// Kernel boot phases and time to init, from a kernel log or the running kernel's.
    BootTime(commands::boot_time::BootTimeArgs),
    /// Print the shell completion script for kup (see the README for where to install it).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: commands::completions::Shell,
    },
    /// Write kup's man pages (section 1: kup.1 and one page per subcommand) into a directory.
    Man {
        /// Where to write the pages (created if missing); existing pages are replaced.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PlanCommand {
    /// Write a commented starter plan read off this host (read-only): the newest kernel in /boot, the running
    /// QEMU guests and libvirt domains, vfio-pci devices, SPDK/DPDK services; what it cannot tell is a `# TODO`.
    Init(commands::init::InitArgs),
    /// Check plans offline and report every problem with its file, line and a hint.
    Validate {
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: commands::validate::Format,
        /// Check this many files at once [default: one per core]. The output is the same whatever the number.
        #[arg(long, short = 'j', value_name = "N")]
        jobs: Option<std::num::NonZeroUsize>,
        /// Journal roots of earlier applies (as `plan status --journal` takes them; repeatable): steps they
        /// measured are estimated by the median of their last 5 runs instead of the cost model.
        #[arg(long, value_name = "DIR")]
        history: Vec<PathBuf>,
        /// Plan files, or directories searched recursively for `*.toml`.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Show a plan's steps, their order, what runs in parallel and the downtime estimate.
    Graph {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: commands::graph::Format,
        /// Journal roots of earlier applies (as `plan status --journal` takes them; repeatable): steps they
        /// measured are estimated by the median of their last 5 runs instead of the cost model.
        #[arg(long, value_name = "DIR")]
        history: Vec<PathBuf>,
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
    },
    /// Apply a plan: pause and save the guests, kexec into the new kernel, restore them (`--dry-run` prints every
    /// action instead; `--rehearse` does everything but the kexec).
    Apply {
        /// Print every action instead of performing it; needs no root and changes nothing.
        #[arg(long, conflicts_with_all = ["yes", "rehearse", "no_kernel_load", "journal", "metrics_textfile"])]
        dry_run: bool,
        /// Do not ask for confirmation (required when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Run every step for real except the kexec, which becomes a no-op; the after-kexec steps then run on this
        /// kernel. Measures real downtime without rebooting.
        #[arg(long)]
        rehearse: bool,
        /// With --rehearse: do not load (and unload) the kernel.
        #[arg(long, requires = "rehearse")]
        no_kernel_load: bool,
        /// Journal root (default: the plan's `policy.journal`).
        #[arg(long, value_name = "DIR")]
        journal: Option<PathBuf>,
        /// Write the outcome as node_exporter textfile metrics to this file, atomically, when the apply ends (and
        /// on its resume after the kexec); overrides `policy.metrics`.
        #[arg(long, value_name = "PATH")]
        metrics_textfile: Option<PathBuf>,
        /// Output format of --dry-run.
        #[arg(long, value_enum, default_value = "human")]
        format: commands::dry_run::Format,
        /// The running kernel's command line, which a plan with `inherit = true` starts from (--dry-run).
        #[arg(long, value_name = "FILE", default_value = crate::host::machine::PROC_CMDLINE)]
        current_cmdline: PathBuf,
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
    },
    /// Finish an apply from its journal: after the kexec (run by kup-resume.service), after a crash, or to retry.
    Resume(commands::resume::ResumeArgs),
    /// Roll back an apply that died before the kexec: resume the guests it paused, restart the apps it stopped,
    /// unload the kernel (refused once the kexec record is written: then `resume` finishes it).
    Abort {
        /// Journal root.
        #[arg(long, value_name = "DIR", default_value = crate::plan::DEFAULT_JOURNAL)]
        journal: PathBuf,
        /// Write the outcome as node_exporter textfile metrics to this file, atomically (default: the path the apply
        /// was given, else `policy.metrics`).
        #[arg(long, value_name = "PATH")]
        metrics_textfile: Option<PathBuf>,
    },
    /// Explain a diagnostic code (`kup::plan::…`, or without the prefix): what it means, why it matters, how to
    /// fix it and a plan that triggers it.
    Explain {
        /// The code, as `kup plan validate` shows it (`kup::plan::volatile-path`) or short (`volatile-path`).
        #[arg(value_name = "CODE", required_unless_present = "list")]
        code: Option<String>,
        /// List every code with its severity and a one-line summary instead.
        #[arg(long, conflicts_with = "code")]
        list: bool,
    },
    /// Report the last (or pending) apply: steps, timings, VM downtime, the kexec gap and the new kernel's boot.
    Status {
        /// Journal root.
        #[arg(long, value_name = "DIR", default_value = crate::plan::DEFAULT_JOURNAL)]
        journal: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: StatusFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StatusFormat {
    Human,
    Json,
}

/// Parses the command line, runs the command, and prints its error (once) before exiting with its code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(PlanCommand::Init(args)) => commands::init::run(&args),
        Command::Plan(PlanCommand::Validate {
            format,
            jobs,
            history,
            paths,
        }) => commands::validate::run(&paths, format, jobs, &history),
        Command::Plan(PlanCommand::Graph {
            format,
            history,
            plan,
        }) => commands::graph::run(&plan, format, &history),
        Command::Plan(PlanCommand::Apply {
            dry_run: true,
            format,
            current_cmdline,
            plan,
            ..
        }) => commands::dry_run::run(&plan, format, &current_cmdline),
        Command::Plan(PlanCommand::Apply {
            yes,
            rehearse,
            no_kernel_load,
            journal,
            metrics_textfile,
            plan,
            ..
        }) => commands::apply::run(&commands::apply::ApplyArgs {
            plan: &plan,
            yes,
            rehearse,
            no_kernel_load,
            journal: journal.as_deref(),
            metrics_textfile: metrics_textfile.as_deref(),
        }),
        Command::Plan(PlanCommand::Resume(args)) => commands::resume::run(&args),
        Command::Plan(PlanCommand::Abort {
            journal,
            metrics_textfile,
        }) => commands::abort::run(&journal, metrics_textfile.as_deref()),
        Command::Plan(PlanCommand::Status { journal, format }) => {
            commands::status::run(&journal, format == StatusFormat::Json)
        }
        Command::Plan(PlanCommand::Explain { code, list }) => {
            commands::explain::run(code.as_deref(), list)
        }
        Command::Schema => commands::schema::run(),
        Command::Completions { shell } => commands::completions::run(shell, Cli::command()),
        Command::Man { out } => commands::man::run(&out, Cli::command()),
        Command::BootTime(args) => commands::boot_time::run(&args),
    };
    match result {
        Ok(()) => exit::code(exit::SUCCESS),
        Err(e) => {
            e.report();
            exit::code(e.exit_code())
        }
    }
}
