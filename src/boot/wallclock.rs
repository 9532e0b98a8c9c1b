//! Wall-clock dates as kernel logs print them (`dmesg -T`, syslog, journalctl, ISO 8601), turned into
//! microseconds so that two lines of one boot can be subtracted.
//!
//! Written by hand rather than with a date crate: we never need a calendar answer, only differences between
//! lines of the same log, and every format here is fixed-width ASCII. Everything works on bytes and returns
//! `None` on anything unexpected, so random input cannot panic.

use super::parse::Micros;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const WEEKDAYS: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn month_index(b: &[u8]) -> Option<u32> {
    let name = b.get(..3)?;
    MONTHS
        .iter()
        .position(|m| m.as_slice() == name)
        .and_then(|i| u32::try_from(i + 1).ok())
}

/// `n` ASCII digits at `at`, as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `HH:MM:SS` at `at`, as seconds of the day.
fn time_of_day(b: &[u8], at: usize) -> Option<i64> {
    let (h, m, s) = (
        digits(b, at, 2)?,
        digits(b, at + 3, 2)?,
        digits(b, at + 6, 2)?,
    );
    if b.get(at + 2) != Some(&b':') || b.get(at + 5) != Some(&b':') || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s))
}

/// Optional `.ffffff` or `,ffffff` at `at`: returns the microseconds and the index after it.
fn fraction(b: &[u8], at: usize) -> (i64, usize) {
    if !matches!(b.get(at), Some(b'.') | Some(b',')) {
        return (0, at);
    }
    let mut end = at + 1;
    let mut micros = 0i64;
    let mut places = 0;
    while let Some(c) = b.get(end).filter(|c| c.is_ascii_digit()) {
        if places < 6 {
            micros = micros * 10 + i64::from(c - b'0');
            places += 1;
        }
        end += 1;
    }
    if end == at + 1 {
        return (0, at);
    }
    for _ in places..6 {
        micros *= 10;
    }
    (micros, end)
}

fn to_micros(days: i64, seconds: i64, micros: i64) -> Micros {
    Micros((days * 86_400 + seconds) * 1_000_000 + micros)
}

/// `Oct 31 20:09:02[.ffffff]`: month, day, seconds of the day, microseconds, and the index after it.
fn month_day_time(b: &[u8]) -> Option<(u32, u32, i64, i64, usize)> {
    let month = month_index(b)?;
    if b.get(3) != Some(&b' ') {
        return None;
    }
    // The day is space-padded ("Nov  3") or not ("Nov 3") depending on the writer.
    let (day, after_day) = match (b.get(4), b.get(5), b.get(6)) {
        (Some(b' '), Some(d), Some(b' ')) if d.is_ascii_digit() => (u32::from(d - b'0'), 7),
        (Some(d), Some(b' '), _) if d.is_ascii_digit() => (u32::from(d - b'0'), 6),
        (Some(_), Some(_), Some(b' ')) => (digits(b, 4, 2)?, 7),
        _ => return None,
    };
    if day == 0 || day > 31 {
        return None;
    }
    let seconds = time_of_day(b, after_day)?;
    let (micros, end) = fraction(b, after_day + 8);
    Some((month, day, seconds, micros, end))
}

/// Syslog / journalctl short date at the start of a line: `Oct 31 20:09:02` (optionally `.123456`).
/// The year is not printed, so the date is placed in a fixed year: differences within one boot stay right,
/// and a boot spanning New Year shows up as out-of-order stamps rather than as a wrong duration.
/// Returns the stamp and the index just after it.
pub(crate) fn syslog_prefix(b: &[u8]) -> Option<(Micros, usize)> {
    let (month, day, seconds, micros, end) = month_day_time(b)?;
    Some((
        to_micros(days_from_civil(2001, month, day), seconds, micros),
        end,
    ))
}

/// `dmesg -T` date, the inside of `[Mon Nov  3 10:00:00 2025]`: returns the stamp and the index after the year.
pub(crate) fn ctime(b: &[u8]) -> Option<(Micros, usize)> {
    let weekday = b.get(..3)?;
    if !WEEKDAYS.iter().any(|w| w.as_slice() == weekday) || b.get(3) != Some(&b' ') {
        return None;
    }
    let (month, day, seconds, micros, used) = month_day_time(b.get(4..)?)?;
    let at = 4 + used;
    if b.get(at) != Some(&b' ') {
        return None;
    }
    let year = digits(b, at + 1, 4)?;
    Some((
        to_micros(
            days_from_civil(i64::from(year), month, day),
            seconds,
            micros,
        ),
        at + 5,
    ))
}

/// ISO 8601 date-time at the start of a line (`dmesg --time-format iso`, `journalctl -o short-iso`, rsyslog's
/// RFC 3339): `2025-11-03T10:00:00[.,ffffff][Z|±HH:MM|±HHMM]`. The offset is applied so that a DST change
/// within a log does not look like an hour of boot time. Returns the stamp (UTC) and the index after it.
pub(crate) fn iso_prefix(b: &[u8]) -> Option<(Micros, usize)> {
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T') | Some(b' '))
    {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let seconds = time_of_day(b, 11)?;
    let (micros, mut end) = fraction(b, 19);
    let mut offset = 0i64;
    match b.get(end) {
        Some(b'Z') => end += 1,
        Some(&sign @ (b'+' | b'-')) => {
            let hours = digits(b, end + 1, 2)?;
            let (minutes, len) = if b.get(end + 3) == Some(&b':') {
                (digits(b, end + 4, 2)?, 6)
            } else {
                (
                    digits(b, end + 3, 2).unwrap_or(0),
                    if digits(b, end + 3, 2).is_some() {
                        5
                    } else {
                        3
                    },
                )
            };
            offset = i64::from(hours) * 3600 + i64::from(minutes) * 60;
            if sign == b'-' {
                offset = -offset;
            }
            end += len;
        }
        _ => {}
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some((to_micros(days, seconds - offset, micros), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2025, 11, 3), 20_395);
    }

    #[test]
    fn syslog_dates_accept_padded_and_unpadded_days() {
        let (a, end) = syslog_prefix(b"Nov  3 10:00:00 host kernel: x").expect("padded day");
        assert_eq!(end, 15);
        let (b, _) = syslog_prefix(b"Nov 3 10:00:01 host kernel: x").expect("unpadded day");
        assert_eq!(b.0 - a.0, 1_000_000);
        let (c, end) = syslog_prefix(b"Nov 13 10:00:00.250000 h").expect("fraction");
        assert_eq!(end, 22);
        assert_eq!(c.0 - a.0, 10 * 86_400_000_000 + 250_000);
        assert!(syslog_prefix(b"Foo  3 10:00:00").is_none());
        assert!(syslog_prefix(b"Nov  3 25:00:00").is_none());
    }

    #[test]
    fn ctime_dates_use_the_year() {
        let (a, end) = ctime(b"Mon Nov  3 10:00:00 2025] x").expect("ctime");
        assert_eq!(end, 24);
        assert_eq!(a.0, (20_395 * 86_400 + 36_000) * 1_000_000);
        let (leap, _) = ctime(b"Fri Mar  1 00:00:00 2024").expect("leap year");
        assert_eq!(leap.0, days_from_civil(2024, 3, 1) * 86_400_000_000);
        assert!(ctime(b"Xyz Nov  3 10:00:00 2025").is_none());
    }

    #[test]
    fn iso_dates_apply_the_offset() {
        let (utc, end) = iso_prefix(b"2025-11-03T10:00:00,500000+00:00 Linux").expect("iso");
        assert_eq!(end, 32);
        let (east, _) = iso_prefix(b"2025-11-03T11:00:00.5+0100 x").expect("iso +0100");
        assert_eq!(utc, east);
        let (z, _) = iso_prefix(b"2025-11-03T10:00:00Z").expect("iso Z");
        assert_eq!(utc.0 - z.0, 500_000);
        assert!(iso_prefix(b"2025-13-03T10:00:00").is_none());
    }
}
