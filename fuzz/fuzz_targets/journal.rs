//! The journal reader: any bytes as `journal.jsonl`, read the way `kup plan resume`/`status` read it (lossy UTF-8,
//! then `parse`). Every record it accepts must survive being written and read again: resume appends to and re-reads
//! the journal it loaded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(loaded) = kup::exec::journal::parse(&text) else {
        return;
    };
    let _ = kup::exec::journal::has_new_kernel_boot_report(&loaded.records);
    for record in &loaded.records {
        let line = serde_json::to_string(record).expect("a record always serialises") + "\n";
        let again = kup::exec::journal::parse(&line).expect("a record kup wrote reads back");
        assert_eq!(again.records.len(), 1, "one line, one record: {line}");
    }
});
