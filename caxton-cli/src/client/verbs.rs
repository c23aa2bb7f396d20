//! The short verbs: `promote`, `rollback`, `pause`, `resume`, `abort`, `delete`, `list`,
//! `history` and `send`. Each is one or two requests and a few lines.

use std::io::{Read, Write};
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};

use super::events::seconds;
use super::http::{Client, ConnectArgs, Method, Payload, api_error, clip, refusal, segment};
use super::status::table;
use crate::output::{CommandResult, Failure, Mark, Printer, Verdict};

/// The largest message read from standard input: 16 MiB.
const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;

/// Arguments of a verb that names one deployment.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The deployment, e.g. processor-v2-7f8d9.
    #[arg(value_name = "ID")]
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// Arguments of `caxton promote`.
#[derive(Debug, Args)]
pub(crate) struct PromoteArgs {
    /// The candidate deployment.
    #[arg(value_name = "ID")]
    pub(crate) id: String,
    /// Skip the remaining steps: straight to 100%.
    #[arg(long)]
    pub(crate) full: bool,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// Arguments of `caxton rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The deployment to take out of service.
    #[arg(value_name = "ID")]
    pub(crate) id: String,
    /// The deployment to restore (default: the previous known-good one).
    #[arg(long, value_name = "ID")]
    pub(crate) to: Option<String>,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// Arguments of a verb that names one agent.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The agent.
    #[arg(value_name = "AGENT")]
    pub(crate) agent: String,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// Arguments of `caxton list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The agent.
    #[arg(value_name = "AGENT")]
    pub(crate) agent: String,
    /// Include deleted deployments.
    #[arg(long)]
    pub(crate) all: bool,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// Arguments of `caxton send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The agent.
    #[arg(value_name = "AGENT")]
    pub(crate) agent: String,
    /// The message (`-` reads standard input; put `--` before a message that starts
    /// with `-`).
    #[arg(value_name = "MESSAGE")]
    pub(crate) message: String,
    /// The session the message belongs to.
    #[arg(long, value_name = "SESSION")]
    pub(crate) session: Option<String>,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// An operator command on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// `pause`
    Pause,
    /// `resume`
    Resume,
    /// `abort`
    Abort,
}

impl Control {
    fn path(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Abort => "abort",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Control::Pause => "Paused",
            Control::Resume => "Resumed",
            Control::Abort => "Aborted",
        }
    }
}

/// A string field of a JSON object, or `""`.
fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

/// The path of a deployment under its agent, found by asking for the id alone.
fn deployment_path(client: &Client, id: &str) -> Result<String, Failure> {
    let (_, deployment) = client.get_json(&format!("/v1/deployments/{}", segment(id)))?;
    let agent = text(&deployment, "agent");
    if agent.is_empty() {
        return Err(Failure::new(format!(
            "the server's answer for {id} names no agent"
        )));
    }
    Ok(format!(
        "/v1/agents/{}/deployments/{}",
        segment(agent),
        segment(id)
    ))
}

/// `running, production` or `rolled back`.
fn state_of(deployment: &Value) -> String {
    let state = text(deployment, "state").replace('_', " ");
    if deployment.get("is_production").and_then(Value::as_bool) == Some(true) {
        format!("{state}, production")
    } else {
        state
    }
}

/// Runs `caxton promote`.
pub(crate) fn promote(args: PromoteArgs) -> CommandResult {
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let started = Instant::now();
    let path = deployment_path(&client, &args.id)?;
    let answer = client.expect(
        Method::Post,
        &format!("{path}/promote"),
        Payload::Json(&json!({"full": args.full})),
    )?;
    if args.connect.json {
        printer.line(&answer.json_line());
    } else {
        let deployment: Value = answer.json()?;
        let how = if args.full {
            "fully"
        } else {
            "to the next step"
        };
        printer.mark(
            "",
            Mark::Done,
            &format!(
                "Promoted {} {how} ({})",
                args.id,
                seconds(started.elapsed().as_secs_f64())
            ),
        );
        printer.progress(&format!("{} is {}", args.id, state_of(&deployment)));
    }
    printer.finish()?;
    Ok(Verdict::Positive)
}

/// Runs `caxton rollback`.
pub(crate) fn rollback(args: RollbackArgs) -> CommandResult {
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let started = Instant::now();
    let path = deployment_path(&client, &args.id)?;
    let body = match &args.to {
        Some(to) => json!({ "to": to }),
        None => json!({}),
    };
    let answer = client.expect(
        Method::Post,
        &format!("{path}/rollback"),
        Payload::Json(&body),
    )?;
    if args.connect.json {
        printer.line(&answer.json_line());
    } else {
        let outcome: Value = answer.json()?;
        for (mark, line) in rollback_lines(&outcome, started.elapsed().as_secs_f64()) {
            printer.mark("", mark, &line);
        }
    }
    printer.finish()?;
    Ok(Verdict::Positive)
}

/// The lines of a rollback's answer, `elapsed_s` the whole command's time.
pub(crate) fn rollback_lines(outcome: &Value, elapsed_s: f64) -> Vec<(Mark, String)> {
    let restored = outcome.get("restored").cloned().unwrap_or(Value::Null);
    let rolled_back = outcome.get("rolled_back").cloned().unwrap_or(Value::Null);
    let took = outcome
        .get("took_ms")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let mut lines = vec![(
        Mark::Done,
        format!("Traffic moved to {} ({took:.1} ms)", text(&restored, "id")),
    )];
    if outcome
        .get("reloaded_from_artifact")
        .and_then(Value::as_bool)
        == Some(true)
    {
        lines.push((
            Mark::Done,
            format!(
                "Version {} reloaded from its artifact (it had been retired)",
                fingerprint(&restored)
            ),
        ));
    }
    lines.push((
        Mark::Progress,
        format!("{} is {}", text(&rolled_back, "id"), state_of(&rolled_back)),
    ));
    lines.push((
        Mark::Progress,
        format!("Rollback complete in {}", elapsed(elapsed_s)),
    ));
    lines
}

/// The short fingerprint of a deployment's version, or its id.
fn fingerprint(deployment: &Value) -> String {
    let fingerprint = deployment
        .get("version")
        .and_then(|v| v.get("fingerprint"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if fingerprint.is_empty() {
        text(deployment, "id").to_owned()
    } else {
        format!(
            "{} ({})",
            text(deployment, "id"),
            short_version(fingerprint)
        )
    }
}

/// The first 12 hex digits of a fingerprint such as `sha256:56b401045fcd…`.
fn short_version(fingerprint: &str) -> String {
    let hex = fingerprint
        .split_once(':')
        .map_or(fingerprint, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// `35 ms` under a second, `2.5s` above.
fn elapsed(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", (s * 1e3).max(0.0))
    } else {
        seconds(s)
    }
}

/// Runs `caxton pause`, `resume` or `abort`.
pub(crate) fn control(command: Control, args: IdArgs) -> CommandResult {
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let path = deployment_path(&client, &args.id)?;
    let answer = client.expect(
        Method::Post,
        &format!("{path}/{}", command.path()),
        Payload::Json(&json!({})),
    )?;
    if args.connect.json {
        printer.line(&answer.json_line());
    } else {
        let deployment: Value = answer.json()?;
        printer.mark(
            "",
            Mark::Done,
            &format!("{} the rollout of {}", command.done(), args.id),
        );
        printer.progress(&format!("{} is {}", args.id, state_of(&deployment)));
    }
    printer.finish()?;
    Ok(Verdict::Positive)
}

/// Runs `caxton delete`.
pub(crate) fn delete(args: IdArgs) -> CommandResult {
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let path = deployment_path(&client, &args.id)?;
    let answer = client.expect(Method::Delete, &path, Payload::Empty)?;
    if args.connect.json {
        printer.line(&answer.json_line());
    } else {
        printer.mark("", Mark::Done, &format!("Deleted {}", args.id));
    }
    printer.finish()?;
    Ok(Verdict::Positive)
}

/// Runs `caxton list`.
pub(crate) fn list(args: ListArgs) -> CommandResult {
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let mut path = format!("/v1/agents/{}/deployments", segment(&args.agent));
    if args.all {
        path.push_str("?include_deleted=true");
    }
    let (answer, value) = client.get_json(&path)?;
    if args.connect.json {
        printer.line(&answer.json_line());
    } else {
        for line in list_lines(&value) {
            printer.line(&line);
        }
    }
    printer.finish()?;
    Ok(Verdict::Positive)
}

/// The deployments as a table.
pub(crate) fn list_lines(deployments: &Value) -> Vec<String> {
    let rows: Vec<[String; 7]> = deployments
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let production = d.get("is_production").and_then(Value::as_bool) == Some(true);
            let version = d
                .get("version")
                .and_then(|v| v.get("fingerprint"))
                .and_then(Value::as_str)
                .map(short_version)
                .unwrap_or_default();
            [
                text(d, "id").to_owned(),
                text(d, "label").to_owned(),
                version,
                text(d, "state").to_owned(),
                if production { "★" } else { "" }.to_owned(),
                text(d, "strategy").to_owned(),
                text(d, "created_at").to_owned(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return vec!["No deployments.".to_owned()];
    }
    table(
        &[
            "DEPLOYMENT",
            "LABEL",
            "VERSION",
            "STATE",
            "PRODUCTION",
            "STRATEGY",
            "CREATED",
        ],
        &rows,
    )
}

/// Runs `caxton history`.
pub(crate) fn history(args: AgentArgs) -> CommandResult {
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let (answer, value) =
        client.get_json(&format!("/v1/agents/{}/history", segment(&args.agent)))?;
    if args.connect.json {
        printer.line(&answer.json_line());
    } else {
        for line in history_lines(&value) {
            printer.line(&line);
        }
    }
    printer.finish()?;
    Ok(Verdict::Positive)
}

/// The audit entries as a table; an entry's own fields go in its detail.
pub(crate) fn history_lines(entries: &Value) -> Vec<String> {
    const SHOWN: [&str; 6] = ["seq", "at", "agent", "deployment", "action", "reason"];
    let rows: Vec<[String; 5]> = entries
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            let mut detail: Vec<String> = entry
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, value)| !SHOWN.contains(&key.as_str()) && !value.is_null())
                .map(|(key, value)| match value {
                    Value::String(s) => format!("{key}={s}"),
                    other => format!("{key}={other}"),
                })
                .collect();
            let reason = text(entry, "reason");
            if !reason.is_empty() {
                detail.push(format!("reason: {reason}"));
            }
            [
                entry.get("seq").map(Value::to_string).unwrap_or_default(),
                text(entry, "at").to_owned(),
                text(entry, "deployment").to_owned(),
                text(entry, "action").to_owned(),
                clip(&detail.join(" "), 200),
            ]
        })
        .collect();
    if rows.is_empty() {
        return vec!["No history.".to_owned()];
    }
    table(&["SEQ", "AT", "DEPLOYMENT", "ACTION", "DETAIL"], &rows)
}

/// Runs `caxton send`.
pub(crate) fn send(args: SendArgs) -> CommandResult {
    let message = if args.message == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_MESSAGE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::new(format!("cannot read standard input: {e}")))?;
        if bytes.len() as u64 > MAX_MESSAGE_BYTES {
            return Err(Failure::new(format!(
                "standard input: larger than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        bytes
    } else {
        args.message.clone().into_bytes()
    };
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let headers: Vec<(&str, &str)> = args
        .session
        .as_deref()
        .map(|session| ("caxton-session", session))
        .into_iter()
        .collect();
    let path = format!("/v1/agents/{}/messages", segment(&args.agent));
    let answer = client.call(Method::Post, &path, Payload::Bytes(&message), &headers)?;
    if answer.status == 502 && api_error(&answer.body).is_some() {
        // The agent failed (trap, limit): a negative verdict, not a command that could
        // not run.
        if args.connect.json {
            printer.line(&answer.json_line());
        }
        let _ = writeln!(
            std::io::stderr().lock(),
            "caxton: {}",
            refusal(&answer).reason()
        );
        printer.finish()?;
        return Ok(Verdict::Negative);
    }
    if !answer.is_success() {
        return Err(refusal(&answer));
    }
    if args.connect.json {
        printer.line(&send_json(answer.deployment.as_deref(), &answer.body).to_string());
    } else {
        let reply = answer.text();
        printer.line(reply.strip_suffix('\n').unwrap_or(&reply));
    }
    printer.finish()?;
    Ok(Verdict::Positive)
}

/// `{"deployment": …, "reply": …}`: the reply as JSON when it is, as a string otherwise.
pub(crate) fn send_json(deployment: Option<&str>, body: &[u8]) -> Value {
    let reply = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    json!({ "deployment": deployment, "reply": reply })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_reads_like_the_adr() {
        let outcome = json!({
            "rolled_back": {"id": "processor-v2-7f8d9", "state": "rolled_back", "is_production": false},
            "restored": {"id": "processor-v1-a1b2c", "state": "running", "is_production": true,
                "version": {"fingerprint": "sha256:0123456789abcdef"}},
            "reloaded_from_artifact": true,
            "took_ms": 0.84
        });
        let lines = rollback_lines(&outcome, 0.12);
        assert_eq!(
            lines[0],
            (
                Mark::Done,
                "Traffic moved to processor-v1-a1b2c (0.8 ms)".to_owned()
            )
        );
        assert_eq!(lines[1].0, Mark::Done);
        assert!(
            lines[1].1.contains("reloaded from its artifact"),
            "{lines:?}"
        );
        assert!(lines[1].1.contains("0123456789ab"), "{lines:?}");
        assert_eq!(
            lines[2],
            (
                Mark::Progress,
                "processor-v2-7f8d9 is rolled back".to_owned()
            )
        );
        assert_eq!(
            lines[3],
            (Mark::Progress, "Rollback complete in 120 ms".to_owned())
        );
        let live = json!({"rolled_back": {"id": "a"}, "restored": {"id": "b"}, "reloaded_from_artifact": false, "took_ms": 1.0});
        assert_eq!(rollback_lines(&live, 0.0).len(), 3);
    }

    #[test]
    fn lists_and_history_are_tables() {
        let deployments = json!([
            {"id": "p-v2", "label": "v2", "state": "running", "is_production": true, "strategy": "canary", "created_at": "2026-11-30T10:00:00Z"},
            {"id": "p-v1", "label": "v1", "state": "retired", "is_production": false, "strategy": "direct", "created_at": "2026-11-29T10:00:00Z"}
        ]);
        let lines = list_lines(&deployments);
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("DEPLOYMENT  LABEL  VERSION  STATE"),
            "{lines:?}"
        );
        assert!(lines[1].contains('★'), "{lines:?}");
        assert_eq!(list_lines(&json!([])), vec!["No deployments."]);

        let history = json!([
            {"seq": 7, "at": "2026-11-30T10:00:00Z", "agent": "p", "deployment": "p-v2", "action": "rolled_back", "to": "p-v1", "reason": "error_rate > 1%"}
        ]);
        let lines = history_lines(&history);
        assert!(
            lines[1].starts_with("7    2026-11-30T10:00:00Z  p-v2"),
            "{lines:?}"
        );
        assert!(
            lines[1].ends_with("to=p-v1 reason: error_rate > 1%"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_reply_is_json_when_it_can_be() {
        assert_eq!(
            send_json(Some("p-v1"), br#"{"kind": "text", "text": "hi"}"#),
            json!({"deployment": "p-v1", "reply": {"kind": "text", "text": "hi"}})
        );
        assert_eq!(
            send_json(None, b"plain words"),
            json!({"deployment": null, "reply": "plain words"})
        );
    }
}
