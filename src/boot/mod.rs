//! `kup boot-time`: how long the kernel took to boot and where the time went, read from its log.
//!
//! After a live update the operator needs to know what the new kernel's boot cost the VMs: this module turns a
//! kernel log in any common format into a `BootReport` (phases, headline figures, recommendations). The
//! analysis (`analyse`) is pure — bytes in, report out — so the executor can call it on a captured log and store
//! the result in its journal; only `live` and `command` touch the host.

mod markers;
pub mod parse;
mod phases;
pub mod report;
mod wallclock;
