//! The kernel-log parser: any bytes as the log `kup boot-time` reads (dmesg in every format, /dev/kmsg, journalctl,
//! serial captures), through the analysis and both of the command's outputs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let report = kup::boot::analyse(data);
    let _ = kup::boot::human(&report, false);
    let _ = serde_json::to_string(&report).expect("a boot report always serialises");
});
