//! The `caxton` command: a thin host over the Caxton crates.
//!
//! Subcommands arrive with the crates they drive: `validate` with `caxton-validate`,
//! `plan` and `simulate` with `caxton-strategies`, `demo` with the sample agents.

use clap::Parser;

/// Host AI agents compiled to WebAssembly and ship new versions of them safely.
#[derive(Debug, Parser)]
#[command(name = "caxton", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
