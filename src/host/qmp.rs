//! A small synchronous QMP client (QEMU's JSON protocol on a unix socket): enough for pause, save, restore and
//! resume, with a timeout on every read so a wedged QEMU cannot hang a live update, and errors that say which
//! QEMU, which command and what an operator should look at.

use crate::action::shell_quote;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Time allowed for one QMP reply; long-running work (migration) is waited for in short reads of its events and
/// queries (`qmp_wait`), never in one read.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Events kept for the caller; older ones are dropped so a chatty guest cannot grow a session without bound.
const MAX_EVENTS: usize = 256;

/// A QMP session failed: connecting, a malformed or missing reply, or QEMU's own `error` reply, as a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError(pub String);

impl std::error::Error for QmpError {}

impl std::fmt::Display for QmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// QEMU's version as `query-version` (and the greeting) report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct QemuVersion {
    pub(crate) major: u64,
    pub(crate) minor: u64,
    pub(crate) micro: u64,
}

impl QemuVersion {
    fn from_reply(value: &Value) -> Option<Self> {
        let q = value.get("qemu")?;
        Some(Self {
            major: q.get("major")?.as_u64()?,
            minor: q.get("minor")?.as_u64()?,
            micro: q.get("micro")?.as_u64()?,
        })
    }

    /// Whether migration takes a `file:PATH` URI (QEMU 8.2 and later). Older QEMUs are given `exec:cat > PATH`,
    /// which costs a `cat` process and a pipe but works back to QEMU 2.x.
    pub(crate) fn has_file_migration(&self) -> bool {
        (self.major, self.minor) >= (8, 2)
    }

    /// Whether `migrate-incoming` takes `exit-on-error` (QEMU 9.1 and later): with it off, a QEMU that cannot load
    /// the state stays up and says why in `query-migrate`'s `error-desc`, instead of exiting with the reason on its
    /// stderr only.
    pub(crate) fn has_incoming_exit_on_error(&self) -> bool {
        (self.major, self.minor) >= (9, 1)
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Test hook, compiled only with the `fault-injection` feature: the limit of each QMP read in ms instead of
/// [`REPLY_TIMEOUT`], so that a test of a wedged (SIGSTOPped) QEMU need not wait 30 s per read.
#[cfg(feature = "fault-injection")]
const REPLY_TIMEOUT_ENV: &str = "KUP_FAULT_QMP_TIMEOUT_MS";

/// How long a QMP read may take.
fn reply_timeout() -> Duration {
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = super::machine::env(REPLY_TIMEOUT_ENV).and_then(|v| v.parse().ok()) {
        return Duration::from_millis(ms);
    }
    REPLY_TIMEOUT
}

/// One QMP connection, past the greeting.
pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: String,
    greeting_version: Option<QemuVersion>,
    events: Vec<Value>,
    note: Option<String>,
    /// How many events this session has received (kept or since dropped).
    events_received: u64,
    /// A line read in part when a read timed out: kept, so a wait for an event that ends mid-line loses nothing.
    pending: Vec<u8>,
}

/// Why a read of one message ended without one.
enum ReadError {
    /// Nothing (or no whole line) arrived within the read timeout.
    TimedOut,
    /// The connection failed, closed, or carried something that is not JSON.
    Failed(QmpError),
}

impl QmpClient {
    /// Connects and reads the greeting. `qmp_capabilities` is left to the caller (plans list it explicitly).
    pub fn connect(path: &Path) -> Result<Self, QmpError> {
        Self::connect_with_timeout(path, reply_timeout())
    }

    /// [`QmpClient::connect`] with another limit for each read.
    pub(crate) fn connect_with_timeout(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let socket = path.display().to_string();
        let stream = UnixStream::connect(path).map_err(|e| {
            QmpError(match e.kind() {
                ErrorKind::NotFound => format!(
                    "QMP {socket}: no such socket: is QEMU running with `-qmp unix:{socket},server=on,wait=off`?"
                ),
                ErrorKind::ConnectionRefused => format!(
                    "QMP {socket}: nothing listens on this socket (QEMU exited and left it behind?)"
                ),
                _ => format!("QMP {socket}: cannot connect: {e}"),
            })
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| QmpError(format!("QMP {socket}: {e}")))?;
        let writer = stream
            .try_clone()
            .map_err(|e| QmpError(format!("QMP {socket}: {e}")))?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
            socket,
            greeting_version: None,
            events: Vec::new(),
            note: None,
            events_received: 0,
            pending: Vec::new(),
        };
        // QEMU serves one QMP client per socket at a time: a second one is accepted by the kernel but greeted only
        // when the first leaves, so a missing greeting usually means someone else holds the monitor.
        let greeting = client.read_message().map_err(|e| {
            if e.0.contains("timed out") || e.0.contains("would block") {
                QmpError(format!(
                    "QMP {}: connected, but QEMU sent no greeting within {} s (another client holds this \
                     monitor? QEMU serves one at a time)",
                    client.socket,
                    timeout.as_secs()
                ))
            } else {
                e
            }
        })?;
        match greeting.get("QMP") {
            Some(qmp) => {
                client.greeting_version = qmp.get("version").and_then(QemuVersion::from_reply)
            }
            None => {
                return Err(QmpError(format!(
                    "QMP {}: unexpected greeting {greeting} (is this a QMP socket, not HMP or a serial console?)",
                    client.socket
                )));
            }
        }
        Ok(client)
    }

    /// Context for the errors of later commands of this session: what a migration setup set on this QEMU (and
    /// what the state was saved with), so a QEMU that exits loading the state is reported with both sides.
    pub fn set_note(&mut self, note: String) {
        self.note = Some(note);
    }

    /// The context set by [`QmpClient::set_note`].
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The socket this client talks to, as shown in messages.
    pub(crate) fn socket(&self) -> &str {
        &self.socket
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        self.read_raw().map_err(|e| match e {
            ReadError::TimedOut => QmpError(format!(
                "QMP {}: no reply: timed out after {} s (QEMU wedged?)",
                self.socket,
                self.reader
                    .get_ref()
                    .read_timeout()
                    .ok()
                    .flatten()
                    .unwrap_or(REPLY_TIMEOUT)
                    .as_secs()
            )),
            ReadError::Failed(e) => e,
        })
    }

    /// One whole line as JSON; a line cut by the read timeout stays in `pending` for the next read.
    fn read_raw(&mut self) -> Result<Value, ReadError> {
        let n = match self.reader.read_until(b'\n', &mut self.pending) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ReadError::TimedOut);
            }
            Err(e) => {
                return Err(ReadError::Failed(QmpError(match e.kind() {
                    ErrorKind::ConnectionReset => format!(
                        "QMP {}: QEMU reset the connection (it exited or was killed)",
                        self.socket
                    ),
                    _ => format!("QMP {}: no reply: {e}", self.socket),
                })));
            }
        };
        if n == 0 || self.pending.last() != Some(&b'\n') {
            return Err(ReadError::Failed(QmpError(format!(
                "QMP {}: QEMU closed the connection (it exited or was killed{})",
                self.socket,
                self.last_shutdown()
                    .map(|r| format!("; last SHUTDOWN event: {r}"))
                    .unwrap_or_default()
            ))));
        }
        let line = std::mem::take(&mut self.pending);
        serde_json::from_slice(&line).map_err(|e| {
            ReadError::Failed(QmpError(format!(
                "QMP {}: bad JSON {:?}: {e}",
                self.socket,
                String::from_utf8_lossy(&line)
            )))
        })
    }

    /// Waits up to `timeout` for QEMU's next asynchronous event (`MIGRATION`, `STOP`, `RESUME`, …), which is also
    /// kept like those [`QmpClient::execute`] meets; `None` when none came in time. Only between commands: a
    /// reply is never waiting then.
    pub(crate) fn next_event(&mut self, timeout: Duration) -> Result<Option<Value>, QmpError> {
        let usual = self.reader.get_ref().read_timeout().ok().flatten();
        let socket = self.socket.clone();
        let set = |stream: &UnixStream, t: Option<Duration>| {
            stream
                .set_read_timeout(t)
                .map_err(|e| QmpError(format!("QMP {socket}: {e}")))
        };
        // A zero timeout is refused by the kernel interface: 1 ms is the shortest wait.
        set(
            self.reader.get_ref(),
            Some(timeout.max(Duration::from_millis(1))),
        )?;
        let read = self.read_raw();
        set(self.reader.get_ref(), usual)?;
        match read {
            Ok(message) if message.get("event").is_some() => {
                self.keep_event(message.clone());
                Ok(Some(message))
            }
            // Nothing else arrives unasked; whatever it is, the caller's next query says where QEMU is.
            Ok(message) => Ok(Some(message)),
            Err(ReadError::TimedOut) => Ok(None),
            Err(ReadError::Failed(e)) => Err(e),
        }
    }

    fn last_shutdown(&self) -> Option<String> {
        self.events
            .iter()
            .rev()
            .find(|e| e.get("event").and_then(Value::as_str) == Some("SHUTDOWN"))
            .map(|e| {
                e.get("data")
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown reason")
                    .to_owned()
            })
    }

    fn keep_event(&mut self, event: Value) {
        self.events_received += 1;
        if self.events.len() == MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(event);
    }

    /// How many events this session has received so far: a change tells that QEMU sent one while the caller was
    /// busy with a command.
    pub(crate) fn events_received(&self) -> u64 {
        self.events_received
    }

    /// The name of the last event received (`MIGRATION`, …).
    pub(crate) fn last_event(&self) -> Option<&str> {
        self.events
            .last()
            .and_then(|e| e.get("event"))
            .and_then(Value::as_str)
    }

    /// Asynchronous events (`STOP`, `RESUME`, `MIGRATION`, `SHUTDOWN`, …) received so far, oldest first; taking
    /// them empties the list.
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Sends one command and returns its `return` value; asynchronous events in between are kept (see
    /// `QmpClient::take_events`).
    pub fn execute(&mut self, command: &str, args: &Value) -> Result<Value, QmpError> {
        let mut message = json!({ "execute": command });
        if args.as_object().is_some_and(|a| !a.is_empty()) {
            message["arguments"] = args.clone();
        }
        let mut text = message.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).map_err(|e| {
            QmpError(match e.kind() {
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => format!(
                    "QMP {}: cannot send {command}: QEMU closed the connection (it exited or was killed)",
                    self.socket
                ),
                _ => format!("QMP {}: cannot send {command}: {e}", self.socket),
            })
        })?;
        loop {
            let reply = self
                .read_message()
                .map_err(|e| QmpError(format!("{e} (while waiting for the reply to {command})")))?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                let desc = error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                let class = error.get("class").and_then(Value::as_str).unwrap_or("");
                let hint = if class == "CommandNotFound" {
                    " (this QEMU does not know the command; see `query-version`)"
                } else {
                    ""
                };
                return Err(QmpError(format!(
                    "QMP {}: {command} failed: {desc}{hint}",
                    self.socket
                )));
            }
            if reply.get("event").is_some() {
                self.keep_event(reply);
            }
        }
    }

    /// QEMU's version: from the greeting, else from `query-version`.
    pub(crate) fn version(&mut self) -> Result<QemuVersion, QmpError> {
        if let Some(v) = self.greeting_version {
            return Ok(v);
        }
        let reply = self.execute("query-version", &json!({}))?;
        let version = QemuVersion::from_reply(&reply).ok_or_else(|| {
            QmpError(format!(
                "QMP {}: query-version returned no version: {reply}",
                self.socket
            ))
        })?;
        self.greeting_version = Some(version);
        Ok(version)
    }

    /// Sends `quit` and waits until QEMU closes this connection (it does so early in its exit, after unlinking its
    /// QMP socket and pidfile) — not until the process is gone, which for a big guest takes seconds while the kernel
    /// frees its memory.
    pub(crate) fn quit(mut self, timeout: Duration) -> Result<(), QmpError> {
        self.execute("quit", &json!({}))?;
        let _ = self.reader.get_ref().set_read_timeout(Some(timeout));
        loop {
            match self.read_message() {
                Ok(event) => self.keep_event(event),
                Err(e) if e.0.contains("closed the connection") || e.0.contains("reset") => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The migration URI that writes a state file (or reads it back, `incoming`), for this QEMU. `exec:` URIs go through
/// `/bin/sh`, hence the quoting.
pub(crate) fn migration_uri(version: QemuVersion, path: &Path, incoming: bool) -> String {
    let text = path.to_string_lossy();
    // `file:` takes options after a comma, so a path with a comma goes the exec way.
    if version.has_file_migration() && !text.contains(',') {
        format!("file:{text}")
    } else {
        let cat = if incoming { "cat" } else { "cat >" };
        format!("exec:{cat} {}", shell_quote(Path::new(text.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    const V72: QemuVersion = QemuVersion {
        major: 7,
        minor: 2,
        micro: 22,
    };
    const V82: QemuVersion = QemuVersion {
        major: 8,
        minor: 2,
        micro: 0,
    };

    #[test]
    fn file_uri_only_from_8_2() {
        assert!(!V72.has_file_migration());
        assert!(V82.has_file_migration());
        assert!(
            QemuVersion {
                major: 10,
                minor: 0,
                micro: 0
            }
            .has_file_migration()
        );
        let p = Path::new("/var/lib/kup/my vm/vmstate.partial");
        assert_eq!(
            migration_uri(V72, p, false),
            "exec:cat > '/var/lib/kup/my vm/vmstate.partial'"
        );
        assert_eq!(
            migration_uri(V82, p, false),
            "file:/var/lib/kup/my vm/vmstate.partial"
        );
        assert_eq!(
            migration_uri(V72, Path::new("/s/vmstate"), true),
            "exec:cat /s/vmstate"
        );
        assert_eq!(
            migration_uri(V82, Path::new("/s,x/vmstate"), true),
            "exec:cat '/s,x/vmstate'"
        );
    }

    /// A fake QEMU that sends `script` lines in answer to each command it reads, then closes.
    fn fake_qemu(script: Vec<Vec<&'static str>>) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .write_all(
                    b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}}, \"capabilities\": []}}\n",
                )
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            for replies in script {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                for r in replies {
                    stream.write_all(r.as_bytes()).unwrap();
                    stream.write_all(b"\n").unwrap();
                }
            }
            // Returning drops both ends: the connection closes, as when QEMU dies.
        });
        (dir, path)
    }

    #[test]
    fn events_are_kept_and_errors_name_the_command() {
        let (_dir, path) = fake_qemu(vec![
            vec![
                r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}"#,
                r#"{"return": {}}"#,
            ],
            vec![r#"{"error": {"class": "GenericError", "desc": "no way"}}"#],
            vec![
                r#"{"error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}"#,
            ],
        ]);
        let mut c = QmpClient::connect(&path).unwrap();
        assert_eq!(c.version().unwrap(), V72);
        assert_eq!(c.execute("stop", &json!({})).unwrap(), json!({}));
        let events = c.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["event"], "STOP");
        let e = c.execute("migrate", &json!({"uri": "x"})).unwrap_err();
        assert!(e.0.contains("migrate failed: no way"), "{e}");
        let e = c.execute("x", &json!({})).unwrap_err();
        assert!(e.0.contains("does not know the command"), "{e}");
    }

    #[test]
    fn a_qemu_that_dies_mid_command_is_an_error_not_a_hang() {
        let (_dir, path) = fake_qemu(vec![vec![
            r#"{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-signal"}}"#,
        ]]);
        let mut c = QmpClient::connect(&path).unwrap();
        let e = c.execute("query-migrate", &json!({})).unwrap_err();
        assert!(e.0.contains("closed the connection"), "{e}");
        assert!(e.0.contains("host-signal"), "{e}");
        assert!(e.0.contains("query-migrate"), "{e}");
    }

    #[test]
    fn an_event_cut_by_the_wait_s_timeout_is_read_whole_by_the_next_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (half_sent, go_on) = std::sync::mpsc::channel::<()>();
        let (resume, resumed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}}}}\n")
                .unwrap();
            stream.write_all(br#"{"event": "MIGRATION", "da"#).unwrap();
            half_sent.send(()).unwrap();
            resumed.recv().unwrap();
            stream
                .write_all(b"ta\": {\"status\": \"completed\"}}\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let mut c = QmpClient::connect(&path).unwrap();
        go_on.recv().unwrap();
        assert_eq!(c.next_event(Duration::from_millis(20)).unwrap(), None);
        let before = c.events_received();
        resume.send(()).unwrap();
        let event = c.next_event(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(event["data"]["status"], "completed");
        assert_eq!(c.events_received(), before + 1);
        assert_eq!(c.last_event(), Some("MIGRATION"));
        // The usual limit is back after the wait.
        assert_eq!(
            c.reader.get_ref().read_timeout().unwrap(),
            Some(REPLY_TIMEOUT)
        );
    }

    #[test]
    fn a_silent_qemu_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        // Accepted by the kernel, never greeted: what a second client of a busy monitor sees.
        let _listener = UnixListener::bind(&path).unwrap();
        let started = std::time::Instant::now();
        let e = QmpClient::connect_with_timeout(&path, Duration::from_millis(200))
            .err()
            .unwrap();
        assert!(e.0.contains("no greeting"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_and_stale_sockets_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let e = QmpClient::connect(&missing).err().unwrap();
        assert!(e.0.contains("no such socket"), "{e}");
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let e = QmpClient::connect(&stale).err().unwrap();
        assert!(e.0.contains("nothing listens"), "{e}");
    }
}
