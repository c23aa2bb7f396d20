//! `chat`: a Caxton sample agent that keeps conversation state per session.
//!
//! It accepts `say` and `end` messages and emits `reply` or `error` replies:
//!
//! ```text
//! {"kind":"say","text":"hi"}  → {"kind":"reply","turn":1,"text":"…","version":"v1"}
//! {"kind":"end"}              → {"kind":"reply","turn":1,"text":"Goodbye …","version":"v1","ended":true,"duration_ms":…}
//! ```
//!
//! Caxton runs one instance per session, so the state here (the turn count, the last few
//! messages, when the session started) lives in the instance's linear memory and carries
//! from one message to the next; `end` clears it. This is what a rainbow deploy protects: a
//! session that started on v1 must stay on v1 to keep its history.
//!
//! Every `say` reads the config key `prompt` (the version's prompt layer): its first line
//! names the persona that answers, `Assistant` when the key is absent or blank. Turns are
//! logged through `caxton.log`, and `end` reports how long the session lasted from
//! `caxton.now_ms`.
//!
//! Two releases, chosen with a cargo feature when building (see `build.sh`):
//!
//! - **v1** (no feature): answers in sentences, with `"version":"v1"`.
//! - **v2** (`--features v2`): answers in a compact, visibly different style, with
//!   `"version":"v2"`, so a demo can show which release a session is on.

use std::collections::VecDeque;

use caxton_agent::{
    Agent, InitError, Level, config, contract, error_reply, export_agent, log, now_ms,
};
use serde::{Deserialize, Serialize};

/// How many earlier messages a session remembers.
pub const REMEMBERED: usize = 3;
/// Longest `text` accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 2000;
/// Remembered messages are cut to this many characters.
const REMEMBERED_CHARS: usize = 40;
/// Persona names are cut to this many characters.
const PERSONA_CHARS: usize = 40;

/// A release of the chat agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// Sentences, `"version":"v1"`.
    V1,
    /// Compact, `"version":"v2"`.
    V2,
}

impl Style {
    /// The `version` field of this release's replies.
    pub const fn version(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// The release this build answers as, chosen by the cargo feature `v2`.
pub const STYLE: Style = if cfg!(feature = "v2") {
    Style::V2
} else {
    Style::V1
};

/// One session's conversation.
#[derive(Debug, Default)]
pub struct Conversation {
    turn: u32,
    recent: VecDeque<String>,
    started_ms: Option<i64>,
}

/// Just enough of a message to see its kind.
#[derive(Deserialize)]
struct Envelope {
    kind: String,
}

#[derive(Deserialize)]
struct Say {
    text: String,
}

#[derive(Serialize)]
struct Reply<'a> {
    kind: &'static str,
    turn: u32,
    text: &'a str,
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<i64>,
}

impl Conversation {
    /// How many `say` messages this session has had.
    pub fn turn(&self) -> u32 {
        self.turn
    }

    /// Answers one message as `style` does.
    pub fn respond(&mut self, style: Style, message: &[u8]) -> Vec<u8> {
        self.reply(style, message)
            .unwrap_or_else(|reason| error_reply(&reason))
    }

    fn reply(&mut self, style: Style, message: &[u8]) -> Result<Vec<u8>, String> {
        // Serde would read a struct from an array too; messages are objects.
        let opens_object = message
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|&byte| byte == b'{');
        if !opens_object {
            return Err("malformed message: expected a JSON object".into());
        }
        let envelope: Envelope = serde_json::from_slice(message)
            .map_err(|error| format!("malformed message: {error}"))?;
        match envelope.kind.as_str() {
            "say" => {
                let say: Say = serde_json::from_slice(message)
                    .map_err(|error| format!("malformed say: {error}"))?;
                self.say(style, &say.text)
            }
            "end" => Ok(self.end(style)),
            other => Err(format!(
                "unsupported kind `{other}`: chat accepts `say` and `end`"
            )),
        }
    }

    fn say(&mut self, style: Style, text: &str) -> Result<Vec<u8>, String> {
        if text.trim().is_empty() {
            return Err("`text` is empty".into());
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(format!(
                "`text` is {} bytes, longer than the {MAX_TEXT_BYTES} accepted",
                text.len()
            ));
        }
        self.turn += 1;
        let now = now_ms();
        self.started_ms.get_or_insert(now);
        let persona = persona(config("prompt").as_deref());
        let answer = match style {
            Style::V1 => {
                let earlier = if self.recent.is_empty() {
                    "This is the first thing you said.".to_owned()
                } else {
                    let quoted: Vec<String> = self
                        .recent
                        .iter()
                        .map(|said| format!("\"{said}\""))
                        .collect();
                    format!("Before that you said {}.", quoted.join(", "))
                };
                format!(
                    "{persona} here. You said \"{}\". {earlier}",
                    clip(text, 200)
                )
            }
            Style::V2 => {
                let recent: Vec<&str> = self.recent.iter().map(String::as_str).collect();
                let recent = if recent.is_empty() {
                    "-".to_owned()
                } else {
                    recent.join(" | ")
                };
                format!(
                    "[{persona} v2] {} · turn {} · recent: {recent}",
                    clip(text, 200).to_uppercase(),
                    self.turn
                )
            }
        };
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent
            .push_back(clip(text, REMEMBERED_CHARS).to_owned());
        log(
            Level::Debug,
            &format!(
                "turn {} answered by {persona} ({} bytes in)",
                self.turn,
                text.len()
            ),
        );
        Ok(write(style, self.turn, &answer, None))
    }

    fn end(&mut self, style: Style) -> Vec<u8> {
        let duration_ms = self
            .started_ms
            .map_or(0, |started| now_ms().saturating_sub(started).max(0));
        let turns = self.turn;
        let farewell = match style {
            Style::V1 => format!("Goodbye after {turns} turns."),
            Style::V2 => format!("[v2] bye · {turns} turns"),
        };
        log(Level::Info, &format!("session ended after {turns} turns"));
        *self = Self::default();
        write(style, turns, &farewell, Some(duration_ms))
    }
}

/// A `reply`; `ended` carries the session's duration when it is the farewell.
fn write(style: Style, turn: u32, text: &str, ended: Option<i64>) -> Vec<u8> {
    serde_json::to_vec(&Reply {
        kind: "reply",
        turn,
        text,
        version: style.version(),
        ended: ended.map(|_| true),
        duration_ms: ended,
    })
    .unwrap_or_else(|error| error_reply(&format!("could not write the reply: {error}")))
}

/// The persona named by the prompt's first non-blank line, or `Assistant`.
fn persona(prompt: Option<&str>) -> String {
    prompt
        .and_then(|prompt| prompt.lines().map(str::trim).find(|line| !line.is_empty()))
        .map_or_else(
            || "Assistant".to_owned(),
            |line| clip(line, PERSONA_CHARS).to_owned(),
        )
}

/// The first `chars` characters of `text`.
fn clip(text: &str, chars: usize) -> &str {
    text.char_indices()
        .nth(chars)
        .map_or(text, |(end, _)| &text[..end])
}

/// The agent: one [`Conversation`] per instance, that is per session.
#[derive(Debug)]
pub struct Chat {
    conversation: Conversation,
}

impl Chat {
    /// The session so far.
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }
}

impl Agent for Chat {
    fn init() -> Result<Self, InitError> {
        Ok(Chat {
            conversation: Conversation::default(),
        })
    }

    fn handle(&mut self, message: &[u8]) -> Vec<u8> {
        self.conversation.respond(STYLE, message)
    }
}

export_agent!(Chat);
contract!(accepts: ["say", "end"], emits: ["reply", "error"]);

#[cfg(test)]
mod tests {
    use super::*;
    use caxton_agent::host::{self, Harness};
    use proptest::prelude::*;
    use serde_json::Value;

    fn say(text: &str) -> String {
        serde_json::json!({"kind": "say", "text": text}).to_string()
    }

    fn send(conversation: &mut Conversation, style: Style, message: &str) -> Value {
        serde_json::from_slice(&conversation.respond(style, message.as_bytes())).unwrap()
    }

    #[test]
    fn contract_section_lists_say_end_reply_and_error() {
        assert_eq!(
            &CAXTON_CONTRACT,
            br#"{"accepts":["say","end"],"emits":["reply","error"]}"#
        );
    }

    #[test]
    fn v1_answers_in_sentences_and_remembers_the_session() {
        host::reset();
        let mut chat = Conversation::default();
        let first = chat.respond(Style::V1, say("hi").as_bytes());
        assert_eq!(
            String::from_utf8(first).unwrap(),
            r#"{"kind":"reply","turn":1,"text":"Assistant here. You said \"hi\". This is the first thing you said.","version":"v1"}"#
        );
        send(&mut chat, Style::V1, &say("how are you"));
        let third = send(&mut chat, Style::V1, &say("bye now"));
        assert_eq!(third["turn"], 3);
        assert_eq!(
            third["text"],
            r#"Assistant here. You said "bye now". Before that you said "hi", "how are you"."#
        );
        assert_eq!(chat.turn(), 3);
    }

    #[test]
    fn v2_answers_in_a_visibly_different_style() {
        host::reset();
        let mut chat = Conversation::default();
        send(&mut chat, Style::V2, &say("hello"));
        let second = send(&mut chat, Style::V2, &say("ship it"));
        assert_eq!(second["version"], "v2");
        assert_eq!(
            second["text"],
            "[Assistant v2] SHIP IT · turn 2 · recent: hello"
        );
    }

    #[test]
    fn only_the_last_messages_are_remembered() {
        host::reset();
        let mut chat = Conversation::default();
        for word in ["one", "two", "three", "four", "five"] {
            send(&mut chat, Style::V2, &say(word));
        }
        let reply = send(&mut chat, Style::V2, &say("six"));
        assert_eq!(
            reply["text"],
            "[Assistant v2] SIX · turn 6 · recent: three | four | five"
        );
    }

    #[test]
    fn the_prompt_names_the_persona_and_is_read_on_every_message() {
        host::reset();
        let mut chat = Conversation::default();
        host::set_config("prompt", "\n  Ada  \nYou answer briefly.");
        let reply = send(&mut chat, Style::V1, &say("hi"));
        assert!(reply["text"].as_str().unwrap().starts_with("Ada here."));
        host::set_config("prompt", "Grace");
        let reply = send(&mut chat, Style::V2, &say("hi"));
        assert!(reply["text"].as_str().unwrap().starts_with("[Grace v2]"));
        host::set_config("prompt", "   ");
        let reply = send(&mut chat, Style::V1, &say("hi"));
        assert!(
            reply["text"]
                .as_str()
                .unwrap()
                .starts_with("Assistant here.")
        );
    }

    #[test]
    fn end_says_goodbye_reports_the_duration_and_starts_over() {
        host::reset();
        let mut chat = Conversation::default();
        host::set_now_ms(10_000);
        send(&mut chat, Style::V1, &say("hi"));
        host::set_now_ms(12_500);
        send(&mut chat, Style::V1, &say("again"));
        let end = chat.respond(Style::V1, br#"{"kind":"end"}"#);
        assert_eq!(
            String::from_utf8(end).unwrap(),
            r#"{"kind":"reply","turn":2,"text":"Goodbye after 2 turns.","version":"v1","ended":true,"duration_ms":2500}"#
        );
        assert_eq!(chat.turn(), 0);
        let next = send(&mut chat, Style::V1, &say("hello?"));
        assert_eq!(next["turn"], 1);
        let v2_end = send(&mut Conversation::default(), Style::V2, r#"{"kind":"end"}"#);
        assert_eq!(v2_end["text"], "[v2] bye · 0 turns");
        assert_eq!(v2_end["duration_ms"], 0);
    }

    #[test]
    fn turns_and_endings_are_logged() {
        host::reset();
        let mut chat = Conversation::default();
        send(&mut chat, Style::V1, &say("hi"));
        send(&mut chat, Style::V1, r#"{"kind":"end"}"#);
        let logs = host::take_logs();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].level, Level::Debug);
        assert_eq!(logs[0].message, "turn 1 answered by Assistant (2 bytes in)");
        assert_eq!(logs[1].level, Level::Info);
        assert_eq!(logs[1].message, "session ended after 1 turns");
    }

    #[test]
    fn bad_messages_get_error_replies_and_leave_the_session_alone() {
        host::reset();
        let mut chat = Conversation::default();
        send(&mut chat, Style::V1, &say("hi"));
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        let cases = [
            (
                "nonsense".to_owned(),
                "malformed message: expected a JSON object",
            ),
            (
                "{".to_owned(),
                "malformed message: EOF while parsing an object at line 1 column 1",
            ),
            (
                r#"{"text":"hi"}"#.to_owned(),
                "malformed message: missing field `kind` at line 1 column 13",
            ),
            (
                r#"{"kind":"shout","text":"hi"}"#.to_owned(),
                "unsupported kind `shout`: chat accepts `say` and `end`",
            ),
            (
                r#"{"kind":"say"}"#.to_owned(),
                "malformed say: missing field `text` at line 1 column 14",
            ),
            (say("  "), "`text` is empty"),
            (
                say(&long),
                "`text` is 2001 bytes, longer than the 2000 accepted",
            ),
        ];
        for (message, reason) in cases {
            let reply = send(&mut chat, Style::V1, &message);
            assert_eq!(reply["kind"], "error", "{message}");
            assert_eq!(reply["reason"], reason, "{message}");
        }
        assert_eq!(chat.turn(), 1);
    }

    #[test]
    fn each_instance_is_its_own_session() {
        host::reset();
        let mut alice = Harness::<Chat>::new();
        let mut bob = Harness::<Chat>::new();
        alice.init().unwrap();
        bob.init().unwrap();
        alice.handle(say("a").as_bytes());
        alice.handle(say("b").as_bytes());
        let reply: Value = serde_json::from_slice(&bob.handle(say("c").as_bytes())).unwrap();
        assert_eq!(reply["turn"], 1);
        assert_eq!(alice.agent().unwrap().conversation().turn(), 2);
        assert_eq!(reply["version"], STYLE.version());
    }

    #[test]
    fn long_multibyte_text_is_cut_on_character_boundaries() {
        assert_eq!(clip("héllo wörld", 4), "héll");
        assert_eq!(clip("ab", 5), "ab");
        assert_eq!(persona(Some(&"é".repeat(100))), "é".repeat(PERSONA_CHARS));
    }

    proptest! {
        #[test]
        fn turn_counts_the_accepted_says(texts in proptest::collection::vec("\\PC{0,30}", 1..12), v2 in any::<bool>()) {
            host::reset();
            let style = if v2 { Style::V2 } else { Style::V1 };
            let mut chat = Conversation::default();
            let mut accepted = 0;
            for text in &texts {
                let reply = send(&mut chat, style, &say(text));
                if text.trim().is_empty() {
                    prop_assert_eq!(&reply["kind"], "error");
                } else {
                    accepted += 1;
                    prop_assert_eq!(&reply["kind"], "reply");
                    prop_assert_eq!(&reply["turn"], accepted);
                    prop_assert_eq!(&reply["version"], style.version());
                }
            }
            prop_assert_eq!(chat.turn(), accepted);
            prop_assert!(chat.recent.len() <= REMEMBERED);
        }

        #[test]
        fn any_bytes_get_a_reply_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let reply: Value = serde_json::from_slice(&Conversation::default().respond(Style::V1, &bytes)).unwrap();
            prop_assert!(reply["kind"] == "reply" || reply["kind"] == "error");
        }
    }
}
