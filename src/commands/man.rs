//! `kup man --out DIR`: man pages (section 1) for kup and each of its subcommands, generated from the clap
//! definitions. docs/man/ holds them as checked in (`tests/man.rs` fails when they are stale); packagers and
//! operators without the source tree can write them with the binary they have.

use super::{CommandError, CommandResult};
use std::path::Path;

/// Every page as `(file name, roff text)`: `kup.1`, `kup-plan.1`, `kup-plan-validate.1`, … in command order.
pub(crate) fn render(command: clap::Command) -> Result<Vec<(String, Vec<u8>)>, CommandError> {
    // `help` is clap's own subcommand, not kup's: no page for it, as clap_mangen's own generate_to does.
    let mut command = command.disable_help_subcommand(true);
    // Building fills in the display names (`kup-plan-validate`) that name the pages and their SEE ALSO lines.
    command.build();
    let mut pages = Vec::new();
    add(&command, &mut pages)?;
    Ok(pages)
}

fn add(command: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<(), CommandError> {
    // The version goes in the footer of every page, not only kup.1: clap gives subcommands none of their own.
    let man = clap_mangen::Man::new(command.clone())
        .source(format!("kup {}", env!("CARGO_PKG_VERSION")))
        .manual("kup manual");
    let mut text = Vec::new();
    man.render(&mut text)
        .map_err(|e| CommandError::Usage(format!("cannot render {}: {e}", man.get_filename())))?;
    pages.push((man.get_filename(), ascii_roff(&text)));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        add(sub, pages)?;
    }
    Ok(())
}

/// Non-ASCII characters of the help texts (`…`, `—`) as roff's `\[uXXXX]` escapes: groff reads its input as
/// Latin-1 unless told otherwise, and `man` does not always tell it.
fn ascii_roff(text: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    for c in String::from_utf8_lossy(text).chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out.into_bytes()
}

/// `kup man --out DIR`: writes every page into `DIR` (created if missing), each atomically, and lists them.
pub(crate) fn run(out: &Path, command: clap::Command) -> CommandResult {
    let pages = render(command)?;
    crate::host::files::create_dir_all(out).map_err(|e| CommandError::Usage(e.to_string()))?;
    let mut listing = String::new();
    for (name, text) in &pages {
        let path = out.join(name);
        crate::host::files::write_readable(&path, text)
            .map_err(|e| CommandError::Usage(e.to_string()))?;
        listing.push_str(&format!("{}\n", path.display()));
    }
    super::write_stdout(&listing)
}
