#!/usr/bin/env bash
# Builds every sample agent in release for wasm32-unknown-unknown and copies the modules,
# with the contract tests of `processor`, to caxton-cli/samples/ (or to the folder given as
# the first argument): the `caxton` command embeds them for `caxton demo`, so they live in
# its package. The contract tests are written in processor/contract_tests.json, next to the
# agent; caxton-cli/samples/processor_contract_tests.json is the copy this script makes.
#
# The output is reproducible: the sources are built from a copy at a fixed path (cargo
# hashes the absolute path of a path dependency outside the workspace, here the SDK, into
# every symbol, which changes code layout), paths of the cargo home and the target folder
# are remapped to fixed names, symbols are stripped and the lock file is enforced, so the
# same toolchain (caxton-cli/samples/rustc-version.txt) gives the same bytes from any
# checkout location and any CARGO_TARGET_DIR. examples/tests/agents_reproducible.rs checks
# that, and that the committed copy of the contract tests equals its source.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repository="$(cd "$here/../.." && pwd)"
out="${1:-$repository/caxton-cli/samples}"
target_triple=wasm32-unknown-unknown
checkout=/tmp/caxton-agents-build

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
mkdir -p "$CARGO_TARGET_DIR" "$out"
target_dir="$(cd "$CARGO_TARGET_DIR" && pwd)"
out="$(cd "$out" && pwd)"

# One build at a time uses the fixed copy: the repository's sources (the SDK inherits
# from the root workspace), without history or build output.
exec 9>"$checkout.lock"
flock 9
rm -rf "$checkout"
mkdir -p "$checkout"
tar -C "$repository" --exclude=./.git --exclude=./target --exclude=./fuzz/target \
  --exclude=./examples/agents/target --exclude=./caxton-cli/samples -cf - . |
  tar -C "$checkout" -xf -
cargo_home="${CARGO_HOME:-$HOME/.cargo}"

if ! rustup target list --installed 2>/dev/null | grep -qx "$target_triple"; then
  echo "installing the $target_triple target" >&2
  rustup target add "$target_triple"
fi

# Later prefixes win when several match, so the most specific paths come last.
export RUSTFLAGS="--remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$checkout=/caxton --remap-path-prefix=$target_dir=/target"
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS

cd "$checkout/examples/agents"
build() {
  local package="$1" features="$2" name="$3"
  cargo build --quiet --locked --release --target "$target_triple" -p "$package" \
    ${features:+--features "$features"}
  # The linker marks its output executable; a module is data.
  install -m 0644 "$target_dir/$target_triple/release/$package.wasm" "$out/$name.wasm"
  echo "built $out/$name.wasm ($(wc -c < "$out/$name.wasm") bytes)"
}

build processor "" processor_v1
build processor v2 processor_v2
build processor v3 processor_v3
build chat "" chat_v1
build chat v2 chat_v2

install -m 0644 "$here/processor/contract_tests.json" "$out/processor_contract_tests.json"
rustc --version > "$out/rustc-version.txt"
