//! Reading kernel images and initrds from disk: the setup header of a bzImage and the SHA-256 of a file. What the
//! bytes mean is [`crate::kernel_image`]'s (pure) business.

use crate::kernel_image::{KernelImage, KernelImageError, MAX_SETUP_LEN, Sha256Digest};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// An I/O error on `path` as the kernel-image checks report it: a missing file is told apart.
fn io_error(path: &Path, source: io::Error) -> KernelImageError {
    match source.kind() {
        io::ErrorKind::NotFound => KernelImageError::NotFound {
            path: path.to_owned(),
        },
        _ => KernelImageError::Io {
            path: path.to_owned(),
            source,
        },
    }
}

/// Reads the setup header of the bzImage at `path` (only the setup code, not the whole kernel).
pub fn read_image(path: &Path) -> Result<KernelImage, KernelImageError> {
    let io_error = |source| io_error(path, source);
    let file = File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    let mut prefix = Vec::new();
    file.take(MAX_SETUP_LEN as u64)
        .read_to_end(&mut prefix)
        .map_err(io_error)?;
    KernelImage::parse(&prefix, len)
}

/// The SHA-256 of the file at `path`, read in chunks (kernel images are tens of MB; initrds more).
pub fn sha256_file(path: &Path) -> Result<Sha256Digest, KernelImageError> {
    let io_error = |source| io_error(path, source);
    let mut file = File::open(path).map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(Sha256Digest::from_bytes(hasher.finalize().into()))
}

/// Checks the file at `path` against `expected` (hex, as in a plan's `sha256`); returns the digest when it matches.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<Sha256Digest, KernelImageError> {
    let expected: Sha256Digest = expected.parse()?;
    let actual = sha256_file(path)?;
    if actual == expected {
        Ok(actual)
    } else {
        Err(KernelImageError::DigestMismatch {
            path: path.to_owned(),
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_files_and_mismatch_message() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let empty_digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_file(&empty).unwrap().to_string(), empty_digest);
        assert!(verify_sha256(&empty, empty_digest).is_ok());

        let abc = dir.path().join("abc");
        std::fs::write(&abc, b"abc").unwrap();
        let err = verify_sha256(&abc, empty_digest).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("expected {empty_digest}")),
            "{message}"
        );
        assert!(
            message.contains(
                "actual ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            ),
            "{message}"
        );

        let missing = dir.path().join("missing");
        assert!(matches!(
            sha256_file(&missing),
            Err(KernelImageError::NotFound { .. })
        ));
        assert!(matches!(
            read_image(&missing),
            Err(KernelImageError::NotFound { .. })
        ));
    }
}
