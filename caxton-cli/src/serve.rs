//! `caxton serve`: the HTTP API over a host with a durable registry (being written).

use clap::Args;

use crate::output::{CommandResult, Failure};

/// Arguments of `caxton serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {}

/// Runs `caxton serve` until SIGTERM or Ctrl-C.
pub(crate) fn run(_args: ServeArgs) -> CommandResult {
    Err(Failure::new("caxton serve is not built yet"))
}
