//! `kup plan init [--kernel IMAGE] [--out FILE]`: a commented starter plan read off the live host (the kernel to
//! update to, the running QEMUs and libvirt domains, the vfio-pci devices and SPDK/DPDK-like services), so that an
//! operator edits a plan instead of writing one. Reading is `host::discover`'s, the text `render`'s; this file
//! checks the text as `kup plan validate` would and writes it.

mod render;

use super::{CommandError, CommandResult};
use crate::host::SysfsRoot;
use crate::host::discover::{self, Discover};
use std::path::{Path, PathBuf};

/// What `kup plan init` was asked.
pub(crate) struct InitArgs<'a> {
    pub(crate) kernel: Option<&'a Path>,
    pub(crate) out: Option<&'a Path>,
    pub(crate) force: bool,
}

/// `kup plan init`: the plan on stdout, or in `--out FILE` (0600, an existing file only with `--force`).
pub(crate) fn run(args: &InitArgs<'_>) -> CommandResult {
    let facts = discover::discover(
        &SysfsRoot::default(),
        &Discover {
            kernel: args.kernel.map(PathBuf::from),
            libvirt: true,
        },
    )
    .map_err(|e| CommandError::Usage(format!("kup plan init: {e}")))?;
    let text = render::render(&facts);
    self_check(&text)?;
    match args.out {
        None => super::write_stdout(&text),
        Some(path) => {
            crate::host::files::write_private(path, text.as_bytes(), args.force)
                .map_err(|e| CommandError::Usage(e.to_string()))?;
            let mut stderr = format!("wrote {}", path.display());
            let todos = text.lines().filter(|l| l.contains("# TODO")).count();
            if todos > 0 {
                stderr.push_str(&format!(" ({todos} TODO to resolve)"));
            }
            eprintln!("{stderr}");
            Ok(())
        }
    }
}

/// The plan must pass `kup plan validate`: a plan init cannot write is a bug in kup, said as such, with the
/// findings, instead of a file the operator would find broken.
fn self_check(text: &str) -> CommandResult {
    let checked = crate::check::check("kup plan init", text.as_bytes());
    if checked.report.has_errors() {
        return Err(CommandError::Usage(format!(
            "the plan kup plan init wrote does not validate (a bug in kup; please report it):\n{}\n{text}",
            checked.report.render(false, super::width())
        )));
    }
    Ok(())
}
