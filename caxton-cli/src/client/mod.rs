//! The client verbs: `deploy`, `promote`, `rollback`, `pause`, `resume`, `abort`, `status`,
//! `list`, `history`, `delete`, `send`, against a `caxton serve` (being written).

use clap::Subcommand;

use crate::output::{CommandResult, Failure};

/// The client verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Show an agent's status.
    Status {
        /// The agent.
        agent: String,
    },
}

impl ClientCommand {
    /// Runs the verb.
    pub(crate) fn run(self) -> CommandResult {
        Err(Failure::new("the client verbs are not built yet"))
    }
}
