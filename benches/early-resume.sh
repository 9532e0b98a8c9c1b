#!/usr/bin/env bash
# Benchmark (not a timed test; see docs/benchmarks.md): how long after the new kernel's /init `kup plan resume`
# starts, with two kup binaries side by side — the same systemd lab scenario (lab/scenario/run-systemd: a Debian
# bookworm root file system, systemd as PID 1, a kexec into the lab's new kernel), alternating, RUNS times each.
#
#   benches/early-resume.sh BEFORE_KUP AFTER_KUP [RUNS] [OUTDIR]     (defaults: 1 run, target/lab/runs/early-resume)
#
# Both binaries must be static (lab/scenario/run-systemd --kup: cargo build --release --target
# x86_64-unknown-linux-musl --features fault-injection). The figure is the resume's CLOCK_BOOTTIME at its start
# (`new_kernel_uptime_s`, recorded by resume) less the end of the kernel's `init` phase (its boot report, from the
# kernel log: "Run /lib/systemd/systemd as init process"), both from the journal's `kup plan status --format json`
# that the scenario saves on the disk. Needs KUP_LAB_DIR (or lab/setup's target/lab).
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?BEFORE_KUP}
after=${2:?AFTER_KUP}
runs=${3:-1}
out=${4:-${KUP_LAB_DIR:-target/lab}/runs/early-resume}
mkdir -p "$out"
for run in $(seq "$runs"); do
    for which in before after; do
        kup=$before
        [ "$which" = after ] && kup=$after
        dir="$out/$which-$run"
        rm -rf "$dir"
        lab/scenario/run-systemd --quiet --kup "$kup" "$dir" > "$dir.log" 2>&1 || {
            echo "$which run $run failed: $dir.log" >&2
            exit 1
        }
        lab/readdisk "$dir/disk.img" /var/lib/kup-lab/status.json > "$dir/status.json"
        python3 - "$which" "$run" "$dir/status.json" <<'PY'
import json, sys
which, run, path = sys.argv[1:]
kexec = json.load(open(path))["kexec"]
init = next(p["end_s"] for p in kexec["boot"]["phases"] if p["name"] == "init")
up = kexec["new_kernel_uptime_s"]
print(f"{which:6} run {run}: /init at {init:.3f} s, resume started at {up:.3f} s: init_to_resume {up - init:.3f} s")
PY
    done
done
