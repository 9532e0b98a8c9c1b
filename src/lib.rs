//! kup: declarative live kernel updates for virtualisation hosts.
//!
//! The pure modules (`plan`, `cmdline`, `kernel_image`, `boot`'s analysis) turn TOML text, command lines, kernel
//! headers and kernel logs into checked data and diagnostics; they touch nothing on the host, so
//! `kup plan validate` runs anywhere, including in code review. `host` is the only module with side effects.

// Unsafe code is confined to `host::kexec`, which opts back in for the kexec_file_load syscall alone.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod boot;
pub mod check;
pub mod cli;
pub(crate) mod cmdline;
pub mod commands;
pub mod exec;
pub(crate) mod exit;
pub mod graph;
pub mod host;
pub(crate) mod hostglob;
pub mod initrd;
pub mod kernel_image;
pub mod kmod;
pub mod kparams;
pub mod plan;
