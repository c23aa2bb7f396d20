//! The client verbs: `deploy`, `promote`, `rollback`, `pause`, `resume`, `abort`, `status`,
//! `list`, `history`, `delete`, `send`, against a `caxton serve` over its HTTP API.
//!
//! Every verb takes `--server URL` (env `CAXTON_SERVER`, default
//! `http://127.0.0.1:7340`), `--token-file F` (env `CAXTON_TOKEN` otherwise) and `--json`
//! (the API's JSON on standard output). Exit codes: 0 success; 1 a negative verdict (a
//! rollout rolled back, failed or aborted, validation rejected, an agent that failed to
//! answer); 2 the command could not run (server unreachable, token refused, an error
//! answer), with one line on standard error.

mod deploy;
mod events;
mod http;
mod progress;
mod status;
mod verbs;

use clap::Subcommand;

use crate::output::CommandResult;

/// The client verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Deploy a new version: upload the module, create the deployment, follow its rollout.
    Deploy {
        /// What to deploy.
        #[command(subcommand)]
        target: deploy::DeployTarget,
    },
    /// Move a candidate to its next step, or with --full straight to 100%.
    Promote(verbs::PromoteArgs),
    /// Take a deployment out of service and restore the previous known-good version.
    Rollback(verbs::RollbackArgs),
    /// Pause a deployment's rollout.
    Pause(verbs::IdArgs),
    /// Resume a paused rollout.
    Resume(verbs::IdArgs),
    /// Abort a rollout: the candidate is taken out, production stays.
    Abort(verbs::IdArgs),
    /// Show an agent's status: production, the running rollout, its deployments.
    Status(status::StatusArgs),
    /// List an agent's deployments, newest first.
    List(verbs::ListArgs),
    /// Show an agent's audit history.
    History(verbs::AgentArgs),
    /// Delete a deployment that is not production.
    Delete(verbs::IdArgs),
    /// Send a message to an agent and print its reply.
    Send(verbs::SendArgs),
}

impl ClientCommand {
    /// Runs the verb.
    pub(crate) fn run(self) -> CommandResult {
        match self {
            ClientCommand::Deploy {
                target: deploy::DeployTarget::Agent(args),
            } => deploy::run(*args),
            ClientCommand::Promote(args) => verbs::promote(args),
            ClientCommand::Rollback(args) => verbs::rollback(args),
            ClientCommand::Pause(args) => verbs::control(verbs::Control::Pause, args),
            ClientCommand::Resume(args) => verbs::control(verbs::Control::Resume, args),
            ClientCommand::Abort(args) => verbs::control(verbs::Control::Abort, args),
            ClientCommand::Status(args) => status::run(args),
            ClientCommand::List(args) => verbs::list(args),
            ClientCommand::History(args) => verbs::history(args),
            ClientCommand::Delete(args) => verbs::delete(args),
            ClientCommand::Send(args) => verbs::send(args),
        }
    }
}
