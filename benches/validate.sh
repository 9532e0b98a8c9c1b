#!/usr/bin/env bash
# Benchmark of `kup plan validate` on generated plans (not a timed test): see docs/benchmarks.md.
#
#   benches/validate.sh [DIR] [COUNT] [SEED]      (defaults: /tmp/kup-bench 10000 1)
#
# Builds kup and examples/gen_plans in release mode, generates COUNT plans into DIR (replacing it), checks that the
# plans meant to be valid validate and the others report their deliberate error, then times validation: 5 runs
# with hyperfine (1 warm-up) when installed, else bash `time`. Prints the machine and the median.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/kup-bench}
count=${2:-10000}
seed=${3:-1}
target=${CARGO_TARGET_DIR:-target}

cargo build --release --quiet --bin kup --example gen_plans
kup="$target/release/kup"
rm -rf "$dir"
"$target/release/examples/gen_plans" "$dir" "$count" "$seed"

# validate exits 1 because some plans are invalid on purpose.
"$kup" plan validate --format json "$dir" > "$dir.json" || [ $? -eq 1 ]
python3 benches/check_plans.py "$dir" < "$dir.json"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kup $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+dirty')"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
command=("$kup" plan validate --format json "$dir")
if command -v hyperfine > /dev/null; then
    hyperfine --warmup 1 --runs 5 --ignore-failure --export-json "$dir.timing.json" \
        "${command[*]} > /dev/null"
    python3 - "$dir.timing.json" "$count" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
count = int(sys.argv[2])
print(f"median {r['median']:.3f} s wall ({count / r['median']:.0f} plans/s), "
      f"mean user {r['user']:.3f} s ({count / r['user']:.0f} plans per CPU-second)")
PY
else
    "${command[@]}" > /dev/null || true  # warm the page cache
    for run in 1 2 3 4 5; do
        start=$(date +%s.%N)
        "${command[@]}" > /dev/null || true
        echo "$(date +%s.%N) - $start" | bc
    done | sort -n | sed -n 3p | awk -v n="$count" '{ printf "median %.3f s wall (%.0f plans/s)\n", $1, n / $1 }'
fi
