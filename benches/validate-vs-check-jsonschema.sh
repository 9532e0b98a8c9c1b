#!/usr/bin/env bash
# Benchmark (not a timed test; see docs/benchmarks.md): `kup plan validate` on COUNT generated plans against
# check-jsonschema, the Python JSON Schema validator, on the same files and the same schema, side by side in one
# run. check-jsonschema reads TOML instances itself (by the .toml suffix), so the plans are not converted. It checks
# the schema alone; kup also checks the plans' meaning and builds each one's step graph.
#
#   benches/validate-vs-check-jsonschema.sh [DIR] [COUNT] [SEED] [RUNS]   (defaults: /tmp/kup-bench 10000 1 3)
#
# check-jsonschema is installed into a virtual environment under target/ (never into the system), pinned. With
# KUP=path the kup binary is taken as given and the release gen_plans already built is used. With KUP_BASE=path
# (another build, such as main's) that kup runs too, in the same session, for a before/after. Needs hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/kup-bench}
count=${2:-10000}
seed=${3:-1}
runs=${4:-3}
target=${CARGO_TARGET_DIR:-target}
venv="$target/check-jsonschema-venv"
version=0.39.0

if [ -z "${KUP:-}" ]; then
    cargo build --release --quiet --bin kup --example gen_plans
    KUP="$target/release/kup"
fi
if [ ! -x "$venv/bin/check-jsonschema" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "check-jsonschema==$version"
fi
rm -rf "$dir"
"$target/release/examples/gen_plans" "$dir" "$count" "$seed"
schema=$PWD/schemas/kup-plan.schema.json

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "kup: $KUP ($("$KUP" --version)), check-jsonschema $("$venv/bin/check-jsonschema" --version | awk '{print $NF}'), $(python3 --version)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Both exit 1: some plans are invalid on purpose (hyperfine -i). hyperfine's shell expands the same glob for both,
# in DIR, so both get the same 10 000 short names in the same order.
venv=$(realpath "$venv") KUP=$(realpath "$KUP")
base=()
if [ -n "${KUP_BASE:-}" ]; then
    KUP_BASE=$(realpath "$KUP_BASE")
    echo "kup base: $KUP_BASE"
    base=(-n "base: kup plan validate (every core)" "$KUP_BASE plan validate --format json plan-*.toml > /dev/null"
          -n "base: kup plan validate --jobs 1" "$KUP_BASE plan validate --jobs 1 --format json plan-*.toml > /dev/null")
fi
cd "$dir"
hyperfine --warmup 1 --runs "$runs" -i --export-json "$dir.timing.json" "${base[@]}" \
    -n "kup plan validate (every core)" "$KUP plan validate --format json plan-*.toml > /dev/null" \
    -n "kup plan validate --jobs 1" "$KUP plan validate --jobs 1 --format json plan-*.toml > /dev/null" \
    -n "check-jsonschema" "$venv/bin/check-jsonschema --schemafile $schema plan-*.toml > /dev/null"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$dir.timing.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
base = results[-1]
cpu = lambda r: r['user'] + r['system']
for r in results:
    print(f"{r['command']:38} median {r['median']:8.3f} s  user {r['user']:7.3f} s  sys {r['system']:6.3f} s  "
          f"check-jsonschema / this: {base['median'] / r['median']:6.1f}x wall, {cpu(base) / cpu(r):6.1f}x user+sys")
PY
