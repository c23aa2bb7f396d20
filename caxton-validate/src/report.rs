//! The validation report: a verdict per stage with its findings, and the resource profile.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How serious a finding is. Any `Error` fails its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For people; changes nothing.
    Info,
    /// Worth a look; the stage still passes.
    Warning,
    /// The stage fails.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One thing a stage noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// A stable snake_case name, e.g. `missing_export`; see [`codes`](crate::codes).
    pub code: String,
    /// What was found, for people.
    pub message: String,
    /// Byte offset in the module, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl Finding {
    /// An error finding.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Error,
            code: code.to_owned(),
            message: message.into(),
            offset: None,
        }
    }

    /// A warning finding.
    pub fn warning(code: &str, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            code: code.to_owned(),
            message: message.into(),
            offset: None,
        }
    }

    /// An informational finding.
    pub fn info(code: &str, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Info,
            code: code.to_owned(),
            message: message.into(),
            offset: None,
        }
    }

    /// Adds the byte offset the finding is about.
    pub fn at(mut self, offset: usize) -> Self {
        self.offset = Some(offset as u64);
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] {}", self.severity, self.code, self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " (at byte {offset:#x})")?;
        }
        Ok(())
    }
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// No error finding.
    Passed,
    /// At least one error finding.
    Failed,
    /// Not run, because an earlier stage failed.
    Skipped,
}

/// One stage's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageReport {
    /// The stage's name: `static`, `sandbox`, `contracts`, `resources`, or a host's own.
    pub stage: String,
    /// How it ended.
    pub status: StageStatus,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// What it found.
    pub findings: Vec<Finding>,
}

impl StageReport {
    /// The findings of at least `severity`.
    pub fn findings_at_least(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= severity)
    }
}

/// What running the agent cost, measured by the `resources` stage. Strategies can use it
/// as the baseline of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Median fuel per message.
    pub fuel_per_message_p50: u64,
    /// 99th percentile of fuel per message.
    pub fuel_per_message_p99: u64,
    /// Largest linear memory seen, in bytes.
    pub peak_memory_bytes: u64,
    /// Median time to a new instance ready for a message (`caxton_init` included), in µs.
    pub instantiate_us_p50: f64,
    /// Median time to handle a message, in µs.
    pub handle_us_p50: f64,
    /// 99th percentile of the time to handle a message, in µs.
    pub handle_us_p99: f64,
}

/// The verdict on one module. Serializes to the JSON layout of `caxton validate --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationReport {
    /// The module's name (its path, for the command line).
    pub module: String,
    /// `sha256:<hex>` of the module bytes (the WebAssembly binary, also for `.wat` input).
    pub digest: String,
    /// Whether every stage passed.
    pub accepted: bool,
    /// How long the whole pipeline took, in milliseconds.
    pub duration_ms: f64,
    /// One entry per stage, in order.
    pub stages: Vec<StageReport>,
    /// The resource profile, when the `resources` stage ran.
    pub profile: Option<Profile>,
}

impl ValidationReport {
    /// The report of the stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.stage == name)
    }

    /// Every finding of every stage, in order.
    pub fn findings(&self) -> impl Iterator<Item = (&str, &Finding)> {
        self.stages
            .iter()
            .flat_map(|s| s.findings.iter().map(move |f| (s.stage.as_str(), f)))
    }

    /// Whether some stage reported a finding with this code.
    pub fn has_finding(&self, code: &str) -> bool {
        self.findings().any(|(_, f)| f.code == code)
    }
}

/// Milliseconds of a duration, rounded to microseconds so reports stay readable.
pub(crate) fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_serializes_to_the_documented_layout() {
        let report = ValidationReport {
            module: "agent.wasm".into(),
            digest: "sha256:00".into(),
            accepted: false,
            duration_ms: 1.5,
            stages: vec![
                StageReport {
                    stage: "static".into(),
                    status: StageStatus::Failed,
                    duration_ms: 0.25,
                    findings: vec![Finding::error("missing_export", "no `memory` export").at(8)],
                },
                StageReport {
                    stage: "sandbox".into(),
                    status: StageStatus::Skipped,
                    duration_ms: 0.0,
                    findings: vec![],
                },
            ],
            profile: None,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["accepted"], false);
        assert_eq!(json["profile"], serde_json::Value::Null);
        assert_eq!(json["stages"][0]["status"], "failed");
        assert_eq!(json["stages"][0]["findings"][0]["severity"], "error");
        assert_eq!(json["stages"][0]["findings"][0]["offset"], 8);
        assert_eq!(json["stages"][1]["status"], "skipped");
        assert!(json["stages"][1].get("findings").is_some());
        assert_eq!(
            serde_json::from_value::<ValidationReport>(json).unwrap(),
            report
        );
        assert!(report.has_finding("missing_export"));
        assert_eq!(
            report.stage("sandbox").unwrap().status,
            StageStatus::Skipped
        );
    }

    #[test]
    fn profile_round_trips() {
        let profile = Profile {
            fuel_per_message_p50: 10,
            fuel_per_message_p99: 20,
            peak_memory_bytes: 65_536,
            instantiate_us_p50: 3.5,
            handle_us_p50: 0.75,
            handle_us_p99: 2.0,
        };
        let json = serde_json::to_string(&profile).unwrap();
        assert_eq!(serde_json::from_str::<Profile>(&json).unwrap(), profile);
    }

    #[test]
    fn finding_displays_code_and_offset() {
        let f = Finding::warning("nondeterministic_reply", "replies differ").at(255);
        assert_eq!(
            f.to_string(),
            "warning [nondeterministic_reply] replies differ (at byte 0xff)"
        );
    }
}
