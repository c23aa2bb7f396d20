//! The `caxton` command: a thin host over the Caxton crates.
//!
//! Every subcommand follows one contract: exit code `0` for success, `1` when the verdict
//! is negative (rejected, rolled back), `2` when the command could not run, with a
//! one-line reason on standard error. `--json` prints machine-readable output; without
//! it, output is for people, in `✓`/`✗`/`→` lines.
//!
//! A panic is a bug, but it ends the same way: one line and exit code 2 (see [`panics`]).
//!
//! A subcommand is one variant of [`Command`] and one module with an `Args` struct and a
//! `run(args) -> CommandResult` function (see [`output`]).

mod client;
mod demo;
mod manifests;
mod output;
mod panics;
mod plan;
mod samples;
mod serve;
mod simulate;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::{CommandResult, Failure};

/// Host AI agents compiled to WebAssembly and ship new versions of them safely.
#[derive(Debug, Parser)]
#[command(name = "caxton", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the main job: validate, canary with automatic rollback, rainbow and shadow
    /// deploys of real sample agents through the real router and runtime.
    Demo(demo::DemoArgs),
    /// Validate an agent module: static checks, sandbox, contracts and resource profile.
    Validate(validate::ValidateArgs),
    /// Print a rollout's steps and timeline without running anything.
    Plan(plan::PlanArgs),
    /// Run a rollout in virtual time against synthetic metrics and print its timeline.
    Simulate(simulate::SimulateArgs),
    /// Print Kubernetes or Argo Rollouts manifests for a fleet spec.
    Manifests(manifests::ManifestsArgs),
    /// Run the HTTP API: deploy, roll out, roll back and send messages over HTTP.
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

impl Command {
    fn run(self) -> CommandResult {
        match self {
            Command::Demo(args) => demo::run(args),
            Command::Validate(args) => validate::run(args),
            Command::Plan(args) => plan::run(args),
            Command::Simulate(args) => simulate::run(args),
            Command::Manifests(args) => manifests::run(args),
            Command::Serve(args) => serve::run(args),
            Command::Client(command) => command.run(),
        }
    }
}

fn main() -> ExitCode {
    panics::install_hook();
    panics::guard(run)
}

/// Parses the command line and runs the subcommand.
fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // clap explains over several lines; the contract wants one: keep the first
            // paragraph, joined.
            let text = error.to_string();
            let reason: Vec<&str> = text
                .trim_start_matches("error: ")
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            return output::exit(Err(Failure::new(reason.join(" "))));
        }
    };
    output::exit(cli.command.run())
}
