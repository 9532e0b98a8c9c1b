#!/usr/bin/env python3
"""Compares `kup plan validate --format json DIR` (stdin) with DIR/manifest.tsv from examples/gen_plans.rs.

Usage: kup plan validate --format json DIR | benches/check_plans.py DIR
Exits 1 when a plan meant to be valid has an error, or a plan meant to be invalid lacks its expected code.
"""
import collections
import json
import os
import sys

directory = sys.argv[1]
expected = {}
with open(os.path.join(directory, "manifest.tsv")) as manifest:
    for line in manifest:
        name, code = line.rstrip("\n").split("\t")
        expected[name] = code

report = json.load(sys.stdin)
valid = invalid = warned = 0
codes = collections.Counter()
problems = []
for plan in report["plans"]:
    name = os.path.basename(plan["file"])
    want = expected.pop(name, None)
    errors = [d["code"] for d in plan["diagnostics"] if d["severity"] == "error"]
    codes.update(d["code"] for d in plan["diagnostics"])
    if plan["valid"]:
        valid += 1
        warned += bool(plan["diagnostics"])
    else:
        invalid += 1
    if want is None:
        problems.append(f"{name}: not in the manifest")
    elif want == "valid" and not plan["valid"]:
        problems.append(f"{name}: meant to be valid, got {errors}")
    elif want != "valid" and want not in errors:
        problems.append(f"{name}: meant to report {want}, got {errors}")
problems += [f"{name}: in the manifest but not validated" for name in expected]

meant_invalid = sum(1 for line in open(os.path.join(directory, "manifest.tsv")) if not line.endswith("\tvalid\n"))
print(f"validated: {valid + invalid} plans; valid: {valid} ({warned} of them with warnings); invalid: {invalid}")
print(f"generator: {meant_invalid} meant to be invalid")
for code, n in sorted(codes.items()):
    print(f"  {n:6} {code}")
for p in problems[:20]:
    print("MISMATCH", p)
sys.exit(1 if problems or invalid != meant_invalid else 0)
