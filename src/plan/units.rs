//! Durations and sizes as operators write them (`"1m 30s"`, `"2GiB"`), parsed strictly: a typo in a timeout or a
//! memory size must be an error in review, not a surprise during a reboot.

use std::time::Duration;

/// Parses `"30s"`, `"1m 30s"`, `"1m30s"`, `"500ms"`, `"1.5s"`, `"2h"`. Units: `ms`, `s`, `m`, `h`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total = 0f64;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("`{}` is not a number", &rest[..number_len]))?;
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("`{number}` has no unit (ms, s, m or h)")),
            other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
        };
        total += number * seconds;
        rest = rest[unit_len..].trim_start();
    }
    if !total.is_finite() || total > 365.0 * 86_400.0 {
        return Err("duration is too long".to_owned());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses `"2GiB"`, `"512MiB"`, `"2G"` (binary, as QEMU's `-m` reads it) into bytes. Decimal units (`GB`) are refused
/// because their meaning differs between tools.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let number_len = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if number_len == 0 {
        return Err(format!("expected a number at the start of `{trimmed}`"));
    }
    let number: u64 = trimmed[..number_len]
        .parse()
        .map_err(|_| "number too large".to_owned())?;
    let shift = match trimmed[number_len..].trim_start() {
        "B" => 0,
        // QEMU reads a bare `-m 2048` as MiB, most tools as bytes: make the unit explicit.
        "" => {
            return Err(format!(
                "`{trimmed}` has no unit: write `{trimmed}MiB` or `{trimmed}B`"
            ));
        }
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        unit @ ("KB" | "MB" | "GB" | "TB") => {
            return Err(format!("`{unit}` is ambiguous: write `{}iB`", &unit[..1]));
        }
        other => return Err(format!("unknown unit `{other}` (use KiB, MiB, GiB or TiB)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| "size too large".to_owned())
}

/// Renders a duration the way reports show it: `850ms`, `1.25s`, `2m 5s`.
#[cfg(test)] // only the unit tests use it
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.2}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let secs = d.as_secs();
        format!("{}m {}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_operators_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("3 secs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1..2s").is_err());
        assert!(parse_duration("99999999h").is_err());
    }

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert!(parse_size("2048").unwrap_err().contains("no unit"));
        assert!(parse_size("2GB").unwrap_err().contains("ambiguous"));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn durations_render_compactly() {
        for (ms, text) in [
            (850, "850ms"),
            (1250, "1.25s"),
            (3000, "3s"),
            (125_000, "2m 5s"),
        ] {
            assert_eq!(format_duration(Duration::from_millis(ms)), text);
        }
    }
}
