//! `kup plan init` against real QEMU 7.2 guests from the lab: one with shared RAM (a `share=on` file), one with
//! anonymous RAM and one whose `share=on` file is on tmpfs (copied: a kexec empties tmpfs), daemonized by QEMU, and one transient process the test runs itself (no `-daemonize`, QMP on
//! a `-chardev` control monitor, a private RAM file). The plan it writes must name each guest's socket, memory mode
//! and restart argv, pass `kup plan validate`, and its restart argv must really start the transient guest again,
//! waiting for its state. `--out` writes 0600 and replaces a file only with `--force`.
//!
//! Needs `lab/setup` (`KUP_LAB_DIR` when the lab is elsewhere); other QEMUs running on the host appear in the plan
//! too and are not looked at.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::Kup;
use support::guests::{self, Guest, Lab, Qemu, Ram, Spec};

/// A QEMU the test started as its own child, not daemonized; killed when dropped.
struct Transient {
    child: Child,
    argv: Vec<String>,
    qmp: PathBuf,
}

impl Transient {
    fn start(lab: &Lab, dir: &Path) -> Transient {
        std::fs::create_dir_all(dir).unwrap();
        let qmp = dir.join("qmp.sock");
        let mut argv = lab.qemu_argv(Qemu::V7);
        argv.extend(
            [
                "-name",
                "init-transient",
                "-accel",
                "tcg",
                "-m",
                "128M",
                "-display",
                "none",
                "-nic",
                "none",
                "-S",
                "-chardev",
                &format!("socket,id=qmp0,path={},server=on,wait=off", qmp.display()),
                "-mon",
                "chardev=qmp0,mode=control",
                "-object",
                &format!(
                    "memory-backend-file,id=mem,size=128M,mem-path={},share=off",
                    dir.join("ram").display()
                ),
                "-machine",
                "memory-backend=mem",
            ]
            .map(String::from),
        );
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&qmp);
        Transient { child, argv, qmp }
    }
}

impl Drop for Transient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(socket: &Path) {
    let started = Instant::now();
    while guests::query_status(socket).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no QMP on {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The plan's `[[vm]]` table whose `qmp` is `socket`.
fn vm<'a>(plan: &'a toml::Table, socket: &Path) -> &'a toml::Table {
    plan["vm"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(toml::Value::as_table)
        .find(|t| t.get("qmp").and_then(toml::Value::as_str) == Some(&socket.display().to_string()))
        .unwrap_or_else(|| panic!("no [[vm]] with qmp = {}", socket.display()))
}

fn strings(value: &toml::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// `argv` with the `env` assignments sorted: the order QEMU's environment lists them in is not the order they
/// were given.
fn normal(argv: &[String]) -> Vec<String> {
    let mut out = argv.to_vec();
    if out.first().map(String::as_str) == Some("env") {
        let end = out.iter().skip(1).position(|a| !a.contains('=')).unwrap() + 1;
        out[1..end].sort();
    }
    out
}

#[test]
fn init_finds_each_guest_with_its_socket_memory_and_restart_and_the_plan_validates() {
    let lab = Lab::get();
    let (work, tmp) = guests::bench_dirs(&lab, "plan-init-");
    let spec = |name: &str, ram| Spec {
        boot: false,
        mem_mib: 128,
        extra: vec!["-name".into(), name.into()],
        ..Spec::new(name, ram)
    };
    let shared = Guest::start(
        &lab,
        &work,
        &tmp.path().join("shared"),
        spec("init-shared", Ram::SharedFile),
    );
    let copied = Guest::start(
        &lab,
        &work,
        &tmp.path().join("copy"),
        spec("init-copy", Ram::Anonymous),
    );
    let on_tmpfs = Guest::start(
        &lab,
        &work,
        &tmp.path().join("tmpfs"),
        spec("init-tmpfs", Ram::SharedTmpfs),
    );
    let transient = Transient::start(&lab, &tmp.path().join("transient"));
    wait_for(&on_tmpfs.qmp);
    wait_for(&shared.qmp);
    wait_for(&copied.qmp);

    let out = tmp.path().join("plan.toml");
    let init_into = |out: &Path| {
        Kup::new()
            .args(["plan", "init", "--kernel"])
            .arg(&lab.kernel)
            .arg("--out")
            .arg(out)
            .run()
    };
    init_into(&out)
        .success()
        .stderr_has(format!("wrote {}", out.display()));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the plan file's mode");
    let text = std::fs::read_to_string(&out).unwrap();
    let plan: toml::Table = text.parse().unwrap();

    let release = std::fs::read_to_string(lab.dir.join("kernel/version")).unwrap();
    assert_eq!(
        plan["kernel"]["image"].as_str(),
        Some(lab.kernel.to_str().unwrap())
    );
    assert_eq!(plan["kernel"]["version"].as_str(), Some(release.trim()));
    assert_eq!(plan["kernel"]["cmdline"]["inherit"].as_bool(), Some(true));

    let s = vm(&plan, &shared.qmp);
    assert_eq!(s["name"].as_str(), Some("init-shared"));
    assert_eq!(s["memory"].as_str(), Some("shared"), "{text}");
    assert_eq!(s["memory_size"].as_str(), Some("128MiB"));
    assert_eq!(
        normal(&strings(&s["restart"])),
        normal(&shared.restart_argv())
    );

    let c = vm(&plan, &copied.qmp);
    assert_eq!(c["name"].as_str(), Some("init-copy"));
    assert_eq!(c["memory"].as_str(), Some("copy"));
    assert_eq!(
        normal(&strings(&c["restart"])),
        normal(&copied.restart_argv())
    );

    // share=on, but on /dev/shm: a kexec empties tmpfs, so its RAM must be copied.
    let v = vm(&plan, &on_tmpfs.qmp);
    assert_eq!(v["memory"].as_str(), Some("copy"), "{text}");
    assert!(text.contains(&format!(
        "its share=on RAM file {} is on tmpfs",
        on_tmpfs.ram_file.display()
    )));

    let t = vm(&plan, &transient.qmp);
    assert_eq!(t["name"].as_str(), Some("init-transient"));
    assert_eq!(
        t["memory"].as_str(),
        Some("copy"),
        "a share=off file is copied"
    );
    let restart = strings(&t["restart"]);
    let mut expected = transient.argv.clone();
    expected.extend(["-daemonize", "-incoming", "defer"].map(String::from));
    assert_eq!(normal(&restart), normal(&expected));

    Kup::new()
        .args(["plan", "validate"])
        .arg(&out)
        .run()
        .success()
        .stderr_has("valid");

    // The file is kept without --force and replaced with it.
    std::fs::write(&out, "mine").unwrap();
    init_into(&out).status(2).stderr_has("--force");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine");
    // A bare file name, as an operator types it: replaced beside itself, in the working directory.
    Kup::new()
        .current_dir(tmp.path())
        .args(["plan", "init", "--force", "--kernel"])
        .arg(&lab.kernel)
        .args(["--out", "plan.toml"])
        .run()
        .success();
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("init-transient")
    );

    // The restart argv is real: the transient guest, ended, starts again from it and waits for its state.
    drop(transient);
    let socket = tmp.path().join("transient/qmp.sock");
    let _ = std::fs::remove_file(&socket);
    let status = Command::new(&restart[0])
        .args(&restart[1..])
        .status()
        .unwrap();
    assert!(status.success(), "{restart:?}");
    wait_for(&socket);
    let status = guests::query_status(&socket).unwrap();
    assert_eq!(status["status"], "inmigrate", "{status}");
    let mut qmp = kup::host::qmp::QmpClient::connect(&socket).unwrap();
    qmp.execute("qmp_capabilities", &serde_json::json!({}))
        .unwrap();
    let _ = qmp.execute("quit", &serde_json::json!({}));
}
