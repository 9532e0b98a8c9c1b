//! kup: declarative live kernel updates for virtualisation hosts.
//!
//! The pure modules (`plan`) turn TOML text into a checked plan and diagnostics; they touch nothing on the host, so
//! `kup plan validate` runs anywhere, including in code review.

pub mod boot;
pub mod cli;
pub mod commands;
pub mod exit;
pub mod graph;
pub mod plan;
