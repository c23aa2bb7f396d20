//! Following a rollout through the server's event stream (`GET /v1/agents/{agent}/events`,
//! server-sent events), and the lines people see for each event.

use std::io::{self, Read};

use caxton_strategies::event::Mark as EventMark;
use caxton_strategies::{EventKind, RolloutEvent};

use crate::output::Mark;

/// The longest line kept from the stream: a longer one is a broken server, not an event.
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// One server-sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseMessage {
    /// The `event:` field (`message` when absent).
    pub(crate) event: String,
    /// The `data:` lines, joined with `\n`.
    pub(crate) data: String,
}

/// Reads server-sent events from bytes that arrive in pieces of any size: lines split
/// across reads, `\n` or `\r\n` endings, comments (`:` lines), multi-line data.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    partial: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes; returns the messages they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        let mut messages = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(message) = self.line(&String::from_utf8_lossy(&line)) {
                messages.push(message);
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE_BYTES {
            // Nothing sensible is this long; drop it rather than grow without bound.
            self.partial.clear();
        }
        messages
    }

    /// One complete line.
    fn line(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| SseMessage {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// One event of the stream, as parsed and as received.
#[derive(Debug, Clone)]
pub(crate) struct StreamEvent {
    /// The event.
    pub(crate) event: RolloutEvent,
    /// Its JSON as received.
    pub(crate) raw: String,
}

/// The rollout events of one deployment, read from a stream.
pub(crate) struct EventReader {
    source: Box<dyn Read + Send>,
    parser: SseParser,
    pending: std::collections::VecDeque<SseMessage>,
    deployment: String,
    ended: bool,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("deployment", &self.deployment)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl EventReader {
    /// Reads `source`, keeping the events of `deployment`.
    pub(crate) fn new(source: Box<dyn Read + Send>, deployment: &str) -> Self {
        EventReader {
            source,
            parser: SseParser::default(),
            pending: std::collections::VecDeque::new(),
            deployment: deployment.to_owned(),
            ended: false,
        }
    }

    /// The next event of the deployment, or `None` when the stream ended (closed by the
    /// server or broken: either way the caller falls back to asking for the deployment).
    pub(crate) fn next_event(&mut self) -> Option<StreamEvent> {
        loop {
            while let Some(message) = self.pending.pop_front() {
                if let Some(event) = self.keep(&message) {
                    return Some(event);
                }
            }
            if self.ended {
                return None;
            }
            let mut buffer = [0u8; 8192];
            match self.source.read(&mut buffer) {
                Ok(0) => self.ended = true,
                Ok(n) => self.pending.extend(self.parser.push(&buffer[..n])),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.ended = true,
            }
        }
    }

    fn keep(&self, message: &SseMessage) -> Option<StreamEvent> {
        let event = parse_event(&message.data)?;
        (event.deployment_id.to_string() == self.deployment).then(|| StreamEvent {
            event,
            raw: message.data.clone(),
        })
    }
}

/// A rollout event from a message's data; `None` for anything else (a kind this client
/// does not know, a message that is not an event).
pub(crate) fn parse_event(data: &str) -> Option<RolloutEvent> {
    serde_json::from_str(data).ok()
}

/// How a followed rollout ended, as far as its events tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// `finished` with outcome `promoted`.
    Promoted,
    /// `finished` with another outcome, or validation failed.
    NotPromoted {
        /// The outcome (`rolled_back`, `aborted`, `validation_failed`).
        outcome: String,
        /// Why, when the events say.
        reason: Option<String>,
    },
}

/// What an event means for someone following the rollout.
pub(crate) fn ending(event: &RolloutEvent) -> Option<Ending> {
    match &event.kind {
        EventKind::Finished { outcome, .. } if outcome == "promoted" => Some(Ending::Promoted),
        EventKind::Finished { outcome, reason } => Some(Ending::NotPromoted {
            outcome: outcome.clone(),
            reason: reason.clone(),
        }),
        EventKind::ValidationFinished {
            passed: false,
            summary,
            ..
        } => Some(Ending::NotPromoted {
            outcome: "validation_failed".to_owned(),
            reason: (!summary.is_empty()).then(|| summary.clone()),
        }),
        _ => None,
    }
}

/// Whether the event starts a stage (the point where `deploy` without `--wait` stops).
pub(crate) fn is_stage_start(event: &RolloutEvent) -> bool {
    matches!(event.kind, EventKind::StageStarted { .. })
}

/// The lines for people: the event's own lines, a stage's start with the time since the
/// event before it (`✓ Canary 5% started (0.2s)`).
pub(crate) fn lines(event: &RolloutEvent, previous_at_s: Option<f64>) -> Vec<(Mark, String)> {
    let mut lines: Vec<(Mark, String)> = event
        .human_lines()
        .into_iter()
        .map(|line| (mark(line.mark), line.text))
        .collect();
    if let (EventKind::StageStarted { .. }, Some(previous)) = (&event.kind, previous_at_s)
        && let Some((Mark::Done, text)) = lines.first_mut()
    {
        text.push_str(&format!(" ({})", seconds(event.at_s - previous)));
    }
    lines
}

/// `0.8s`, `12.3s`, `2m 5s`.
pub(crate) fn seconds(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) } else { 0.0 };
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let whole = s.round() as u64;
        format!("{}m {}s", whole / 60, whole % 60)
    }
}

fn mark(mark: EventMark) -> Mark {
    match mark {
        EventMark::Done => Mark::Done,
        EventMark::Failed => Mark::Failed,
        _ => Mark::Progress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGE: &str = r#"{"at_s":1.5,"event":"stage_started","stage":"canary.5_percent","percentage":5.0,"hold_s":300.0,"agent_id":"processor","deployment_id":"processor-v2-7f8d9","version":"0123456789ab","timestamp":"2026-11-30T10:00:00Z"}"#;

    #[test]
    fn messages_survive_any_split() {
        let stream = format!(
            ": keep-alive\n\nevent: stage_started\r\ndata: {STAGE}\r\n\r\n: ping\nevent: other\ndata: a\ndata:b\n\n"
        );
        let whole = SseParser::default().push(stream.as_bytes());
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].event, "stage_started");
        assert_eq!(whole[0].data, STAGE);
        assert_eq!(whole[1].event, "other");
        assert_eq!(whole[1].data, "a\nb");
        for chunk in [1, 2, 3, 7, 64] {
            let mut parser = SseParser::default();
            let mut got = Vec::new();
            for piece in stream.as_bytes().chunks(chunk) {
                got.extend(parser.push(piece));
            }
            assert_eq!(got, whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn comments_alone_make_no_message_and_a_message_needs_its_blank_line() {
        let mut parser = SseParser::default();
        assert!(parser.push(b":a\n:b\n\n\n").is_empty());
        assert!(parser.push(b"data: x\n").is_empty());
        let got = parser.push(b"\n");
        assert_eq!(got[0].event, "message");
        assert_eq!(got[0].data, "x");
    }

    #[test]
    fn events_are_kept_for_the_deployment_only() {
        let other = STAGE.replace("processor-v2-7f8d9", "processor-v3-00000");
        let stream = format!(
            "event: stage_started\ndata: {other}\n\nevent: stage_started\ndata: {STAGE}\n\n"
        );
        let mut reader = EventReader::new(
            Box::new(io::Cursor::new(stream.into_bytes())),
            "processor-v2-7f8d9",
        );
        let first = reader.next_event().unwrap();
        assert_eq!(first.event.deployment_id.to_string(), "processor-v2-7f8d9");
        assert_eq!(first.raw, STAGE);
        assert!(reader.next_event().is_none());
    }

    #[test]
    fn a_stage_start_says_how_long_it_took() {
        let event = parse_event(STAGE).unwrap();
        assert!(is_stage_start(&event));
        let lines = lines(&event, Some(1.3));
        assert_eq!(
            lines[0],
            (Mark::Done, "Canary 5% started (0.2s)".to_owned())
        );
        assert_eq!(lines[1].0, Mark::Progress);
        assert!(
            lines[1].1.starts_with("Monitoring for 5 minutes"),
            "{lines:?}"
        );
    }

    #[test]
    fn endings_are_read_from_finished_and_failed_validation() {
        let finished = |outcome: &str| {
            parse_event(&format!(
                r#"{{"at_s":9.0,"event":"finished","outcome":"{outcome}","reason":"error_rate > 1%","agent_id":"a","deployment_id":"a-v2","version":"v"}}"#
            ))
            .unwrap()
        };
        assert_eq!(ending(&finished("promoted")), Some(Ending::Promoted));
        assert_eq!(
            ending(&finished("rolled_back")),
            Some(Ending::NotPromoted {
                outcome: "rolled_back".to_owned(),
                reason: Some("error_rate > 1%".to_owned())
            })
        );
        let failed = parse_event(
            r#"{"at_s":0.8,"event":"validation_finished","passed":false,"summary":"sandbox: trap","duration_s":0.8,"agent_id":"a","deployment_id":"a-v2","version":"v"}"#,
        )
        .unwrap();
        assert!(
            matches!(ending(&failed), Some(Ending::NotPromoted { outcome, .. }) if outcome == "validation_failed")
        );
        assert!(parse_event(r#"{"event":"something_new"}"#).is_none());
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(seconds(0.04), "0.0s");
        assert_eq!(seconds(2.26), "2.3s");
        assert_eq!(seconds(125.0), "2m 5s");
        assert_eq!(seconds(f64::NAN), "0.0s");
    }
}
