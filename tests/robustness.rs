//! Whatever bytes arrive — a binary, a truncated upload, a half-edited plan — validation answers with diagnostics,
//! never a panic, and every diagnostic position can be rendered.

use proptest::prelude::*;

fn check(bytes: &[u8]) {
    let loaded = kup::check::check("fuzz.toml", bytes);
    let report = &loaded.report;
    let _ = report.render(false, 80);
    for d in &report.diagnostics {
        let _ = report.position(d);
        let _ = kup::commands::validate::github_annotation(report, d);
    }
    if loaded.plan.is_none() {
        assert!(report.has_errors(), "no plan but no error either");
    }
}

fn shipped() -> Vec<Vec<u8>> {
    let mut plans: Vec<_> = std::fs::read_dir("plans")
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    plans.push(std::fs::read("tests/data/many-errors.toml").unwrap());
    plans
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Flip { at: usize, byte: u8 },
    DuplicateLine { line: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), "[\\[\\]{}=\"',. a-z0-9\\n#:-]{1,12}")
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len().max(1);
    match m {
        Mutation::Delete { at, len: n } => {
            let start = at % len;
            let end = (start + n).min(bytes.len());
            if start < end {
                bytes.drain(start..end);
            }
        }
        Mutation::Insert { at, text } => {
            let at = (at % len).min(bytes.len());
            bytes.splice(at..at, text.bytes());
        }
        Mutation::Flip { at, byte } => {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = *byte;
            }
        }
        Mutation::DuplicateLine { line } => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = line % lines.len();
                let mut out: Vec<&str> = lines.clone();
                out.insert(i, lines[i]);
                return out.join("\n").into_bytes();
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&bytes);
    }

    #[test]
    fn mutated_plans_never_panic(
        which in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let plans = shipped();
        let mut bytes = plans[which % plans.len()].clone();
        for m in &mutations {
            bytes = apply(bytes, m);
        }
        check(&bytes);
    }
}
