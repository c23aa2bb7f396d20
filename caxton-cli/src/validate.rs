//! `caxton validate MODULE [--previous MODULE] [--contract-tests FILE] [--policy FILE] [--json]`
//!
//! Every file is held to a size limit before it is read (and read no further than one
//! byte past it, should it be a pipe or a device): a module binary to the policy's
//! `max_module_bytes` (32 MiB by default), `.wat` text to four times that, contract tests
//! to 16 MiB, a policy to 1 MiB. A larger file is exit 2, naming the file and the limit.

use std::path::{Path, PathBuf};

use caxton_validate::policy::PolicyError;
use caxton_validate::report::{Severity, StageStatus};
use caxton_validate::{
    ContractTest, ModuleSource, Pipeline, Policy, ValidationInput, ValidationReport,
};

use crate::output::{CommandResult, Failure, MAX_TEXT_BYTES, Mark, Printer, Verdict, read_text};

/// Arguments of `caxton validate`.
#[derive(Debug, clap::Args)]
pub(crate) struct ValidateArgs {
    /// The module: a `.wasm` binary or `.wat` text.
    module: PathBuf,
    /// The version this one replaces: the new one must accept every kind it accepted.
    #[arg(long, value_name = "MODULE")]
    previous: Option<PathBuf>,
    /// Contract test vectors: a JSON array of {"name", "input", "expect": {"kind", "fields"?}}.
    #[arg(long, value_name = "FILE")]
    contract_tests: Option<PathBuf>,
    /// A policy file (JSON, or YAML when it ends in .yaml/.yml); unset fields keep their defaults.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: ValidateArgs) -> CommandResult {
    // The policy first: its `max_module_bytes` bounds what is read of the modules, so a
    // file too large to validate is refused before it is read, not after.
    let policy = match &args.policy {
        Some(path) => read_policy(path)?,
        None => Policy::default(),
    };
    let read_module = |path: &Path| {
        ModuleSource::from_path_with_limit(path, policy.max_module_bytes).map_err(Failure::new)
    };
    let mut input = ValidationInput::new(read_module(&args.module)?);
    if let Some(previous) = &args.previous {
        input = input.previous(read_module(previous)?);
    }
    if let Some(tests) = &args.contract_tests {
        input = input.contract_tests(ContractTest::from_file(tests).map_err(Failure::new)?);
    }
    let pipeline = Pipeline::new(policy).map_err(Failure::new)?;
    let report = pipeline.validate(&input);
    let printer = Printer::new();
    if args.json {
        printer.json(&report);
    } else {
        print_for_people(&printer, &report, input.module().bytes().len());
    }
    printer.finish()?;
    Ok(if report.accepted {
        Verdict::Positive
    } else {
        Verdict::Negative
    })
}

/// Reads a policy file of at most [`MAX_TEXT_BYTES`]: YAML when its name ends in `.yaml`
/// or `.yml`, JSON otherwise, as [`Policy::from_file`] does.
fn read_policy(path: &Path) -> Result<Policy, Failure> {
    let text = read_text(path, MAX_TEXT_BYTES)?;
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let parsed = if yaml {
        Policy::from_yaml(&text)
    } else {
        Policy::from_json(&text)
    };
    parsed.map_err(|message| {
        Failure::new(PolicyError::Parse {
            path: path.display().to_string(),
            message,
        })
    })
}

fn print_for_people(printer: &Printer, report: &ValidationReport, size: usize) {
    printer.line(&format!(
        "Validating {} ({}, {})",
        report.module,
        short_digest(&report.digest),
        human_bytes(size as u64)
    ));
    for stage in &report.stages {
        match stage.status {
            StageStatus::Passed => printer.mark(
                "",
                Mark::Done,
                &format!("{} ({})", stage.stage, human_ms(stage.duration_ms)),
            ),
            StageStatus::Failed => printer.mark(
                "",
                Mark::Failed,
                &format!("{} ({})", stage.stage, human_ms(stage.duration_ms)),
            ),
            StageStatus::Skipped => printer.line(&format!("- {} skipped", stage.stage)),
        }
        for finding in &stage.findings {
            let offset = finding
                .offset
                .map(|o| format!(" (at byte {o:#x})"))
                .unwrap_or_default();
            let severity = match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            printer.line(&format!(
                "    {severity} [{}] {}{offset}",
                finding.code, finding.message
            ));
        }
    }
    if let Some(p) = &report.profile {
        printer.line(&format!(
            "  profile: fuel/message p50 {} p99 {}; peak memory {}; instantiate p50 {:.1} µs; handle p50 {:.1} µs, p99 {:.1} µs",
            p.fuel_per_message_p50,
            p.fuel_per_message_p99,
            human_bytes(p.peak_memory_bytes),
            p.instantiate_us_p50,
            p.handle_us_p50,
            p.handle_us_p99
        ));
    }
    let total = human_ms(report.duration_ms);
    if report.accepted {
        printer.mark("", Mark::Done, &format!("Validation passed ({total})"));
    } else {
        printer.mark("", Mark::Failed, &format!("Validation failed ({total})"));
    }
}

fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 => format!("sha256:{}…", &hex[..12]),
        _ => digest.to_owned(),
    }
}

fn human_ms(ms: f64) -> String {
    if ms >= 1_000.0 {
        format!("{:.1}s", ms / 1_000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(67_712), "66.1 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_ms(0.84), "0.8 ms");
        assert_eq!(human_ms(42.0), "42 ms");
        assert_eq!(human_ms(1_500.0), "1.5s");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab…"
        );
    }
}
