//! Generates a directory of varied plans for benchmarking `kup plan validate` (see docs/benchmarks.md).
//!
//! ```text
//! cargo run --release --example gen_plans -- DIR [COUNT] [SEED]
//! ```
//!
//! Writes `DIR/plan-00000.toml` … and `DIR/manifest.tsv` (`file<TAB>expected code or "valid"`). About one plan in
//! ten carries one deliberate error, drawn from `plan_gen::FAULTS`; the rest must validate with no error (some carry a
//! deliberate warning). The output depends only on COUNT and SEED (default 1), so runs are comparable.

use std::path::PathBuf;

#[path = "../tests/support/plan_gen.rs"]
mod plan_gen;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: gen_plans DIR [COUNT] [SEED]");
        std::process::exit(2);
    };
    let count: usize = args
        .get(1)
        .map_or(10_000, |c| c.parse().expect("COUNT is a number"));
    let seed: u64 = args
        .get(2)
        .map_or(1, |s| s.parse().expect("SEED is a number"));
    let written = plan_gen::write_plans(&dir, count, seed).expect("write the plans");
    eprintln!(
        "{count} plans in {}: {} meant to be valid, {} with one deliberate error",
        dir.display(),
        count - written.invalid,
        written.invalid
    );
}
