//! `caxton manifests FLEET [--target kubernetes|argo] [--json]`: Kubernetes or Argo Rollouts
//! manifests for a fleet spec.

use std::path::{Path, PathBuf};

use caxton_k8s::{Fleet, Target};
use clap::{Args, ValueEnum};

use crate::output::{CommandResult, Failure, MAX_TEXT_BYTES, Printer, Verdict, read_text};

/// What the manifests are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TargetArg {
    /// Deployments, Services, autoscalers, disruption budgets, ConfigMaps; Caxton rolls
    /// versions out itself.
    Kubernetes,
    /// Argo Rollouts `Rollout`s and `AnalysisTemplate`s instead of Deployments.
    Argo,
}

impl From<TargetArg> for Target {
    fn from(target: TargetArg) -> Self {
        match target {
            TargetArg::Kubernetes => Target::Kubernetes,
            TargetArg::Argo => Target::Argo,
        }
    }
}

/// Arguments of `caxton manifests`.
#[derive(Debug, Args)]
pub(crate) struct ManifestsArgs {
    /// Fleet spec, YAML or JSON, at most 1 MiB (`-` reads standard input).
    #[arg(value_name = "FLEET")]
    fleet: PathBuf,
    /// What the manifests are for.
    #[arg(long, value_enum, default_value = "kubernetes")]
    target: TargetArg,
    /// Print one JSON list of objects instead of multi-document YAML.
    #[arg(long)]
    json: bool,
}

/// Prints the manifests, or fails with one line naming the path of what is wrong (and
/// prints nothing on standard output).
pub(crate) fn run(args: ManifestsArgs) -> CommandResult {
    let fleet = parse(&args.fleet, &read_text(&args.fleet, MAX_TEXT_BYTES)?)?;
    let shown = args.fleet.display();
    let objects = caxton_k8s::manifests(&fleet, args.target.into())
        .map_err(|e| Failure::new(format!("{shown}: {e}")))?;
    let text = if args.json {
        caxton_k8s::to_json(&objects)
    } else {
        caxton_k8s::to_yaml(&objects)
    }
    .map_err(|e| Failure::new(format!("{shown}: {e}")))?;
    let printer = Printer::new();
    printer.line(text.trim_end_matches('\n'));
    printer.finish()?;
    Ok(Verdict::Positive)
}

fn parse(path: &Path, text: &str) -> Result<Fleet, Failure> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let parsed = match extension.as_deref() {
        Some("json") => Fleet::from_json(text),
        Some("yaml" | "yml") => Fleet::from_yaml(text),
        _ => Fleet::parse(text),
    };
    parsed.map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}
