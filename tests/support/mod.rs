//! Helpers shared by the integration tests (and, through `#[path]`, by the benchmark programs in examples/).

pub mod cli;
pub mod guests;
pub mod libvirt;
pub mod plan_gen;
pub mod plans;
pub mod sysfs;

#[allow(unused_imports)] // each test binary uses a different part
pub use cli::{Kup, Run};

/// The lines of a file a test's steps append to; none while the file does not exist.
#[allow(dead_code)] // each test binary uses a different part
pub fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs a helper program the test needs (mkfs, mount, …) and fails the test with its stderr if it fails.
#[allow(dead_code)] // each test binary uses a different part
pub fn run_ok(argv: &[&str]) {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
