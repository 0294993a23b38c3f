#!/usr/bin/env python3
"""The minimum supported Rust version, checked without that toolchain.

This machine has one Rust toolchain (no other can be fetched), so the MSRV
is checked from both sides it can be read from:
- our code: clippy's `incompatible_msrv` lint (on by default, denied in
  CI) flags any std API newer than `rust-version` in Cargo.toml;
- our dependencies: for each feature set, every crate `cargo tree` resolves
  for it (normal and build dependencies, Cargo.lock's versions) declares
  a `rust-version` no newer than the one we document for that feature set.
"""
import json, re, subprocess, sys, tomllib

declared = tomllib.load(open("Cargo.toml", "rb"))["package"]["rust-version"]
# What README.md documents: the crate's rust-version, and the redis
# feature's own (the redis crate needs more).
documented = {"default": declared, "tls": declared, "metrics": declared, "redis": "1.88"}

readme = open("README.md").read()
for feature, version in documented.items():
    if version not in readme:
        sys.exit(f"README.md does not mention Rust {version} ({feature})")

def key(v):
    parts = [int(x) for x in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1"]))
rust_version = {(p["name"], p["version"]): p.get("rust_version") for p in meta["packages"]}

failed = False
for feature, allowed in documented.items():
    flags = [] if feature == "default" else ["--features", feature]
    tree = subprocess.check_output(
        ["cargo", "tree", "-p", "wspool", "-e", "normal,build", "--prefix", "none",
         "--target", "x86_64-unknown-linux-gnu"] + flags, text=True)
    needs = []
    for line in set(tree.splitlines()):
        m = re.match(r"(\S+) v(\S+)", line)
        if m and rust_version.get((m[1], m[2])):
            needs.append((key(rust_version[(m[1], m[2])]), m[1], rust_version[(m[1], m[2])]))
    top = max(needs)
    ok = top[0] <= key(allowed)
    failed |= not ok
    print(f"{feature:8} documented {allowed:5} needs {top[2]:5} ({top[1]}) {'ok' if ok else 'TOO NEW'}")
sys.exit(1 if failed else 0)
