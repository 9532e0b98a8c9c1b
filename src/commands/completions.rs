//! `kup completions SHELL`: the shell's completion script for kup, generated from the clap definitions so that it
//! can never fall behind the command line.

use clap::ValueEnum;

/// The shells kup prints completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    /// Bash (source it, or install it as `/usr/share/bash-completion/completions/kup`).
    Bash,
    /// Zsh (install it as `_kup` in a directory of `$fpath`).
    Zsh,
    /// Fish (install it as `~/.config/fish/completions/kup.fish`).
    Fish,
}

/// The completion script for `shell`.
pub(crate) fn render(shell: Shell, mut command: clap::Command) -> String {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut command, "kup", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `kup completions SHELL`.
pub(crate) fn run(shell: Shell, command: clap::Command) -> super::CommandResult {
    super::write_stdout(&render(shell, command))
}
