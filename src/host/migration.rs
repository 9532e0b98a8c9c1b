//! Setting up a guest's migration by what its QEMU is and offers: the version (`query-version`), the capabilities
//! (`query-migrate-capabilities`) and parameters (`query-migrate-parameters`) it lists, and whether the state
//! directory takes `O_DIRECT`. The choice itself is [`crate::action::choose`], the same function the dry-run
//! describes with. The save's choice is written beside the state file, and the restore after the kexec sets
//! exactly that on the new QEMU — or refuses, naming both QEMUs, before QEMU would exit on a stream it cannot load.

use super::HostError;
use super::journal_files;
use super::qmp::{QmpClient, QmpError};
use crate::action::{
    ActionOutput, DEFAULT_MAX_SAVE_CHANNELS, MigrationBefore, MigrationChoice, MigrationMemory,
    MigrationSetup, MigrationSide, QemuOffer, choose, setup_commands, undo_commands,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What the QEMU behind `client` offers for a state file at `state`.
pub fn offer(client: &mut QmpClient, state: &Path) -> Result<QemuOffer, HostError> {
    Ok(query(client, state)?.0)
}

/// What `choice` changes on a QEMU whose capabilities and parameters are `caps` and `params` now.
fn before(choice: &MigrationChoice, caps: &Value, params: &Value) -> MigrationBefore {
    let on = |name: &str| {
        caps.as_array().into_iter().flatten().any(|c| {
            c.get("capability").and_then(Value::as_str) == Some(name)
                && c.get("state").and_then(Value::as_bool) == Some(true)
        })
    };
    let mut keys: Vec<&str> = choice.parameters.keys().map(String::as_str).collect();
    if choice.mode.is_some() {
        keys.push("mode");
    }
    MigrationBefore {
        capabilities_off: choice
            .capabilities
            .iter()
            .filter(|c| !on(c))
            .cloned()
            .collect(),
        parameters: keys
            .into_iter()
            .filter_map(|k| params.get(k).map(|v| (k.to_owned(), v.clone())))
            .collect(),
    }
}

/// The offer, and the replies of `query-migrate-capabilities` and `query-migrate-parameters` it was read from.
fn query(client: &mut QmpClient, state: &Path) -> Result<(QemuOffer, Value, Value), HostError> {
    let version = client.version()?;
    let caps = client.execute("query-migrate-capabilities", &json!({}))?;
    let capabilities: BTreeSet<String> = caps
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("capability").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let params = client.execute("query-migrate-parameters", &json!({}))?;
    let parameters: BTreeSet<String> = params
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys().cloned())
        .collect();
    let dir = state
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let offer = QemuOffer {
        version: (version.major, version.minor, version.micro),
        capabilities,
        parameters,
        direct_io: takes_direct_io(dir),
        file_path: !state.to_string_lossy().contains(','),
    };
    Ok((offer, caps, params))
}

/// Whether a file created in `dir` can be opened with `O_DIRECT` (tmpfs before 6.6, some FUSE and network file
/// systems refuse it); the probe file is removed again.
pub fn takes_direct_io(dir: &Path) -> bool {
    let probe = dir.join(format!(".kup-direct-io-probe.{}", std::process::id()));
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// The host's cores, at most [`DEFAULT_MAX_SAVE_CHANNELS`].
fn default_channels() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores)
        .unwrap_or(u32::MAX)
        .clamp(1, DEFAULT_MAX_SAVE_CHANNELS)
}

/// Sends the commands that set `choice`.
fn apply(client: &mut QmpClient, choice: &MigrationChoice) -> Result<(), QmpError> {
    for (command, args) in setup_commands(choice) {
        client.execute(command, &args)?;
    }
    Ok(())
}

fn summary(choice: &MigrationChoice) -> String {
    let mut parts = Vec::new();
    if let Some(mode) = &choice.mode {
        parts.push(format!("mode {mode}"));
    }
    if !choice.capabilities.is_empty() {
        parts.push(format!("capabilities {}", choice.capabilities.join(", ")));
    }
    let params = choice.distinctive_parameters();
    if !params.is_empty() {
        parts.push(format!("parameters {}", params.join(", ")));
    }
    if parts.is_empty() {
        parts.push("no mode or capability".into());
    }
    format!("{} via {}:", parts.join("; "), choice.uri)
}

/// Performs [`crate::action::Action::MigrationSetup`].
#[allow(clippy::too_many_arguments)]
pub fn setup(client: &mut QmpClient, setup: &MigrationSetup) -> Result<ActionOutput, HostError> {
    let MigrationSetup {
        side,
        memory,
        channels,
        max_bandwidth,
        ref state,
        ref record,
        ..
    } = *setup;
    let (state, record) = (state.as_path(), record.as_path());
    let socket = client.socket().to_owned();
    let choice = match side {
        MigrationSide::Undo => return undo(client, record),
        MigrationSide::Save => {
            let (offer, caps_now, params_now) = query(client, state)?;
            let channels = channels.unwrap_or_else(default_channels);
            let mut choice = choose(memory, &offer, channels, max_bandwidth)
                .map_err(|why| HostError::check(format!("QMP {socket}: {why}")))?;
            choice.before = Some(before(&choice, &caps_now, &params_now));
            apply(client, &choice)?;
            // Durable before the guest pauses: the restore after the kexec must set the same.
            let text = serde_json::to_vec_pretty(&choice).unwrap_or_default();
            journal_files::write_atomic(record, &text)
                .map_err(|e| HostError::io(format!("cannot write {}", record.display()), e))?;
            choice
        }
        MigrationSide::Restore => {
            let (offer, _, _) = query(client, state)?;
            let choice = restore_choice(&socket, memory, &offer, record)?;
            apply(client, &choice)?;
            choice
        }
    };
    let note = match &choice.saved_by {
        Some(saved_by) => format!(
            "the state was saved by QEMU {saved_by} and this QEMU {} was given the same: {}",
            choice.qemu,
            summary(&choice).trim_end_matches(':')
        ),
        None => format!(
            "QEMU {} was given {}",
            choice.qemu,
            summary(&choice).trim_end_matches(':')
        ),
    };
    client.set_note(note);
    Ok(ActionOutput::MigrationSetup(choice))
}

fn memory_name(memory: MigrationMemory) -> &'static str {
    match memory {
        MigrationMemory::Shared => "shared",
        MigrationMemory::Copy => "copy",
    }
}

/// A rollback's half of a save's setup: the record's `before` set back on the QEMU that saved.
fn undo(client: &mut QmpClient, record: &Path) -> Result<ActionOutput, HostError> {
    let saved: MigrationChoice = match std::fs::read(record) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            HostError::check(format!(
                "{} is not a migration record kup wrote ({e}): check the guest's migration settings by hand \
                 (query-migrate-capabilities, query-migrate-parameters)",
                record.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ActionOutput::MigrationReset { reset: Vec::new() });
        }
        Err(e) => return Err(HostError::io(format!("cannot read {}", record.display()), e)),
    };
    let before = saved.before.unwrap_or_default();
    let commands = undo_commands(&before);
    if !commands.is_empty() {
        wait_migration_ended(client)?;
    }
    for (command, args) in commands {
        client.execute(command, &args)?;
    }
    let mut reset = before.capabilities_off;
    reset.extend(before.parameters.into_keys());
    Ok(ActionOutput::MigrationReset { reset })
}

/// How long a cancelled migration may take to end (its thread stops at its next chunk).
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until no migration runs: capabilities (and some parameters) cannot change while one does, and a `migrate_cancel` (the save's
/// undo, just before) only asks the migration thread to stop.
fn wait_migration_ended(client: &mut QmpClient) -> Result<(), HostError> {
    let started = std::time::Instant::now();
    loop {
        let reply = client.execute("query-migrate", &json!({}))?;
        let status = reply
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("none");
        if matches!(status, "none" | "completed" | "failed" | "cancelled") {
            return Ok(());
        }
        if started.elapsed() > CANCEL_TIMEOUT {
            return Err(HostError::check(format!(
                "QMP {}: the migration is still {status} {} s after it was cancelled: its capabilities cannot                  be set back until it ends",
                client.socket(),
                CANCEL_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What the restore sets: exactly the record's choice, when this QEMU offers all of it.
fn restore_choice(
    socket: &str,
    memory: MigrationMemory,
    offer: &QemuOffer,
    record: &Path,
) -> Result<MigrationChoice, HostError> {
    let this = format!(
        "{}.{}.{}",
        offer.version.0, offer.version.1, offer.version.2
    );
    let saved: MigrationChoice = match std::fs::read(record) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            HostError::check(format!(
                "{} is not a migration record kup wrote ({e}): restore by hand, or remove it to restore as kup did \
                 before records existed",
                record.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A state from a kup without records: what that kup set (x-ignore-shared for shared RAM only).
            let mut legacy = MigrationChoice {
                qemu: this,
                memory,
                mode: None,
                capabilities: Vec::new(),
                parameters: Default::default(),
                uri: if offer.file_uri() { "file" } else { "exec" }.to_owned(),
                saved_by: None,
                before: None,
            };
            if memory == MigrationMemory::Shared {
                legacy.capabilities.push("x-ignore-shared".into());
            }
            return Ok(legacy);
        }
        Err(e) => return Err(HostError::io(format!("cannot read {}", record.display()), e)),
    };
    let both = |lack: String| {
        HostError::check(format!(
            "the state beside {} was saved by QEMU {} with {} but the new QEMU {this} behind {socket} {lack}: \
             restart the guest with QEMU {} (or a newer one offering the same), or roll the host back",
            record.display(),
            saved.qemu,
            summary(&saved).trim_end_matches(':'),
            saved.qemu
        ))
    };
    if saved.memory != memory {
        return Err(HostError::check(format!(
            "{} says the state was saved with memory = \"{}\", but the plan now says \"{}\": restore with the plan \
             that saved it",
            record.display(),
            memory_name(saved.memory),
            memory_name(memory)
        )));
    }
    if saved.mode.is_some() && !offer.parameters.contains("mode") {
        return Err(both(
            "has no migration parameter `mode` (QEMU >= 8.2)".to_owned(),
        ));
    }
    if let Some(cap) = saved
        .capabilities
        .iter()
        .find(|c| !offer.capabilities.contains(*c))
    {
        return Err(both(format!("offers no capability {cap}")));
    }
    if let Some(param) = saved
        .parameters
        .keys()
        .find(|p| !offer.parameters.contains(*p))
    {
        return Err(both(format!("has no migration parameter {param}")));
    }
    if saved.uri == "file"
        && saved.capabilities.iter().any(|c| c == "mapped-ram")
        && !offer.file_uri()
    {
        return Err(both("cannot read a file: URI (QEMU >= 8.2)".to_owned()));
    }
    Ok(MigrationChoice {
        qemu: this,
        uri: if offer.file_uri() { "file" } else { "exec" }.to_owned(),
        saved_by: Some(saved.qemu.clone()),
        before: None,
        ..saved
    })
}

/// Performs [`crate::action::Action::CheckMigratable`]: `query-migrate`'s `blocked-reasons`, in the mode the save
/// will use (QEMU keeps blockers per mode since 8.2); the mode is set back as it was.
pub fn check_migratable(
    client: &mut QmpClient,
    memory: MigrationMemory,
) -> Result<ActionOutput, HostError> {
    let socket = client.socket().to_owned();
    let version = client.version()?;
    let params = client.execute("query-migrate-parameters", &json!({}))?;
    let old_mode = params
        .get("mode")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let cpr = memory == MigrationMemory::Shared
        && (version.major, version.minor) >= (8, 2)
        && old_mode.is_some();
    let mode = if cpr {
        client.execute("migrate-set-parameters", &json!({"mode": "cpr-reboot"}))?;
        Some("cpr-reboot".to_owned())
    } else {
        old_mode.clone()
    };
    let info = client.execute("query-migrate", &json!({}));
    if cpr && let Some(old) = &old_mode {
        client.execute("migrate-set-parameters", &json!({ "mode": old }))?;
    }
    let info = info?;
    let reasons: Vec<String> = info
        .get("blocked-reasons")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if !reasons.is_empty() {
        return Err(HostError::check(format!(
            "the guest behind {socket} cannot be saved: QEMU {version} refuses to migrate it{}: {}; remove or \
             unplug what blocks it (device_del), or leave this guest out of the plan",
            mode.as_deref()
                .map(|m| format!(" in mode {m}"))
                .unwrap_or_default(),
            reasons.join("; ")
        )));
    }
    Ok(ActionOutput::Migratable {
        qemu: version.to_string(),
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(version: (u64, u64, u64), caps: &[&str], params: &[&str]) -> QemuOffer {
        QemuOffer {
            version,
            capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
            parameters: params.iter().map(|p| (*p).to_owned()).collect(),
            direct_io: true,
            file_path: true,
        }
    }

    #[test]
    fn the_restore_sets_the_record_or_refuses_naming_both_qemus() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("vmstate.migration");
        let v10 = offer(
            (10, 0, 2),
            &["x-ignore-shared", "mapped-ram", "multifd"],
            &["mode", "max-bandwidth", "multifd-channels", "direct-io"],
        );
        let v7 = offer(
            (7, 2, 22),
            &["x-ignore-shared", "multifd"],
            &["max-bandwidth", "multifd-channels"],
        );
        // No record: what kup set before records existed.
        let legacy = restore_choice("s", MigrationMemory::Shared, &v10, &record).unwrap();
        assert_eq!(legacy.capabilities, ["x-ignore-shared"]);
        assert_eq!((legacy.mode, legacy.saved_by), (None, None));

        let saved = choose(MigrationMemory::Copy, &v10, 3, 1).unwrap();
        std::fs::write(&record, serde_json::to_vec(&saved).unwrap()).unwrap();
        let again = restore_choice("s", MigrationMemory::Copy, &v10, &record).unwrap();
        assert_eq!(again.saved_by.as_deref(), Some("10.0.2"));
        assert_eq!(
            (&again.capabilities, &again.parameters),
            (&saved.capabilities, &saved.parameters)
        );
        let e = restore_choice("/run/q.sock", MigrationMemory::Copy, &v7, &record)
            .unwrap_err()
            .to_string();
        for part in [
            "saved by QEMU 10.0.2",
            "new QEMU 7.2.22",
            "/run/q.sock",
            "mapped-ram",
        ] {
            assert!(e.contains(part), "{e}");
        }
        let e = restore_choice("s", MigrationMemory::Shared, &v10, &record)
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory = \"copy\""), "{e}");
        std::fs::write(&record, b"{not json").unwrap();
        let e = restore_choice("s", MigrationMemory::Copy, &v10, &record)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a migration record"), "{e}");
    }
}

#[cfg(test)]
mod before_tests {
    use super::*;

    #[test]
    fn before_keeps_what_the_setup_changes_as_it_was() {
        let v10 = QemuOffer {
            version: (10, 0, 2),
            capabilities: ["x-ignore-shared", "mapped-ram", "multifd"]
                .map(String::from)
                .into(),
            parameters: ["mode", "max-bandwidth"].map(String::from).into(),
            direct_io: false,
            file_path: true,
        };
        let choice = choose(MigrationMemory::Shared, &v10, 1, 5).unwrap();
        let caps = json!([{"capability": "x-ignore-shared", "state": false}, {"capability": "multifd", "state": true}]);
        let params = json!({"mode": "normal", "max-bandwidth": 134217728, "tls-creds": ""});
        let b = before(&choice, &caps, &params);
        assert_eq!(b.capabilities_off, ["x-ignore-shared"]);
        assert_eq!(
            serde_json::to_value(&b.parameters).unwrap(),
            json!({"mode": "normal", "max-bandwidth": 134217728})
        );
        let undo: Vec<String> = undo_commands(&b)
            .iter()
            .map(|(c, a)| crate::action::qmp_message(c, a))
            .collect();
        assert_eq!(
            undo,
            [
                r#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":false}]}}"#,
                r#"{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":134217728,"mode":"normal"}}"#,
            ]
        );
    }
}
