//! Shell quoting, for the two places a path meets `/bin/sh`: QEMU's `exec:` migration URIs (QEMU runs them through
//! a shell) and argv shown to people. kup itself never runs a shell.

use std::path::Path;

/// Quotes a path for `/bin/sh`, which QEMU's `exec:` migration URIs run through.
pub fn shell_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%{}".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// An argv as a shell would need it typed, for display only.
pub(crate) fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(Path::new(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote(Path::new("/var/lib/kup/a")), "/var/lib/kup/a");
        assert_eq!(shell_quote(Path::new("/var/my vm")), "'/var/my vm'");
        assert_eq!(shell_quote(Path::new("/a'b")), r"'/a'\''b'");
        assert_eq!(shell_quote(Path::new("")), "''");
    }
}
