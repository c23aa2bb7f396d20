//! `caxton status AGENT [--watch]`: the agent, its running rollout and its deployments,
//! in the manner of `kubectl argo rollouts get rollout`.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::http::{Client, ConnectArgs, segment};
use crate::output::{CommandResult, Mark, Printer, Verdict};

/// How often `--watch` asks again.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Arguments of `caxton status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The agent.
    #[arg(value_name = "AGENT")]
    pub(crate) agent: String,
    /// Redraw every second until the running rollout finishes: exit 0 if its candidate
    /// became production, 1 otherwise.
    #[arg(long)]
    pub(crate) watch: bool,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// An agent's status, as the API gives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct AgentStatus {
    /// The agent.
    pub(crate) agent: String,
    /// `stateless` or `sessions`.
    #[serde(default)]
    pub(crate) sessions: Option<String>,
    /// The production deployment.
    #[serde(default)]
    pub(crate) production: Option<String>,
    /// The running rollout.
    #[serde(default)]
    pub(crate) rollout: Option<RolloutStatus>,
    /// The host that drives the rollout, when another one does.
    #[serde(default)]
    pub(crate) driven_by: Option<String>,
    /// The deployments in service.
    #[serde(default)]
    pub(crate) deployments: Vec<DeploymentRow>,
}

/// The running rollout.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct RolloutStatus {
    /// The candidate.
    pub(crate) deployment: String,
    /// The strategy.
    #[serde(default)]
    pub(crate) strategy: String,
    /// `progressing`, `paused` or `finishing`.
    #[serde(default)]
    pub(crate) phase: String,
    /// The current stage.
    #[serde(default)]
    pub(crate) stage: Option<String>,
    /// The current step, from 1.
    #[serde(default)]
    pub(crate) step: u32,
    /// How many steps.
    #[serde(default)]
    pub(crate) steps: u32,
    /// The candidate's share as set, in percent.
    #[serde(default)]
    pub(crate) weight_set: f64,
    /// The candidate's share of recent messages, in percent.
    #[serde(default)]
    pub(crate) weight_actual: Option<f64>,
    /// Verdicts so far.
    #[serde(default)]
    pub(crate) judge: JudgeCounts,
}

/// Gate and judge verdicts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct JudgeCounts {
    /// Passed.
    #[serde(default)]
    pub(crate) passed: u64,
    /// Failed.
    #[serde(default)]
    pub(crate) failed: u64,
    /// Inconclusive.
    #[serde(default)]
    pub(crate) inconclusive: u64,
}

/// One deployment of the status.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct DeploymentRow {
    /// The deployment.
    pub(crate) id: String,
    /// Its label.
    #[serde(default)]
    pub(crate) label: String,
    /// What it does now.
    #[serde(default)]
    pub(crate) role: String,
    /// Its lifecycle state.
    #[serde(default)]
    pub(crate) state: String,
    /// Its share of new traffic, in percent.
    #[serde(default)]
    pub(crate) weight: f64,
    /// Messages being handled.
    #[serde(default)]
    pub(crate) in_flight: u64,
    /// Sessions pinned to it.
    #[serde(default)]
    pub(crate) pinned_sessions: u64,
}

/// `5%`, `12.5%`, `—` for none.
fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => {
            let rounded = (v * 10.0).round() / 10.0;
            if rounded.fract() == 0.0 {
                format!("{rounded:.0}%")
            } else {
                format!("{rounded:.1}%")
            }
        }
        _ => "—".to_owned(),
    }
}

/// The status as lines for people.
pub(crate) fn render(status: &AgentStatus) -> Vec<String> {
    let mut lines = Vec::new();
    let field = |name: &str, value: &str| format!("{name:<12} {value}");
    lines.push(field("Agent:", &status.agent));
    lines.push(field(
        "Sessions:",
        status.sessions.as_deref().unwrap_or("stateless"),
    ));
    lines.push(field(
        "Production:",
        status.production.as_deref().unwrap_or("none"),
    ));
    match &status.rollout {
        None => match &status.driven_by {
            Some(host) => lines.push(field(
                "Rollout:",
                &format!("driven by host {host} (ask that host for its progress)"),
            )),
            None => lines.push(field("Rollout:", "none running")),
        },
        Some(rollout) => {
            lines.push(field(
                "Rollout:",
                &format!("{} of {}", rollout.strategy, rollout.deployment),
            ));
            let phase = match rollout.phase.as_str() {
                "paused" => "⏸ Paused".to_owned(),
                "finishing" => "→ Finishing".to_owned(),
                "progressing" => "◌ Progressing".to_owned(),
                other => other.to_owned(),
            };
            lines.push(field("  Phase:", &phase));
            let stage = rollout
                .stage
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            lines.push(field(
                "  Step:",
                &format!("{}/{}{stage}", rollout.step, rollout.steps),
            ));
            lines.push(field(
                "  Weight:",
                &format!(
                    "set {}, actual {}",
                    percent(Some(rollout.weight_set)),
                    percent(rollout.weight_actual)
                ),
            ));
            let judge = rollout.judge;
            lines.push(field(
                "  Judge:",
                &format!(
                    "{} passed, {} failed, {} inconclusive",
                    judge.passed, judge.failed, judge.inconclusive
                ),
            ));
        }
    }
    lines.push(String::new());
    let header = [
        "DEPLOYMENT",
        "LABEL",
        "ROLE",
        "STATE",
        "WEIGHT",
        "IN-FLIGHT",
        "PINNED",
    ];
    let rows: Vec<[String; 7]> = status
        .deployments
        .iter()
        .map(|d| {
            let role = match d.role.as_str() {
                "production" => "production ★".to_owned(),
                other => other.to_owned(),
            };
            [
                d.id.clone(),
                d.label.clone(),
                role,
                d.state.clone(),
                percent(Some(d.weight)),
                d.in_flight.to_string(),
                d.pinned_sessions.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        lines.push("No deployments in service.".to_owned());
    } else {
        lines.extend(table(&header, &rows));
    }
    lines
}

/// A table with columns as wide as their widest cell.
pub(crate) fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> Vec<String> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        text.trim_end().to_owned()
    };
    let mut lines = vec![line(header.to_vec())];
    for row in rows {
        lines.push(line(row.iter().map(String::as_str).collect()));
    }
    lines
}

/// Runs `caxton status`.
pub(crate) fn run(args: StatusArgs) -> CommandResult {
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let path = format!("/v1/agents/{}", segment(&args.agent));
    let (answer, value) = client.get_json(&path)?;
    let status: AgentStatus = serde_json::from_value(value).map_err(|e| {
        crate::output::Failure::new(format!("the server's status is not the JSON expected: {e}"))
    })?;
    let watched = match (&status.rollout, args.watch) {
        (Some(rollout), true) => rollout.deployment.clone(),
        _ => {
            show(&printer, &args, &answer.json_line(), &status, false);
            printer.finish()?;
            return Ok(Verdict::Positive);
        }
    };
    let redraw = std::io::stdout().is_terminal() && !args.connect.json;
    let mut last_shown = String::new();
    let mut current = (answer, status);
    loop {
        let (answer, status) = &current;
        let line = answer.json_line();
        if line != last_shown {
            show(&printer, &args, &line, status, redraw);
            last_shown = line;
        }
        let running = status
            .rollout
            .as_ref()
            .is_some_and(|r| r.deployment == watched);
        if !running {
            let promoted = status.production.as_deref() == Some(watched.as_str());
            if !args.connect.json {
                if promoted {
                    printer.mark("", Mark::Done, &format!("{watched} is production"));
                } else {
                    let state = status
                        .deployments
                        .iter()
                        .find(|d| d.id == watched)
                        .map(|d| d.state.clone())
                        .or_else(|| state_of(&client, &watched))
                        .unwrap_or_else(|| "out of service".to_owned())
                        .replace('_', " ");
                    printer.mark(
                        "",
                        Mark::Failed,
                        &format!("{watched} did not become production ({state})"),
                    );
                }
            }
            printer.finish()?;
            return Ok(if promoted {
                Verdict::Positive
            } else {
                Verdict::Negative
            });
        }
        std::thread::sleep(WATCH_EVERY);
        let (answer, value) = client.get_json(&path)?;
        let status: AgentStatus = serde_json::from_value(value).map_err(|e| {
            crate::output::Failure::new(format!(
                "the server's status is not the JSON expected: {e}"
            ))
        })?;
        current = (answer, status);
    }
}

/// A deployment's state, asked for by id; `None` when the server does not say.
fn state_of(client: &Client, id: &str) -> Option<String> {
    let (_, deployment) = client
        .get_json(&format!("/v1/deployments/{}", segment(id)))
        .ok()?;
    deployment.get("state")?.as_str().map(str::to_owned)
}

/// Prints one status: its JSON line, or the view (redrawn in place on a terminal).
fn show(printer: &Printer, args: &StatusArgs, json_line: &str, status: &AgentStatus, redraw: bool) {
    if args.connect.json {
        printer.line(json_line);
        return;
    }
    for (i, line) in render(status).iter().enumerate() {
        if i == 0 && redraw {
            // Clear the screen and go home first: the view replaces the previous one.
            printer.line(&format!("\x1b[2J\x1b[H{line}"));
        } else {
            printer.line(line);
        }
    }
    if args.watch && !redraw {
        printer.line("");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = r#"{
        "agent": "processor", "sessions": "stateless", "production": "processor-v1-a1b2c",
        "rollout": {"deployment": "processor-v2-7f8d9", "strategy": "canary", "phase": "progressing",
            "stage": "canary.25_percent", "step": 2, "steps": 4, "weight_set": 25.0, "weight_actual": 24.37,
            "judge": {"passed": 3, "failed": 0, "inconclusive": 1}},
        "deployments": [
            {"id": "processor-v2-7f8d9", "label": "v2", "role": "candidate", "state": "deploying", "weight": 25.0, "in_flight": 2, "pinned_sessions": 0},
            {"id": "processor-v1-a1b2c", "label": "v1", "role": "production", "state": "running", "weight": 75.0, "in_flight": 11, "pinned_sessions": 0}
        ]
    }"#;

    #[test]
    fn the_status_reads_like_a_rollout_view() {
        let status: AgentStatus = serde_json::from_str(FIXTURE).unwrap();
        let lines = render(&status);
        let text = lines.join("\n");
        assert_eq!(lines[0], "Agent:       processor");
        assert!(text.contains("Production:  processor-v1-a1b2c"), "{text}");
        assert!(
            text.contains("Rollout:     canary of processor-v2-7f8d9"),
            "{text}"
        );
        assert!(
            text.contains("Step:      2/4 (canary.25_percent)"),
            "{text}"
        );
        assert!(text.contains("set 25%, actual 24.4%"), "{text}");
        assert!(
            text.contains("3 passed, 0 failed, 1 inconclusive"),
            "{text}"
        );
        let header = lines
            .iter()
            .position(|l| l.starts_with("DEPLOYMENT"))
            .unwrap();
        assert_eq!(
            lines[header],
            "DEPLOYMENT          LABEL  ROLE          STATE      WEIGHT  IN-FLIGHT  PINNED"
        );
        assert_eq!(
            lines[header + 2],
            "processor-v1-a1b2c  v1     production ★  running    75%     11         0"
        );
    }

    #[test]
    fn no_rollout_and_no_deployments_say_so() {
        let status: AgentStatus = serde_json::from_str(
            r#"{"agent": "chat", "sessions": "sessions", "production": null, "rollout": null, "deployments": []}"#,
        )
        .unwrap();
        let text = render(&status).join("\n");
        assert!(text.contains("Sessions:    sessions"), "{text}");
        assert!(text.contains("Production:  none"), "{text}");
        assert!(text.contains("Rollout:     none running"), "{text}");
        assert!(text.contains("No deployments in service."), "{text}");
    }

    #[test]
    fn percentages_read_well() {
        assert_eq!(percent(Some(5.0)), "5%");
        assert_eq!(percent(Some(12.54)), "12.5%");
        assert_eq!(percent(None), "—");
    }
}
