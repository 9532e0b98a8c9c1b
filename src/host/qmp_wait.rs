//! Waiting until a QEMU is in a state (`QmpWait`: a migration `completed`, a guest `paused` or `running`), woken
//! by QEMU's own events (`MIGRATION`, `STOP`, `RESUME`, …) rather than by a timer, so the wait ends as soon as
//! QEMU gets there; a poll runs beside the events, so that an event QEMU does not send (one not asked for
//! `MIGRATION` events, a state change it announces with none) or one that goes missing cannot hang kup.

use super::HostError;
use super::perform::Backoff;
use super::qmp::{QmpClient, QmpError};
use crate::action::{ActionOutput, QmpWait, WaitEnd};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Between queries while QEMU is expected to announce the change with an event: the poll is only the fallback.
const SLOW_POLL: Duration = Duration::from_millis(100);

/// Whether QEMU announces the change this wait waits for. `RESUME` is always sent; `MIGRATION` events only with
/// the migration capability `events` on (the migration setup turns it on where QEMU offers it), and they are the
/// only news of a load's end (`inmigrate` becomes `paused` with no `STOP`).
fn announced(client: &mut QmpClient, command: &str, until: &str) -> Result<bool, QmpError> {
    if command == "query-status" && until == "running" {
        return Ok(true);
    }
    let caps = client.execute("query-migrate-capabilities", &json!({}))?;
    Ok(caps.as_array().into_iter().flatten().any(|c| {
        c.get("capability").and_then(Value::as_str) == Some("events")
            && c.get("state").and_then(Value::as_bool) == Some(true)
    }))
}

/// What woke the query in hand: nothing yet (the first), the fallback poll, or an event (its name).
enum Woken {
    First,
    Poll,
    Event(String),
}

/// Repeats a QMP query until `field` of its reply is `until`, sending it again when QEMU sends an event and
/// otherwise on a poll; a state QEMU never leaves fails at once.
pub(super) fn wait(client: &mut QmpClient, wait: &QmpWait) -> Result<ActionOutput, HostError> {
    let QmpWait {
        command,
        field,
        until,
        timeout_ms,
        ..
    } = wait;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(*timeout_ms);
    let mut backoff = Backoff::new();
    // What a migration setup of this session set, so that a QEMU refusing the state names both sides.
    let note = client.note().map(|n| format!(" ({n})")).unwrap_or_default();
    let with_note = |e: QmpError| HostError::Qmp(QmpError(format!("{e}{note}")));
    let mut woken = Woken::First;
    let mut evented = None;
    let mut queries = 0u32;
    loop {
        let seen = client.events_received();
        let reply = client.execute(command, &json!({})).map_err(with_note)?;
        queries += 1;
        let value = reply.get(field).and_then(Value::as_str).unwrap_or("");
        if value == until {
            let (ended_on, event) = match woken {
                Woken::First => (WaitEnd::FirstQuery, None),
                Woken::Poll => (WaitEnd::Poll, None),
                Woken::Event(name) => (WaitEnd::Event, Some(name)),
            };
            return Ok(ActionOutput::Waited {
                reply,
                ended_on,
                event,
                queries,
                ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
        failed(client, command, field, until, value, &reply, &note)?;
        let now = Instant::now();
        if now >= deadline {
            return Err(HostError::Timeout(format!(
                "{command}: {field} still \"{value}\" after {timeout_ms} ms, waiting for \"{until}\""
            )));
        }
        // Asked once, after the first query missed: a wait that ends at once costs nothing more.
        let evented = match evented {
            Some(known) => known,
            None => *evented.insert(announced(client, command, until).map_err(with_note)?),
        };
        // An event that came while kup was asking (with its reply, or with the capabilities'): it may announce a
        // change the reply in hand does not show yet, so ask again at once rather than wait for the next one.
        if client.events_received() != seen {
            woken = Woken::Event(client.last_event().unwrap_or("?").to_owned());
            continue;
        }
        let pause = if evented { SLOW_POLL } else { backoff.next() };
        woken = match client
            .next_event(pause.min(deadline - now))
            .map_err(with_note)?
        {
            Some(message) => Woken::Event(
                message
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
            ),
            None => Woken::Poll,
        };
    }
}

/// The error for a state QEMU will not leave for `until`: a failed load, a failed or cancelled migration, a
/// guest that panicked or shut down.
fn failed(
    client: &mut QmpClient,
    command: &str,
    field: &str,
    until: &str,
    value: &str,
    reply: &Value,
    note: &str,
) -> Result<(), HostError> {
    // A QEMU that keeps running after a failed load (`exit-on-error` off) stays `inmigrate`: its migration
    // status says it failed, and why, in QEMU's own words.
    if command == "query-status" && value == "inmigrate" {
        let migration = client
            .execute("query-migrate", &json!({}))
            .map_err(|e| HostError::Qmp(QmpError(format!("{e}{note}"))))?;
        if migration.get("status").and_then(Value::as_str) == Some("failed") {
            let why = migration
                .get("error-desc")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            return Err(HostError::check(format!(
                "QEMU could not load the state: {why}{note}; it was left running, paused in `inmigrate` \
                 with nothing loaded (a retry of this restore quits it first)"
            )));
        }
    }
    if matches!(
        value,
        "failed" | "cancelled" | "internal-error" | "guest-panicked" | "shutdown"
    ) {
        let why = reply
            .get("error-desc")
            .and_then(Value::as_str)
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        // QEMU reports a state file it cannot write only as a broken pipe to `cat`.
        let hint = if command == "query-migrate" && why.contains("Broken pipe") {
            " (the state file could not be written: does its directory exist, is it writable, is \
             the disk full?)"
        } else {
            ""
        };
        return Err(HostError::check(format!(
            "{command}: {field} is \"{value}\", waiting for \"{until}\"{why}{hint}{note}"
        )));
    }
    Ok(())
}
