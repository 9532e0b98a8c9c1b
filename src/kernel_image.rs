//! Reads what an x86 bzImage says about itself, so that kup can check the kernel a plan names *before* it pauses a
//! single VM: that the file is a complete bzImage, which release it will boot (what `uname -r` will print, compared
//! with the plan's `version`), and that its bytes are the pinned artifact (`sha256`).
//!
//! The layout is the setup header of the x86 boot protocol (Documentation/arch/x86/boot.rst). Pure: reading the
//! file is `host::kernel_file`'s job.

use sha2::Digest;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

/// `setup_sects`, 1 byte: 512-byte sectors of real-mode setup code after the boot sector (0 means 4).
const SETUP_SECTS: usize = 0x1F1;
/// `syssize`, 4 bytes (2 before protocol 2.04): the protected-mode code that follows, in 16-byte paragraphs.
const SYSSIZE: usize = 0x1F4;
/// `boot_flag`, 2 bytes: 0xAA55, the PC boot-sector signature.
const BOOT_FLAG: usize = 0x1FE;
const BOOT_FLAG_MAGIC: u16 = 0xAA55;
/// `header`, 4 bytes: "HdrS", present since boot protocol 2.00 (every bzImage).
const HEADER: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// `version`, 2 bytes: boot protocol version, major in the high byte.
const PROTOCOL: usize = 0x206;
/// `kernel_version`, 2 bytes: offset of the NUL-terminated version string, less 0x200 (0 when absent).
const KERNEL_VERSION: usize = 0x20E;
/// `cmdline_size`, 4 bytes, protocol 2.06+: the longest command line the kernel accepts, without its NUL.
const CMDLINE_SIZE: usize = 0x238;
/// The setup header's fields this module needs all lie before this offset.
const HEADER_END: usize = KERNEL_VERSION + 2;
/// The most setup code a bzImage can declare (`setup_sects` is one byte), plus the boot sector.
pub(crate) const MAX_SETUP_LEN: usize = (255 + 1) * 512;

/// A boot protocol version such as 2.15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootProtocol {
    /// Major version (2 for every bzImage).
    pub major: u8,
    /// Minor version: what features the header has (2.06 adds `cmdline_size`).
    pub minor: u8,
}

impl fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.major, self.minor)
    }
}

/// What a bzImage's setup header says about the kernel in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage {
    version: String,
    protocol: BootProtocol,
    cmdline_size: Option<u32>,
}

/// Why a file is not a usable bzImage, or not the expected one.
#[derive(Debug)]
pub enum KernelImageError {
    /// The file does not exist.
    NotFound {
        /// The image path.
        path: PathBuf,
    },
    /// The file could not be opened or read.
    Io {
        /// The image path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Shorter than the setup header itself.
    TooShort {
        /// File length in bytes.
        len: u64,
    },
    /// No 0xAA55 at 0x1FE: not a bootable x86 image at all.
    MissingBootFlag {
        /// The two bytes found at 0x1FE.
        found: u16,
        /// The file starts with the ELF magic: probably `vmlinux`, not the bzImage.
        elf: bool,
    },
    /// No "HdrS" at 0x202: not a bzImage (or a pre-2.00 zImage).
    MissingHeaderMagic {
        /// The four bytes found at 0x202.
        found: [u8; 4],
    },
    /// Shorter than the setup code and kernel that its own header declares: an interrupted copy or download.
    Truncated {
        /// File length in bytes.
        len: u64,
        /// Length the header declares, in bytes.
        expected: u64,
    },
    /// `kernel_version` is 0 or points at an empty string.
    NoVersionString,
    /// `kernel_version` points outside the setup code, where the boot protocol says the string lives.
    VersionOutOfRange {
        /// Where `kernel_version` points (file offset, bytes).
        offset: u64,
        /// End of the setup code (file offset, bytes).
        limit: u64,
    },
    /// No NUL between the version string's start and the end of the setup code.
    VersionNotTerminated {
        /// Where the version string starts (file offset, bytes).
        offset: u64,
    },
    /// The version string is not UTF-8 text.
    VersionNotText {
        /// Where it starts (file offset, bytes).
        offset: u64,
    },
    /// An expected digest that is not 64 hex digits.
    InvalidDigest {
        /// The digest as written.
        text: String,
    },
    /// The file's SHA-256 is not the pinned one: a different or damaged kernel.
    DigestMismatch {
        /// The image path.
        path: PathBuf,
        /// The pinned digest.
        expected: Sha256Digest,
        /// The file's digest.
        actual: Sha256Digest,
    },
}

impl fmt::Display for KernelImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use KernelImageError::*;
        match self {
            NotFound { path } => write!(f, "kernel image {} does not exist", path.display()),
            Io { path, source } => {
                write!(f, "cannot read kernel image {}: {source}", path.display())
            }
            TooShort { len } => write!(
                f,
                "not a bzImage: the file has {len} bytes, but an x86 setup header alone ends at {HEADER_END:#x} \
                 ({HEADER_END} bytes)"
            ),
            MissingBootFlag { found, elf } => {
                write!(
                    f,
                    "not a bzImage: expected the boot flag 0x{BOOT_FLAG_MAGIC:04X} at {BOOT_FLAG:#x}, found \
                     0x{found:04X}"
                )?;
                if *elf {
                    write!(
                        f,
                        " (this is an ELF file, e.g. an uncompressed vmlinux; use the bzImage, /boot/vmlinuz-*)"
                    )?;
                }
                Ok(())
            }
            MissingHeaderMagic { found } => write!(
                f,
                "not a bzImage: expected the setup header magic \"HdrS\" at {HEADER:#x}, found {}",
                show_bytes(found)
            ),
            Truncated { len, expected } => write!(
                f,
                "kernel image is truncated: its header declares {expected} bytes of setup and kernel code, but the \
                 file has only {len}"
            ),
            NoVersionString => write!(
                f,
                "kernel image has no version string (kernel_version at {KERNEL_VERSION:#x} is empty)"
            ),
            VersionOutOfRange { offset, limit } => write!(
                f,
                "kernel image is corrupt: its version string would start at {offset:#x}, beyond the setup code, which \
                 ends at {limit:#x}"
            ),
            VersionNotTerminated { offset } => write!(
                f,
                "kernel image is corrupt: the version string at {offset:#x} has no terminating NUL within the setup code"
            ),
            VersionNotText { offset } => {
                write!(
                    f,
                    "kernel image is corrupt: the version string at {offset:#x} is not UTF-8 text"
                )
            }
            InvalidDigest { text } => write!(
                f,
                "{text:?} is not a SHA-256 digest: expected 64 hexadecimal digits (as `sha256sum` prints)"
            ),
            DigestMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "kernel image {} is not the pinned artifact: sha256 expected {expected}, actual {actual}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KernelImageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KernelImageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl miette::Diagnostic for KernelImageError {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        use KernelImageError::*;
        let help = match self {
            NotFound { .. } => "check [kernel] image in the plan; install the kernel package first",
            Truncated { .. } | DigestMismatch { .. } => {
                "copy or install the kernel again; if the new file is the one you want, update [kernel] sha256"
            }
            TooShort { .. } | MissingBootFlag { .. } | MissingHeaderMagic { .. } => {
                "[kernel] image must be an x86 bzImage such as /boot/vmlinuz-<release>"
            }
            _ => return None,
        };
        Some(Box::new(help))
    }
}

/// Bytes as hex, with the ASCII reading when they are printable (`48 64 72 54 ("HdrT")`).
fn show_bytes(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hex = hex.join(" ");
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{hex} ({:?})", String::from_utf8_lossy(bytes))
    } else {
        hex
    }
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    let field = bytes.get(offset..offset + 2)?;
    Some(u16::from_le_bytes([field[0], field[1]]))
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset + 4)?;
    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

impl KernelImage {
    // Long by design: the setup header's fields in offset order, each checked.
    /// Parses a bzImage from its first bytes (at least its setup code, or all of a shorter file) and the length of
    /// the whole file, which the truncation check needs. Public for the fuzz targets (fuzz/): it is the function
    /// `host::kernel_file::read_image` runs on what it read.
    pub fn parse(prefix: &[u8], file_len: u64) -> Result<KernelImage, KernelImageError> {
        let too_short = || KernelImageError::TooShort { len: file_len };
        if prefix.len() < HEADER_END {
            return Err(too_short());
        }
        let boot_flag = u16_at(prefix, BOOT_FLAG).ok_or_else(too_short)?;
        if boot_flag != BOOT_FLAG_MAGIC {
            return Err(KernelImageError::MissingBootFlag {
                found: boot_flag,
                elf: prefix.starts_with(b"\x7fELF"),
            });
        }
        let magic = prefix.get(HEADER..HEADER + 4).ok_or_else(too_short)?;
        if magic != HEADER_MAGIC {
            let mut found = [0; 4];
            found.copy_from_slice(magic);
            return Err(KernelImageError::MissingHeaderMagic { found });
        }

        let raw_protocol = u16_at(prefix, PROTOCOL).ok_or_else(too_short)?;
        let [major, minor] = raw_protocol.to_be_bytes();
        let protocol = BootProtocol { major, minor };

        let setup_sects = match prefix[SETUP_SECTS] {
            0 => 4,
            n => u64::from(n),
        };
        let setup_len = (setup_sects + 1) * 512;
        // syssize grew from 16 to 32 bits in protocol 2.04; the upper half was unused before.
        let syssize = if protocol >= (BootProtocol { major: 2, minor: 4 }) {
            u32_at(prefix, SYSSIZE).ok_or_else(too_short)?
        } else {
            u32::from(u16_at(prefix, SYSSIZE).ok_or_else(too_short)?)
        };
        let expected = setup_len + u64::from(syssize) * 16;
        if file_len < expected || (prefix.len() as u64) < setup_len.min(file_len) {
            return Err(KernelImageError::Truncated {
                len: file_len.min(prefix.len() as u64),
                expected,
            });
        }

        let pointer = u16_at(prefix, KERNEL_VERSION).ok_or_else(too_short)?;
        if pointer == 0 {
            return Err(KernelImageError::NoVersionString);
        }
        let offset = u64::from(pointer) + 0x200;
        if offset >= setup_len {
            return Err(KernelImageError::VersionOutOfRange {
                offset,
                limit: setup_len,
            });
        }
        // Both bounds are below setup_len, which the prefix covers (checked above), so the slice exists.
        let area = prefix.get(offset as usize..setup_len as usize).ok_or(
            KernelImageError::VersionOutOfRange {
                offset,
                limit: setup_len,
            },
        )?;
        let nul = area
            .iter()
            .position(|&b| b == 0)
            .ok_or(KernelImageError::VersionNotTerminated { offset })?;
        let version = std::str::from_utf8(&area[..nul])
            .map_err(|_| KernelImageError::VersionNotText { offset })?
            .trim()
            .to_owned();
        if version.is_empty() {
            return Err(KernelImageError::NoVersionString);
        }

        let cmdline_size = if protocol >= (BootProtocol { major: 2, minor: 6 }) {
            u32_at(prefix, CMDLINE_SIZE)
        } else {
            None
        };
        Ok(KernelImage {
            version,
            protocol,
            cmdline_size,
        })
    }

    /// The whole version string, e.g. `6.1.0-27-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP ...`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The release, the version string's first word: what `uname -r` prints once this kernel runs.
    pub fn release(&self) -> &str {
        self.version.split_whitespace().next().unwrap_or_default()
    }

    /// The boot protocol version the header declares.
    pub fn protocol(&self) -> BootProtocol {
        self.protocol
    }

    /// The longest command line this kernel accepts, NUL excluded (`cmdline_size`; absent before protocol 2.06).
    pub fn cmdline_size(&self) -> Option<u32> {
        self.cmdline_size
    }
}

/// A SHA-256 digest; shown and parsed as 64 hex digits, the way `sha256sum` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of bytes already in memory (a plan file); files are hashed streaming by
    /// `host::kernel_file::sha256_file`.
    pub(crate) fn of(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// A digest computed elsewhere.
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl FromStr for Sha256Digest {
    type Err = KernelImageError;

    /// 64 hex digits, either case, surrounding whitespace ignored.
    fn from_str(text: &str) -> Result<Sha256Digest, KernelImageError> {
        let invalid = || KernelImageError::InvalidDigest {
            text: text.to_owned(),
        };
        let hex = text.trim().as_bytes();
        if hex.len() != 64 {
            return Err(invalid());
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16).ok_or_else(invalid);
            // Two hex digits make at most 0xff, so the narrowing cannot lose anything.
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Sha256Digest(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VERSION: &str = "6.1.0-27-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian \
                           6.1.115-1 (2024-11-01)";

    /// A minimal well-formed bzImage: 4 setup sectors, protocol 2.15, `syssize` paragraphs of kernel.
    fn image(syssize: u32) -> Vec<u8> {
        let setup_sects = 4u8;
        let setup_len = (usize::from(setup_sects) + 1) * 512;
        let mut bytes = vec![0u8; setup_len + syssize as usize * 16];
        bytes[SETUP_SECTS] = setup_sects;
        bytes[SYSSIZE..SYSSIZE + 4].copy_from_slice(&syssize.to_le_bytes());
        bytes[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
        bytes[HEADER..HEADER + 4].copy_from_slice(b"HdrS");
        bytes[PROTOCOL..PROTOCOL + 2].copy_from_slice(&0x020Fu16.to_le_bytes());
        let version_at = 0x400usize;
        bytes[KERNEL_VERSION..KERNEL_VERSION + 2]
            .copy_from_slice(&((version_at - 0x200) as u16).to_le_bytes());
        bytes[CMDLINE_SIZE..CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        bytes[version_at..version_at + VERSION.len()].copy_from_slice(VERSION.as_bytes());
        bytes
    }

    fn parse(bytes: &[u8]) -> Result<KernelImage, KernelImageError> {
        KernelImage::parse(bytes, bytes.len() as u64)
    }

    #[test]
    fn reads_version_release_protocol_and_cmdline_size() {
        let image = parse(&image(100)).unwrap();
        assert_eq!(image.version(), VERSION);
        assert_eq!(image.release(), "6.1.0-27-cloud-amd64");
        assert_eq!(
            image.protocol(),
            BootProtocol {
                major: 2,
                minor: 15
            }
        );
        assert_eq!(image.protocol().to_string(), "2.15");
        assert_eq!(image.cmdline_size(), Some(2047));
    }

    #[test]
    fn trailing_bytes_after_the_kernel_are_fine() {
        // Signed images carry their signature after the declared kernel.
        let mut bytes = image(10);
        bytes.extend_from_slice(&[0xAB; 1472]);
        assert!(parse(&bytes).is_ok());
    }

    #[test]
    fn too_short_for_a_header() {
        let bytes = image(10);
        let err = parse(&bytes[..0x100]).unwrap_err();
        assert!(
            matches!(err, KernelImageError::TooShort { len: 0x100 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("256 bytes"), "{err}");
    }

    #[test]
    fn truncated_anywhere_after_the_header() {
        let bytes = image(100);
        for cut in [HEADER_END, 0x400, bytes.len() - 1] {
            let err = parse(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, KernelImageError::Truncated { len, expected } if len == cut as u64 && expected == bytes.len() as u64),
                "{cut}: {err:?}"
            );
        }
    }

    #[test]
    fn boot_flag_missing_names_what_was_found() {
        let mut bytes = image(10);
        bytes[BOOT_FLAG] = 0x34;
        bytes[BOOT_FLAG + 1] = 0x12;
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                KernelImageError::MissingBootFlag {
                    found: 0x1234,
                    elf: false
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("found 0x1234"), "{err}");
    }

    #[test]
    fn elf_vmlinux_is_recognised() {
        let mut bytes = vec![0u8; 0x1000];
        bytes[..4].copy_from_slice(b"\x7fELF");
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(err, KernelImageError::MissingBootFlag { elf: true, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("uncompressed vmlinux"), "{err}");
    }

    #[test]
    fn header_magic_missing_shows_the_bytes() {
        let mut bytes = image(10);
        bytes[HEADER + 3] = b'T';
        let err = parse(&bytes).unwrap_err();
        assert!(
            matches!(err, KernelImageError::MissingHeaderMagic { found } if &found == b"HdrT"),
            "{err:?}"
        );
        assert!(err.to_string().contains("48 64 72 54 (\"HdrT\")"), "{err}");
    }

    /// `image(syssize)` with its `kernel_version` field set to `pointer`, parsed.
    fn with_version_pointer(syssize: u32, pointer: u16) -> Result<KernelImage, KernelImageError> {
        let mut bytes = image(syssize);
        bytes[KERNEL_VERSION..KERNEL_VERSION + 2].copy_from_slice(&pointer.to_le_bytes());
        parse(&bytes)
    }

    #[test]
    fn version_pointer_zero_means_no_version() {
        assert!(matches!(
            with_version_pointer(10, 0),
            Err(KernelImageError::NoVersionString)
        ));
    }

    /// Where `with_version_pointer` says the version string would start, and where the setup code ends.
    fn out_of_range(syssize: u32, pointer: u16) -> (u64, u64) {
        match with_version_pointer(syssize, pointer) {
            Err(KernelImageError::VersionOutOfRange { offset, limit }) => (offset, limit),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_pointer_beyond_the_setup_code() {
        // 0x0A00 + 0x200 is exactly the end of 4 setup sectors plus the boot sector.
        assert_eq!(out_of_range(10, 0x0A00), (0xC00, 0xA00));
    }

    #[test]
    fn version_pointer_beyond_end_of_a_small_file() {
        assert_eq!(out_of_range(0, 0xFFFF).0, 0x101FF);
    }

    #[test]
    fn unterminated_or_binary_version_string() {
        let mut bytes = image(0);
        let len = bytes.len();
        bytes[0x400..len].fill(b'x');
        assert!(matches!(
            parse(&bytes),
            Err(KernelImageError::VersionNotTerminated { offset: 0x400 })
        ));
        bytes[0x400] = 0xFF;
        bytes[0x401] = 0;
        assert!(matches!(
            parse(&bytes),
            Err(KernelImageError::VersionNotText { offset: 0x400 })
        ));
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let mut bytes = image(1);
        bytes[SETUP_SECTS] = 0;
        assert_eq!(parse(&bytes).unwrap().release(), "6.1.0-27-cloud-amd64");
    }

    #[test]
    fn digest_parses_and_prints_as_sha256sum_does() {
        let hex = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let digest: Sha256Digest = hex.parse().unwrap();
        assert_eq!(digest.to_string(), hex.to_lowercase());
        for bad in ["", "e3b0", &hex.replace('E', "g"), &format!("{hex}00")] {
            assert!(
                matches!(
                    bad.parse::<Sha256Digest>(),
                    Err(KernelImageError::InvalidDigest { .. })
                ),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..0x1200), extra in 0u64..1 << 40) {
            let _ = KernelImage::parse(&bytes, bytes.len() as u64);
            let _ = KernelImage::parse(&bytes, bytes.len() as u64 + extra);
        }

        #[test]
        fn corrupting_a_valid_header_never_panics(index in 0usize..0x600, byte in any::<u8>()) {
            let mut bytes = image(4);
            bytes[index] = byte;
            let _ = parse(&bytes);
        }
    }
}
