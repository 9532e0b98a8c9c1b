//! The only module with side effects on the host: syscalls, processes, sockets and sysfs. Everything else in kup is
//! data and decisions about data, so that a dry run and code review see exactly what this module will be asked to do.

pub mod kexec;
