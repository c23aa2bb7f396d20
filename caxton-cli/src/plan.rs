//! `caxton plan SPEC [--json]`: a rollout's steps and timeline, without running anything.

use std::path::{Path, PathBuf};

use caxton_strategies::{Plan, RolloutSpec};
use clap::Args;

use crate::output::{CommandResult, Failure, MAX_TEXT_BYTES, Printer, Verdict, read_text};

/// Where a rollout spec comes from: a file, the compact flags, or both (the flags win).
#[derive(Debug, Args)]
pub(crate) struct SpecArgs {
    /// Rollout spec, YAML or JSON, at most 1 MiB (`-` reads standard input). Without it, a
    /// canary is built from --canary-stages and --rollback-on.
    #[arg(value_name = "SPEC")]
    spec: Option<PathBuf>,
    /// Canary steps as `weight:hold,…`, e.g. "5:5m,25:10m,50:10m".
    #[arg(long, value_name = "STEPS")]
    canary_stages: Option<String>,
    /// Rollback conditions as `condition,…`, e.g. "error_rate>1%,p99>100ms".
    #[arg(long, value_name = "CONDITIONS")]
    rollback_on: Option<String>,
}

impl SpecArgs {
    /// The spec the arguments describe.
    pub(crate) fn load(&self) -> Result<RolloutSpec, Failure> {
        let spec = match &self.spec {
            Some(path) => parse(path, &read_text(path, MAX_TEXT_BYTES)?)?,
            None if self.canary_stages.is_none() && self.rollback_on.is_none() => {
                return Err(Failure::new(
                    "no rollout spec: give a SPEC file, or --canary-stages and/or --rollback-on",
                ));
            }
            None => RolloutSpec::from_compact(None, None).map_err(Failure::new)?,
        };
        spec.with_compact(self.canary_stages.as_deref(), self.rollback_on.as_deref())
            .map_err(Failure::new)
    }

    /// The spec's name for people.
    pub(crate) fn describe(&self) -> String {
        match &self.spec {
            Some(path) => path.display().to_string(),
            None => "the command-line flags".to_owned(),
        }
    }
}

fn parse(path: &Path, text: &str) -> Result<RolloutSpec, Failure> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let parsed = match extension.as_deref() {
        Some("json") => RolloutSpec::from_json(text),
        Some("yaml" | "yml") => RolloutSpec::from_yaml(text),
        _ => RolloutSpec::parse(text),
    };
    parsed.map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

/// Arguments of `caxton plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Print the plan as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Prints the plan.
pub(crate) fn run(args: PlanArgs) -> CommandResult {
    let spec = args.spec.load()?;
    let plan = Plan::of(&spec.strategy);
    let printer = Printer::new();
    if args.json {
        printer.json(&plan);
    } else {
        let (header, steps) = plan.human();
        for line in header {
            printer.progress(&line);
        }
        for (at, text) in steps {
            printer.line(&format!("  {at:>8}  {text}"));
        }
        for note in &plan.notes {
            printer.line(&format!("  • {note}"));
        }
    }
    printer.finish()?;
    Ok(Verdict::Positive)
}
