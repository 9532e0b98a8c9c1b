//! A small synchronous QMP client (QEMU's JSON protocol on a unix socket): enough for pause, save, restore and
//! resume, with a timeout on every read so a wedged QEMU cannot hang a live update.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Time allowed for one QMP reply; long-running work (migration) is polled, never waited on in one read.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct QmpError(pub String);

impl std::fmt::Display for QmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One QMP connection, past the greeting.
pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: String,
}

impl QmpClient {
    /// Connects and reads the greeting. `qmp_capabilities` is left to the caller (plans list it explicitly).
    pub fn connect(path: &Path) -> Result<Self, QmpError> {
        let socket = path.display().to_string();
        let stream = UnixStream::connect(path)
            .map_err(|e| QmpError(format!("QMP {socket}: cannot connect: {e}")))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(|e| QmpError(format!("QMP {socket}: {e}")))?;
        let writer = stream
            .try_clone()
            .map_err(|e| QmpError(format!("QMP {socket}: {e}")))?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
            socket,
        };
        let greeting = client.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError(format!(
                "QMP {}: unexpected greeting {greeting}",
                client.socket
            )));
        }
        Ok(client)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| QmpError(format!("QMP {}: no reply: {e}", self.socket)))?;
        if n == 0 {
            return Err(QmpError(format!(
                "QMP {}: QEMU closed the connection",
                self.socket
            )));
        }
        serde_json::from_str(&line)
            .map_err(|e| QmpError(format!("QMP {}: bad JSON {line:?}: {e}", self.socket)))
    }

    /// Sends one command and returns its `return` value; asynchronous events in between are skipped.
    pub fn execute(&mut self, command: &str, args: &Value) -> Result<Value, QmpError> {
        let mut message = json!({ "execute": command });
        if args.as_object().is_some_and(|a| !a.is_empty()) {
            message["arguments"] = args.clone();
        }
        let mut text = message.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| QmpError(format!("QMP {}: cannot send {command}: {e}", self.socket)))?;
        loop {
            let reply = self.read_message()?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                let desc = error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                return Err(QmpError(format!(
                    "QMP {}: {command} failed: {desc}",
                    self.socket
                )));
            }
            // An event ({"event": …}): not the reply to this command.
        }
    }
}
