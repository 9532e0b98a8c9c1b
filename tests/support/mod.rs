//! Helpers shared by the integration tests (and, through `#[path]`, by the benchmark programs in examples/).

pub mod cli;
pub mod guests;
pub mod libvirt;
pub mod plan_gen;
pub mod plans;
pub mod sysfs;

#[allow(unused_imports)] // each test binary uses a different part
pub use cli::{Kup, Run};
