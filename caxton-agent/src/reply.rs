//! Replies the SDK writes itself, and the JSON string escaping they need.

use alloc::string::String;
use alloc::vec::Vec;

/// The reply `{"kind":"error","reason":"…"}`, with `reason` escaped as a JSON string.
///
/// Caxton counts a reply of kind `error` as an application error of the message. The SDK
/// answers with one when it cannot hand a message to the agent (the agent failed to start,
/// or the host passed a region that `caxton_alloc` never gave out); agents may use it for
/// their own errors too.
///
/// ```
/// let reply = caxton_agent::error_reply("unknown kind \"refund\"");
/// assert_eq!(reply, br#"{"kind":"error","reason":"unknown kind \"refund\""}"#);
/// ```
pub fn error_reply(reason: &str) -> Vec<u8> {
    let mut reply = String::with_capacity(reason.len() + 32);
    reply.push_str(r#"{"kind":"error","reason":"#);
    push_json_string(&mut reply, reason);
    reply.push('}');
    reply.into_bytes()
}

/// Appends `text` to `out` as a quoted JSON string (RFC 8259 escaping).
pub(crate) fn push_json_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let code = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[code >> 4]));
                out.push(char::from(HEX[code & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn error_reply_escapes_quotes_backslashes_and_control_characters() {
        let reply = error_reply("bad \"id\" \\ at\nline\u{1}");
        assert_eq!(
            core::str::from_utf8(&reply).unwrap(),
            r#"{"kind":"error","reason":"bad \"id\" \\ at\nline\u0001"}"#
        );
    }

    proptest! {
        #[test]
        fn error_reply_is_json_that_round_trips_any_reason(reason in any::<String>()) {
            let reply = error_reply(&reason);
            let value: serde_json::Value = serde_json::from_slice(&reply).unwrap();
            prop_assert_eq!(value["kind"].as_str(), Some("error"));
            prop_assert_eq!(value["reason"].as_str(), Some(reason.as_str()));
            prop_assert_eq!(value.as_object().unwrap().len(), 2);
        }
    }
}
