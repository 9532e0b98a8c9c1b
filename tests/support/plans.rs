//! Plans as the engine sees them, for the tests and benchmarks that perform compiled steps themselves.

#![allow(dead_code)] // each test binary uses a different part

use kup::graph::StepGraph;
use kup::graph::{self, CompiledStep, Program};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A test's own directory for a plan and what it names: private (0700), as kup wants the place of its journal.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// With `vmlinuz` holding `kernel`, for the plan's `[kernel] image`.
    pub fn with_kernel(kernel: &[u8]) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.path().join("vmlinuz"), kernel).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes the plan `text` to `plan.toml`, mode 0600 (kup refuses a plan others may write), and returns its path.
    pub fn write_plan(&self, text: &str) -> PathBuf {
        let plan = self.path("plan.toml");
        std::fs::write(&plan, text).unwrap();
        std::fs::set_permissions(&plan, std::fs::Permissions::from_mode(0o600)).unwrap();
        plan
    }
}

/// The plan in `text` compiled as `kup plan apply` compiles it on a host booted with `console=ttyS0`; a plan that
/// does not load is a panic with its diagnostics and its text.
pub fn program(text: &str) -> Program {
    let loaded = kup::check::check("plan.toml", text.as_bytes());
    let plan = loaded
        .plan
        .unwrap_or_else(|| panic!("{}\n{text}", loaded.report.render(false, 120)));
    let graph = StepGraph::build(&plan).unwrap();
    graph::compile(&plan, &graph, "console=ttyS0")
}

/// The compiled step `id`, or a panic naming it.
pub fn step<'a>(program: &'a Program, id: &str) -> &'a CompiledStep {
    program
        .steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no step {id}"))
}
