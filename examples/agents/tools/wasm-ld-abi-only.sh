#!/usr/bin/env bash
# rust-lld for Caxton agents: drops the `--export=__heap_base` and `--export=__data_end`
# arguments rustc adds on wasm32-unknown-unknown (before Rust 1.97), so a module exports only
# what its code marks for export. Everything else goes to rust-lld unchanged.
set -euo pipefail
host="$(rustc -vV | sed -n 's/^host: //p')"
lld="$(rustc --print sysroot)/lib/rustlib/$host/bin/rust-lld"
args=()
for arg in "$@"; do
  case "$arg" in
    --export=__heap_base | --export=__data_end) ;;
    *) args+=("$arg") ;;
  esac
done
exec "$lld" "${args[@]}"
