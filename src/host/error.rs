//! The host's errors: typed by what failed, each worded so that an operator can act on it.

use super::kexec::KexecError;
use super::process::ProcessError;
use super::qmp::QmpError;
use crate::kernel_image::KernelImageError;

/// Why something the host was asked to do failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file system operation failed; `context` says which and on what.
    #[error("{context}: {source}")]
    Io {
        /// "cannot create /var/lib/kup/state/db", "state file /x".
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// A program did not run to a zero exit status.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A QMP exchange failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// A kexec syscall was refused; the message explains the likely cause and the fix.
    #[error("{}", .0.explain())]
    Kexec(#[from] KexecError),
    /// A kernel image or initrd could not be read, is no bzImage, or is not the pinned artifact.
    #[error("{}: {source}", .path.display())]
    KernelImage {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: KernelImageError,
    },
    /// The host is not as the plan needs it (a check found something else); the message says what was found,
    /// what was expected and, where kup knows it, the fix.
    #[error("{0}")]
    Check(String),
    /// A live patch could not be checked, loaded, settled or removed (boxed: its variants carry paths and lists).
    #[error(transparent)]
    Livepatch(Box<super::livepatch::LivepatchError>),
    /// A PCI device could not be bound to the plan's driver, or its IOMMU group is not usable by VFIO (boxed:
    /// its variants carry paths and lists).
    #[error(transparent)]
    Pci(Box<super::pci_bind::PciBindError>),
    /// Another user than root could change what kup runs or writes: the message names the path, its owner and
    /// mode.
    #[error(transparent)]
    Trust(Box<super::trust::TrustError>),
    /// Something did not happen in time.
    #[error("{0}")]
    Timeout(String),
}

impl From<super::trust::TrustError> for HostError {
    fn from(e: super::trust::TrustError) -> Self {
        Self::Trust(Box::new(e))
    }
}

impl HostError {
    /// An I/O error with its context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A check that found the host otherwise than planned.
    pub(crate) fn check(message: impl Into<String>) -> Self {
        Self::Check(message.into())
    }
}
