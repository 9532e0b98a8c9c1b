//! How a guest's state travels, by QEMU version: one pure decision ([`choose`]) that the host applies to what a
//! real QEMU reports and that the dry-run applies to each version range, so review reads exactly what every QEMU
//! will be given.
//!
//! - shared RAM: `x-ignore-shared` (the RAM stays in its file); on QEMU ≥ 8.2 also `mode = cpr-reboot` (CPR.rst).
//! - copied RAM: on QEMU ≥ 9.0 `mapped-ram` + `multifd` with `multifd-channels` (fixed-offset pages written by
//!   parallel channels, mapped-ram.rst), plus `direct-io` (QEMU ≥ 9.1) when the state directory takes `O_DIRECT`.
//! - every save: `events` (QEMU announces each migration state change, so kup waits on `MIGRATION` events instead
//!   of polling `query-migrate`), `max-bandwidth` (7.2 caps migration at 128 MiB/s); the state through `file:` on QEMU ≥ 8.2,
//!   else `exec:cat` (no `file:` URI before 8.2; a path with a comma too, as `file:` takes options after one).

use super::{MigrationChoice, MigrationMemory, qmp_message};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// What one QEMU offers, as far as the choice goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuOffer {
    /// `major.minor.micro`.
    pub version: (u64, u64, u64),
    /// The names `query-migrate-capabilities` lists.
    pub capabilities: BTreeSet<String>,
    /// The keys of `query-migrate-parameters`.
    pub parameters: BTreeSet<String>,
    /// Whether the state directory accepts `O_DIRECT` (probed on the host).
    pub direct_io: bool,
    /// Whether the state file's path can be a `file:` URI (no comma in it).
    pub file_path: bool,
}

impl QemuOffer {
    fn version_text(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }

    fn at_least(&self, major: u64, minor: u64) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }

    fn has_cap(&self, name: &str) -> bool {
        self.capabilities.contains(name)
    }

    fn has_param(&self, name: &str) -> bool {
        self.parameters.contains(name)
    }

    /// Whether `migrate` / `migrate-incoming` take `file:PATH` here.
    pub fn file_uri(&self) -> bool {
        self.at_least(8, 2) && self.file_path
    }
}

/// What the save sets on `offer` for `memory`, with `channels` multifd channels for copied RAM. An error says what
/// this QEMU lacks.
pub fn choose(
    memory: MigrationMemory,
    offer: &QemuOffer,
    channels: u32,
    max_bandwidth: u64,
) -> Result<MigrationChoice, String> {
    let mut choice = MigrationChoice {
        qemu: offer.version_text(),
        memory,
        mode: None,
        capabilities: Vec::new(),
        parameters: BTreeMap::new(),
        uri: if offer.file_uri() { "file" } else { "exec" }.to_owned(),
        saved_by: None,
        before: None,
    };
    if offer.has_param("max-bandwidth") {
        choice
            .parameters
            .insert("max-bandwidth".into(), Value::from(max_bandwidth));
    }
    match memory {
        MigrationMemory::Shared => {
            if !offer.has_cap("x-ignore-shared") {
                return Err(format!(
                    "QEMU {} offers no x-ignore-shared capability, which memory = \"shared\" needs (QEMU ≥ 4.0)",
                    choice.qemu
                ));
            }
            if offer.at_least(8, 2) && offer.has_param("mode") {
                choice.mode = Some("cpr-reboot".into());
            }
            choice.capabilities.push("x-ignore-shared".into());
        }
        MigrationMemory::Copy => {
            if offer.at_least(9, 0)
                && offer.file_uri()
                && offer.has_cap("mapped-ram")
                && offer.has_cap("multifd")
                && offer.has_param("multifd-channels")
            {
                choice.capabilities.push("mapped-ram".into());
                choice.capabilities.push("multifd".into());
                choice
                    .parameters
                    .insert("multifd-channels".into(), Value::from(channels));
                if offer.direct_io && offer.has_param("direct-io") {
                    choice
                        .parameters
                        .insert("direct-io".into(), Value::from(true));
                }
            }
        }
    }
    // QEMU announces each migration state change (`MIGRATION` events) only when asked: the waits for the save's
    // and the load's end are woken by them instead of polling (QEMU ≥ 2.4).
    if offer.has_cap("events") {
        choice.capabilities.push("events".into());
    }
    Ok(choice)
}

/// `migrate-set-capabilities` turning `names` to `state`, and `migrate-set-parameters` of `parameters`, each only
/// when there is something to set.
fn capabilities_then_parameters(
    out: &mut Vec<(&'static str, Value)>,
    names: &[String],
    state: bool,
    parameters: &std::collections::BTreeMap<String, Value>,
) {
    if !names.is_empty() {
        let caps: Vec<Value> = names
            .iter()
            .map(|c| json!({"capability": c, "state": state}))
            .collect();
        out.push(("migrate-set-capabilities", json!({ "capabilities": caps })));
    }
    if !parameters.is_empty() {
        let params: serde_json::Map<String, Value> = parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.push(("migrate-set-parameters", Value::Object(params)));
    }
}

/// The QMP commands that set `choice`, in order: the mode first (CPR.rst sets it before the capabilities), then
/// the capabilities, then the other parameters.
pub fn setup_commands(choice: &MigrationChoice) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if let Some(mode) = &choice.mode {
        out.push(("migrate-set-parameters", json!({ "mode": mode })));
    }
    capabilities_then_parameters(&mut out, &choice.capabilities, true, &choice.parameters);
    out
}

/// The QMP commands that set back what a save's setup changed: its capabilities off, then the parameters (and the
/// mode) to their earlier values.
pub fn undo_commands(before: &super::MigrationBefore) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    capabilities_then_parameters(
        &mut out,
        &before.capabilities_off,
        false,
        &before.parameters,
    );
    out
}

/// One QEMU of each version range, offering what that range offers, for the dry-run's per-version lines.
fn representative(version: (u64, u64, u64), direct_io: bool) -> QemuOffer {
    let at = |m: u64, n: u64| (version.0, version.1) >= (m, n);
    let mut caps = vec!["x-ignore-shared", "multifd", "events"];
    let mut params = vec!["max-bandwidth", "multifd-channels"];
    if at(8, 2) {
        params.push("mode");
    }
    if at(9, 0) {
        caps.push("mapped-ram");
    }
    if at(9, 1) {
        params.push("direct-io");
    }
    QemuOffer {
        version,
        capabilities: caps.into_iter().map(String::from).collect(),
        parameters: params.into_iter().map(String::from).collect(),
        direct_io,
        file_path: true,
    }
}

/// The dry-run's lines for a save: what each QEMU version range is given.
pub fn describe_save(
    memory: MigrationMemory,
    channels: Option<u32>,
    max_bandwidth: u64,
    dir: &str,
) -> Vec<String> {
    let ranges: &[((u64, u64, u64), &str)] = match memory {
        MigrationMemory::Shared => &[((8, 2, 0), "QEMU >= 8.2"), ((7, 2, 0), "QEMU < 8.2")],
        MigrationMemory::Copy => &[
            ((9, 1, 0), "QEMU >= 9.1"),
            ((9, 0, 0), "QEMU 9.0"),
            ((8, 2, 0), "QEMU 8.2 to 8.x"),
            ((7, 2, 0), "QEMU < 8.2"),
        ],
    };
    ranges
        .iter()
        .filter_map(|(version, range)| {
            let offer = representative(*version, false);
            // 0 stands for "not known before the host says": replaced by words below.
            let choice = choose(memory, &offer, channels.unwrap_or(0), max_bandwidth).ok()?;
            let commands: Vec<String> = setup_commands(&choice)
                .iter()
                .map(|(c, a)| qmp_message(c, a))
                .collect();
            let mut line = format!("on {range}: {}", commands.join(" ")).replace(
                "\"multifd-channels\":0",
                &format!(
                    "\"multifd-channels\":<the host's cores, at most {}>",
                    super::DEFAULT_MAX_SAVE_CHANNELS
                ),
            );
            if choice.capabilities.iter().any(|c| c == "mapped-ram") && offer.has_param("direct-io")
            {
                line.push_str(&format!(
                    ", with \"direct-io\":true among the parameters when {dir} accepts O_DIRECT"
                ));
            }
            line.push_str(if choice.uri == "file" {
                "; state to file:"
            } else {
                "; state through exec:cat"
            });
            Some(line)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(choice: &MigrationChoice) -> Vec<&str> {
        choice.capabilities.iter().map(String::as_str).collect()
    }

    #[test]
    fn each_version_gets_what_it_offers() {
        let shared = |v| choose(MigrationMemory::Shared, &representative(v, true), 4, 1).unwrap();
        let copy = |v| choose(MigrationMemory::Copy, &representative(v, true), 4, 1).unwrap();

        let s7 = shared((7, 2, 22));
        assert_eq!(
            (s7.mode.as_deref(), caps(&s7), s7.uri.as_str()),
            (None, vec!["x-ignore-shared", "events"], "exec")
        );
        let s10 = shared((10, 0, 2));
        assert_eq!(
            (s10.mode.as_deref(), caps(&s10), s10.uri.as_str()),
            (
                Some("cpr-reboot"),
                vec!["x-ignore-shared", "events"],
                "file"
            )
        );

        let c7 = copy((7, 2, 22));
        assert!(caps(&c7) == ["events"] && c7.uri == "exec", "{c7:?}");
        assert_eq!(c7.parameters.keys().collect::<Vec<_>>(), ["max-bandwidth"]);
        let c8 = copy((8, 2, 0));
        assert!(caps(&c8) == ["events"] && c8.uri == "file", "{c8:?}");
        let c90 = copy((9, 0, 0));
        assert_eq!(caps(&c90), ["mapped-ram", "multifd", "events"]);
        assert!(
            !c90.parameters.contains_key("direct-io"),
            "direct-io is 9.1's"
        );
        let c10 = copy((10, 0, 2));
        assert_eq!(c10.parameters["multifd-channels"], 4);
        assert_eq!(c10.parameters["direct-io"], true);
        assert_eq!(c10.mode, None);
    }

    #[test]
    fn without_o_direct_or_file_uri_copied_ram_falls_back() {
        let mut offer = representative((10, 0, 2), false);
        let c = choose(MigrationMemory::Copy, &offer, 2, 1).unwrap();
        assert_eq!(caps(&c), ["mapped-ram", "multifd", "events"]);
        assert!(!c.parameters.contains_key("direct-io"));
        // A comma in the path: exec:cat, so no mapped-ram (it needs a seekable file: URI).
        offer.file_path = false;
        let c = choose(MigrationMemory::Copy, &offer, 2, 1).unwrap();
        assert!(caps(&c) == ["events"] && c.uri == "exec", "{c:?}");
    }

    #[test]
    fn shared_ram_without_x_ignore_shared_is_an_error() {
        let mut offer = representative((10, 0, 2), true);
        offer.capabilities.remove("x-ignore-shared");
        let e = choose(MigrationMemory::Shared, &offer, 1, 1).unwrap_err();
        assert!(e.contains("x-ignore-shared"), "{e}");
    }

    #[test]
    fn commands_set_the_mode_first() {
        let c = choose(
            MigrationMemory::Shared,
            &representative((10, 0, 2), true),
            1,
            7,
        )
        .unwrap();
        let sent: Vec<String> = setup_commands(&c)
            .iter()
            .map(|(c, a)| qmp_message(c, a))
            .collect();
        assert_eq!(
            sent,
            [
                r#"{"execute":"migrate-set-parameters","arguments":{"mode":"cpr-reboot"}}"#,
                r#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-ignore-shared","state":true},{"capability":"events","state":true}]}}"#,
                r#"{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":7}}"#,
            ]
        );
    }
}
