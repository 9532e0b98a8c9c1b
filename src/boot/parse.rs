//! Kernel log lines in every format operators hand us, reduced to one shape: the kernel's message, its stamp
//! and where the line came from.
//!
//! Real logs mix things: a serial capture starts with boot-loader chatter, journald interleaves systemd's own
//! lines, `printk` continuations arrive without a stamp. So each line is parsed on its own and never rejected:
//! a line we do not recognise is kept as plain text without a stamp. The phase extraction only ever looks at
//! the `message`, so one set of markers serves every format.

use serde::Serialize;

use super::wallclock;

/// A point in time in microseconds. For monotonic stamps: since the kernel's clock started (≈ kernel start).
/// For wall-clock stamps: since an arbitrary epoch; only differences between lines of one log mean something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Micros(pub i64);

impl Micros {
    pub(crate) fn seconds(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Time from `earlier` to `self`; `None` when `self` is earlier (out-of-order stamps) or when absurd stamps
    /// would overflow. Durations are therefore never negative.
    pub(crate) fn since(self, earlier: Micros) -> Option<Micros> {
        let d = self.0.checked_sub(earlier.0)?;
        (d >= 0).then_some(Micros(d))
    }

    /// `self` minus a number of milliseconds printed in the log (which may be any size).
    pub(crate) fn minus_ms(self, ms: u64) -> Option<Micros> {
        let us = i64::try_from(ms).ok()?.checked_mul(1000)?;
        self.0.checked_sub(us).map(Micros)
    }
}

/// Where a line's time comes from. Kept apart because the two cannot be compared with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stamp {
    /// The printk clock (`[    1.234567]`, kmsg's microseconds): fine-grained, starts near 0 at kernel start.
    Monotonic(Micros),
    /// A date printed by dmesg -T, syslog or journald: one second resolution in most formats.
    Wall(Micros),
}

/// The format a line was written in, named after the tool and option that produce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum LogFormat {
    /// `/dev/kmsg` records: `6,1234,1234567,-;message` (stamp in µs).
    #[serde(rename = "kmsg")]
    Kmsg,
    /// `dmesg`: `[    1.234567] message`.
    #[serde(rename = "dmesg")]
    Dmesg,
    /// `dmesg -r` or a console with `console_msg_format=syslog`: `<6>[    1.234567] message`.
    #[serde(rename = "dmesg-raw")]
    DmesgRaw,
    /// `dmesg -x`: `kern  :info  : [    1.234567] message`.
    #[serde(rename = "dmesg-x")]
    DmesgX,
    /// `dmesg -T`: `[Mon Nov  3 10:00:00 2025] message`.
    #[serde(rename = "dmesg-T")]
    DmesgT,
    /// `dmesg --time-format iso`: `2025-11-03T10:00:00,123456+00:00 message`.
    #[serde(rename = "dmesg-iso")]
    DmesgIso,
    /// `journalctl -k -o short-monotonic` or Ubuntu's /var/log/dmesg: `[    1.234567] host kernel: message`.
    #[serde(rename = "journal-monotonic")]
    JournalMonotonic,
    /// syslog's kern.log: `Nov  3 10:00:00 host kernel: [    1.234567] message`.
    #[serde(rename = "syslog")]
    Syslog,
    /// `journalctl -k` default: `Nov  3 10:00:00 host kernel: message` (wall clock only).
    #[serde(rename = "journal")]
    Journal,
    /// No recognisable prefix: a kernel without `printk.time`, boot-loader text, continuation lines.
    #[serde(rename = "plain")]
    Plain,
}

impl LogFormat {
    /// The same name as in JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Kmsg => "kmsg",
            Self::Dmesg => "dmesg",
            Self::DmesgRaw => "dmesg-raw",
            Self::DmesgX => "dmesg-x",
            Self::DmesgT => "dmesg-T",
            Self::DmesgIso => "dmesg-iso",
            Self::JournalMonotonic => "journal-monotonic",
            Self::Syslog => "syslog",
            Self::Journal => "journal",
            Self::Plain => "plain",
        }
    }
}

/// One line of the input, with the kernel's message separated from the prefixes around it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogLine<'a> {
    /// 1-based, as an editor shows it.
    pub(crate) number: usize,
    /// The line as it was read, without its line ending: this is what evidence quotes.
    pub(crate) raw: &'a str,
    /// The kernel's text, all prefixes removed.
    pub(crate) message: &'a str,
    pub(crate) stamp: Option<Stamp>,
    /// False for lines that journald or syslog interleaved from user space (`systemd[1]: …`), or kmsg records
    /// written by user space (facility ≠ kernel): those must not match kernel markers.
    pub(crate) kernel: bool,
    pub(crate) format: LogFormat,
}

/// Splits the text into lines (LF or CRLF) and parses each one.
pub(crate) fn lines(text: &str) -> Vec<LogLine<'_>> {
    let mut out = Vec::new();
    let mut pieces = text.split('\n').peekable();
    let mut number = 0;
    while let Some(piece) = pieces.next() {
        // A final empty piece is the terminator of the last line, not a line of its own.
        if piece.is_empty() && pieces.peek().is_none() {
            break;
        }
        number += 1;
        out.push(parse_line(number, piece.trim_end_matches('\r')));
    }
    out
}

/// Parses one line (without its line ending).
pub(crate) fn parse_line(number: usize, raw: &str) -> LogLine<'_> {
    let line = |message, stamp, kernel, format| LogLine {
        number,
        raw,
        message,
        stamp,
        kernel,
        format,
    };
    if let Some((stamp, kernel, message)) = kmsg_record(raw) {
        return line(
            message,
            Some(Stamp::Monotonic(stamp)),
            kernel,
            LogFormat::Kmsg,
        );
    }
    if let Some((wall, rest, iso)) = wall_prefix(raw) {
        return match tagged(rest) {
            Some(Tag::Kernel(message)) => match monotonic_bracket(message) {
                Some((mono, message)) => line(
                    message,
                    Some(Stamp::Monotonic(mono)),
                    true,
                    LogFormat::Syslog,
                ),
                None => line(message, Some(Stamp::Wall(wall)), true, LogFormat::Journal),
            },
            Some(Tag::Userspace) => line(rest, Some(Stamp::Wall(wall)), false, LogFormat::Journal),
            None if iso => line(rest, Some(Stamp::Wall(wall)), true, LogFormat::DmesgIso),
            None => line(rest, Some(Stamp::Wall(wall)), true, LogFormat::Journal),
        };
    }
    let (after_levels, facility_kernel) = match dmesg_x_prefix(raw) {
        Some((rest, kernel)) => (rest, Some(kernel)),
        None => (raw, None),
    };
    let (after_priority, priority_kernel) = match priority_prefix(after_levels) {
        Some((rest, kernel)) => (rest, Some(kernel)),
        None => (after_levels, None),
    };
    let kernel_by_prefix = facility_kernel.or(priority_kernel).unwrap_or(true);
    let format_by_prefix = if facility_kernel.is_some() {
        Some(LogFormat::DmesgX)
    } else if priority_kernel.is_some() {
        Some(LogFormat::DmesgRaw)
    } else {
        None
    };
    if let Some((mono, rest)) = monotonic_bracket(after_priority) {
        let (message, kernel, format) = match tagged(rest) {
            Some(Tag::Kernel(message)) => (message, true, LogFormat::JournalMonotonic),
            Some(Tag::Userspace) => (rest, false, LogFormat::JournalMonotonic),
            None => (rest, kernel_by_prefix, LogFormat::Dmesg),
        };
        return line(
            message,
            Some(Stamp::Monotonic(mono)),
            kernel,
            format_by_prefix.unwrap_or(format),
        );
    }
    if let Some((wall, rest)) = ctime_bracket(after_priority) {
        return line(
            rest,
            Some(Stamp::Wall(wall)),
            kernel_by_prefix,
            format_by_prefix.unwrap_or(LogFormat::DmesgT),
        );
    }
    match format_by_prefix {
        // `dmesg -x -t` / `dmesg -r -t`: the prefix is there, the stamp is not.
        Some(format) => line(after_priority, None, kernel_by_prefix, format),
        None => line(raw, None, true, LogFormat::Plain),
    }
}

/// The text after `n` bytes of `s`, when those bytes are ASCII (so `n` is a char boundary).
fn after(s: &str, n: usize) -> Option<&str> {
    s.get(n..)
}

fn ascii_number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

/// `/dev/kmsg` record: `PRIORITY,SEQUENCE,MICROSECONDS,FLAGS[,MORE];MESSAGE`.
fn kmsg_record(raw: &str) -> Option<(Micros, bool, &str)> {
    let semi = raw.find(';')?;
    let header = raw.get(..semi)?;
    let mut fields = header.split(',');
    let priority = ascii_number(fields.next()?.as_bytes())?;
    ascii_number(fields.next()?.as_bytes())?;
    let micros = ascii_number(fields.next()?.as_bytes())?;
    // One flag character: '-', 'c' (continuation) or '+'; further fields such as `caller=T1` may follow.
    if fields.next()?.len() != 1 {
        return None;
    }
    let micros = i64::try_from(micros).ok()?;
    // Facility 0 is the kernel; anything else was written into /dev/kmsg by a process.
    Some((Micros(micros), priority >> 3 == 0, after(raw, semi + 1)?))
}

/// A wall-clock date starting the line (syslog / journal short date or ISO 8601), followed by a space.
/// Returns the stamp, the text after the space, and whether the date was ISO.
fn wall_prefix(raw: &str) -> Option<(Micros, &str, bool)> {
    let b = raw.as_bytes();
    let (stamp, end, iso) = match wallclock::syslog_prefix(b) {
        Some((stamp, end)) => (stamp, end, false),
        None => {
            let (stamp, end) = wallclock::iso_prefix(b)?;
            (stamp, end, true)
        }
    };
    if b.get(end) != Some(&b' ') {
        return None;
    }
    Some((stamp, after(raw, end + 1)?, iso))
}

/// The result of looking for a journald / syslog tag (`host ident: `) after the stamp.
enum Tag<'a> {
    /// `host kernel: message` or `kernel: message`: the kernel's message follows.
    Kernel(&'a str),
    /// `host systemd[1]: message`: a user-space line.
    Userspace,
}

/// Recognises `kernel: `, `HOST kernel: ` and `HOST IDENT[PID]: `. Only the pid form marks user space,
/// because `word word: ` is also how many kernel messages look (`usb 1-1: new device`).
fn tagged(rest: &str) -> Option<Tag<'_>> {
    if let Some(message) = rest.strip_prefix("kernel: ") {
        return Some(Tag::Kernel(message));
    }
    let (host, tail) = rest.split_once(' ')?;
    if host.is_empty() {
        return None;
    }
    if let Some(message) = tail.strip_prefix("kernel: ") {
        return Some(Tag::Kernel(message));
    }
    let (ident, _) = tail.split_once(": ")?;
    let pid = ident.strip_suffix(']')?.rsplit_once('[')?.1;
    (!ident.contains(' ') && ascii_number(pid.as_bytes()).is_some()).then_some(Tag::Userspace)
}

/// `dmesg -x` prefix: `kern  :info  : `. Returns the rest and whether the facility is the kernel.
fn dmesg_x_prefix(raw: &str) -> Option<(&str, bool)> {
    const FACILITIES: [&str; 20] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
        "local7",
    ];
    const LEVELS: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug",
    ];
    let (facility, rest) = raw.split_once(':')?;
    let (level, rest) = rest.split_once(':')?;
    let facility = facility.trim();
    if !FACILITIES.contains(&facility) || !LEVELS.contains(&level.trim()) {
        return None;
    }
    Some((rest.strip_prefix(' ').unwrap_or(rest), facility == "kern"))
}

/// `<N>` priority prefix (`dmesg -r`, serial consoles with `console_msg_format=syslog`).
fn priority_prefix(raw: &str) -> Option<(&str, bool)> {
    let rest = raw.strip_prefix('<')?;
    let close = rest.find('>')?;
    let priority = ascii_number(rest.get(..close)?.as_bytes())?;
    Some((after(rest, close + 1)?, priority >> 3 == 0))
}

/// `[    1.234567] ` (optionally followed by a `[    T1]` caller id): the stamp and the message after it.
fn monotonic_bracket(s: &str) -> Option<(Micros, &str)> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    let stamp = inner.get(..close)?.trim_start_matches(' ');
    let (whole, frac) = stamp.split_once('.').unwrap_or((stamp, ""));
    let whole = ascii_number(whole.as_bytes())?;
    let mut micros = 0i64;
    let mut places = 0;
    for c in frac.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        if places < 6 {
            micros = micros * 10 + i64::from(c - b'0');
            places += 1;
        }
    }
    for _ in places..6 {
        micros *= 10;
    }
    let total = i64::try_from(whole)
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(micros)?;
    let mut rest = after(inner, close + 1)?;
    if let Some(caller) = caller_id(rest) {
        rest = caller;
    }
    Some((Micros(total), rest.strip_prefix(' ').unwrap_or(rest)))
}

/// CONFIG_PRINTK_CALLER's `[    T123]` / `[  C1]` after the stamp.
fn caller_id(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    let id = inner.get(..close)?.trim_start_matches(' ');
    let digits = id.strip_prefix('T').or_else(|| id.strip_prefix('C'))?;
    ascii_number(digits.as_bytes())?;
    after(inner, close + 1)
}

/// `[Mon Nov  3 10:00:00 2025] ` from `dmesg -T`.
fn ctime_bracket(s: &str) -> Option<(Micros, &str)> {
    let inner = s.strip_prefix('[')?;
    let (stamp, end) = wallclock::ctime(inner.as_bytes())?;
    let rest = inner.get(end..)?.strip_prefix(']')?;
    Some((stamp, rest.strip_prefix(' ').unwrap_or(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line `number` of a log, `raw`, parsed: its message and format are as expected.
    #[track_caller]
    fn reads_as<'a>(number: usize, raw: &'a str, message: &str, format: LogFormat) -> LogLine<'a> {
        let l = parse_line(number, raw);
        assert_eq!(l.message, message, "{raw}");
        assert_eq!(l.format, format, "{raw}");
        l
    }

    fn mono(s: f64) -> Option<Stamp> {
        Some(Stamp::Monotonic(Micros((s * 1e6).round() as i64)))
    }

    #[test]
    fn durations_are_never_negative_and_never_overflow() {
        assert_eq!(Micros(5).since(Micros(2)), Some(Micros(3)));
        assert_eq!(Micros(2).since(Micros(5)), None);
        assert_eq!(Micros(i64::MAX).since(Micros(-1)), None);
        assert_eq!(Micros(1_100_055).minus_ms(178), Some(Micros(922_055)));
        assert_eq!(Micros(0).minus_ms(99_999_999_999_999_999), None);
    }

    #[test]
    fn dmesg_line() {
        let l = reads_as(
            1,
            "[    1.234567] smp: Brought up 1 node, 4 CPUs",
            "smp: Brought up 1 node, 4 CPUs",
            LogFormat::Dmesg,
        );
        assert_eq!(l.stamp, mono(1.234567));
        assert!(l.kernel);
    }

    #[test]
    fn short_fractions_and_caller_ids() {
        let l = parse_line(1, "[ 5.5] x");
        assert_eq!(l.stamp, mono(5.5));
        let l = parse_line(1, "[    0.000000][    T0] Linux version 6.1.0 (x)");
        assert_eq!(l.message, "Linux version 6.1.0 (x)");
        assert_eq!(l.stamp, mono(0.0));
    }

    #[test]
    fn kmsg_record_in_microseconds() {
        let l = parse_line(1, "6,1234,1234567,-;smp: Bringing up secondary CPUs ...");
        assert_eq!(l.stamp, mono(1.234567));
        assert_eq!(l.message, "smp: Bringing up secondary CPUs ...");
        assert_eq!(l.format, LogFormat::Kmsg);
        let l = parse_line(2, "6,1235,1234600,c,caller=T1;continued");
        assert_eq!(l.message, "continued");
        // Facility 3 (daemon): systemd writing to /dev/kmsg.
        let l = parse_line(3, "30,1236,2000000,-;systemd[1]: Started");
        assert!(!l.kernel);
    }

    #[test]
    fn dmesg_t_wall_clock() {
        let a = parse_line(1, "[Mon Nov  3 10:00:00 2025] Linux version 6.12.0 (x)");
        let b = parse_line(2, "[Mon Nov  3 10:00:02 2025] Run /init as init process");
        assert_eq!(a.message, "Linux version 6.12.0 (x)");
        assert_eq!(a.format, LogFormat::DmesgT);
        match (a.stamp, b.stamp) {
            (Some(Stamp::Wall(x)), Some(Stamp::Wall(y))) => assert_eq!(y.0 - x.0, 2_000_000),
            other => panic!("expected wall stamps, got {other:?}"),
        }
    }

    #[test]
    fn dmesg_x_levels() {
        let l = reads_as(
            1,
            "kern  :info  : [    1.230000] smp: Brought up 1 node, 2 CPUs",
            "smp: Brought up 1 node, 2 CPUs",
            LogFormat::DmesgX,
        );
        assert_eq!(l.stamp, mono(1.23));
        let l = parse_line(2, "daemon:info  : [    3.000000] systemd[1]: Started");
        assert!(!l.kernel);
        // A kernel message that merely contains colons is not a -x prefix.
        let l = parse_line(3, "microcode: updated early: 0x3d -> 0x49");
        assert_eq!(l.format, LogFormat::Plain);
    }

    #[test]
    fn priority_prefix_lines() {
        let l = reads_as(
            1,
            "<5>[    0.000000] Linux version 6.6.1 (x)",
            "Linux version 6.6.1 (x)",
            LogFormat::DmesgRaw,
        );
        assert!(l.kernel);
    }

    #[test]
    fn journal_monotonic_and_ubuntu_var_log_dmesg() {
        reads_as(
            1,
            "[    1.656887] lit.home.arpa kernel: smp: Bringing up secondary CPUs ...",
            "smp: Bringing up secondary CPUs ...",
            LogFormat::JournalMonotonic,
        );
        let l = parse_line(
            2,
            "[    2.874599] lit.home.arpa systemd[1]: Failed to find module 'autofs4'",
        );
        assert!(!l.kernel);
        reads_as(
            3,
            "[    0.160715] kernel: Memory: 65536948K/67017052K available (x)",
            "Memory: 65536948K/67017052K available (x)",
            LogFormat::JournalMonotonic,
        );
        // Kernel messages shaped like "word word: text" stay kernel messages.
        let l = parse_line(
            4,
            "[    3.100000] usb 1-1: new high-speed USB device number 2",
        );
        assert_eq!(l.message, "usb 1-1: new high-speed USB device number 2");
        assert!(l.kernel);
    }

    #[test]
    fn syslog_kern_log_prefers_the_monotonic_stamp() {
        let l = reads_as(
            1,
            "Nov  3 10:00:00 host kernel: [    1.234000] Run /init as init process",
            "Run /init as init process",
            LogFormat::Syslog,
        );
        assert_eq!(l.stamp, mono(1.234));
        let l = parse_line(
            2,
            "2025-11-03T10:00:00.123456+01:00 host kernel: [    2.000000] x",
        );
        assert_eq!(l.stamp, mono(2.0));
    }

    #[test]
    fn journalctl_default_is_wall_clock() {
        let l = reads_as(
            1,
            "Oct 31 20:09:02 BlackLightSpeed kernel: Linux version 5.3.8 (x)",
            "Linux version 5.3.8 (x)",
            LogFormat::Journal,
        );
        assert!(matches!(l.stamp, Some(Stamp::Wall(_))));
        let l = parse_line(
            2,
            "Oct 31 20:09:02 BlackLightSpeed systemd[1]: Detected architecture x86-64.",
        );
        assert!(!l.kernel);
    }

    #[test]
    fn dmesg_iso_lines() {
        reads_as(
            1,
            "2025-11-03T10:00:00,123456+00:00 Linux version 6.12.0 (x)",
            "Linux version 6.12.0 (x)",
            LogFormat::DmesgIso,
        );
    }

    #[test]
    fn crlf_and_plain_lines() {
        let all = lines(
            "U-Boot 2020.10\r\n[    0.000000] Linux version 5.8.0 (x)\r\nCommand line: quiet\r\n",
        );
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].format, LogFormat::Plain);
        assert_eq!(all[1].message, "Linux version 5.8.0 (x)");
        assert_eq!(all[2].message, "Command line: quiet");
        assert_eq!(all[2].stamp, None);
        assert_eq!(all[2].number, 3);
    }

    #[test]
    fn odd_brackets_do_not_panic_or_parse() {
        for raw in [
            "[",
            "[]",
            "[ 1.2.3] x",
            "[é] x",
            "<>",
            "<9999999999999999999999>[1] x",
            "[99999999999999999999] x",
        ] {
            let l = parse_line(1, raw);
            assert_eq!(l.stamp, None, "{raw}");
        }
    }
}
