//! `caxton manifests FLEET [--target kubernetes|argo] [--json]`: Kubernetes or Argo Rollouts
//! manifests for a fleet spec.

use std::path::PathBuf;

use clap::Args;

use crate::output::{CommandResult, Failure};

/// Arguments of `caxton manifests`.
#[derive(Debug, Args)]
pub(crate) struct ManifestsArgs {
    /// Fleet spec, YAML or JSON.
    #[arg(value_name = "FLEET")]
    fleet: PathBuf,
}

/// Runs `caxton manifests`.
pub(crate) fn run(args: ManifestsArgs) -> CommandResult {
    Err(Failure::new(format!(
        "caxton manifests is not built yet ({})",
        args.fleet.display()
    )))
}
