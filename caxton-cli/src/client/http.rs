//! The connection to `caxton serve`: one keep-alive HTTP agent, the bearer token, and the
//! translation of every refusal into the command line's one-line reasons.

use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::de::DeserializeOwned;
use serde_json::Value;
use ureq::http::Response;

use crate::output::Failure;

/// Where the server listens when neither `--server` nor `CAXTON_SERVER` says.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7340";

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one read may wait for the server, except on an event stream.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read from the server (event streams excepted): 64 MiB.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// The largest token file read: a token is a line, not a document.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// The connection options every client verb takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// The server's URL [env: CAXTON_SERVER; default: http://127.0.0.1:7340].
    #[arg(long, value_name = "URL")]
    pub(crate) server: Option<String>,
    /// A file holding the bearer token (else env CAXTON_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<std::path::PathBuf>,
    /// Print the API's JSON on standard output.
    #[arg(long)]
    pub(crate) json: bool,
}

/// An HTTP method the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
}

/// What a request carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// Nothing.
    Empty,
    /// A JSON document.
    Json(&'a Value),
    /// Raw bytes (a module, a message).
    Bytes(&'a [u8]),
}

/// A server's answer, read whole.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The body as received.
    pub(crate) body: Vec<u8>,
    /// The `Caxton-Deployment` header, when present.
    pub(crate) deployment: Option<String>,
}

impl Answer {
    /// Whether the status is 2xx.
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body read as JSON of type `T`.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Failure::new(format!(
                "the server's answer ({}) is not the JSON expected: {e}",
                self.status
            ))
        })
    }

    /// The body as text (lossy for bytes that are not UTF-8).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body on one line, for `--json`: compacted when it is JSON, as received otherwise.
    pub(crate) fn json_line(&self) -> String {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(value) => value.to_string(),
            Err(_) => self.text().trim_end().to_owned(),
        }
    }
}

/// A connection to one server.
#[derive(Debug)]
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for the server and token the options name (the environment otherwise).
    pub(crate) fn connect(args: &ConnectArgs) -> Result<Self, Failure> {
        let server = match &args.server {
            Some(server) => server.clone(),
            None => std::env::var("CAXTON_SERVER").unwrap_or_else(|_| DEFAULT_SERVER.to_owned()),
        };
        let base = check_server(&server)?;
        let token = match &args.token_file {
            Some(path) => Some(read_token_file(path)?),
            None => match std::env::var("CAXTON_TOKEN") {
                Ok(token) => Some(check_token(&token, "CAXTON_TOKEN")?),
                Err(std::env::VarError::NotPresent) => None,
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Failure::new("CAXTON_TOKEN is not UTF-8 text"));
                }
            },
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .max_redirects(0)
            .user_agent(concat!("caxton/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client { agent, base, token })
    }

    /// Sends one request and reads the whole answer, whatever its status; only a server
    /// that cannot be reached (or an answer cut short) is a failure.
    pub(crate) fn call(
        &self,
        method: Method,
        path: &str,
        payload: Payload<'_>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, Failure> {
        let response = self.send(method, path, payload, headers, false)?;
        let status = response.status().as_u16();
        let deployment = response
            .headers()
            .get("caxton-deployment")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .into_with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| self.unreachable(&e))?;
        Ok(Answer {
            status,
            body,
            deployment,
        })
    }

    /// Sends one request and returns the answer when it is a success; a 401 or an error
    /// answer is a failure with the server's one-line reason.
    pub(crate) fn expect(
        &self,
        method: Method,
        path: &str,
        payload: Payload<'_>,
    ) -> Result<Answer, Failure> {
        let answer = self.call(method, path, payload, &[])?;
        if answer.is_success() {
            Ok(answer)
        } else {
            Err(refusal(&answer))
        }
    }

    /// `GET path`, expecting success, read as JSON.
    pub(crate) fn get_json(&self, path: &str) -> Result<(Answer, Value), Failure> {
        let answer = self.expect(Method::Get, path, Payload::Empty)?;
        let value = answer.json()?;
        Ok((answer, value))
    }

    /// Opens a stream (server-sent events): no read timeout, the body left unread.
    pub(crate) fn stream(&self, path: &str) -> Result<Box<dyn Read + Send>, Failure> {
        let response = self.send(
            Method::Get,
            path,
            Payload::Empty,
            &[("accept", "text/event-stream")],
            true,
        )?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response
                .into_body()
                .into_with_config()
                .limit(MAX_ANSWER_BYTES)
                .read_to_vec()
                .unwrap_or_default();
            return Err(refusal(&Answer {
                status,
                body,
                deployment: None,
            }));
        }
        Ok(Box::new(response.into_body().into_reader()))
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        payload: Payload<'_>,
        headers: &[(&str, &str)],
        streaming: bool,
    ) -> Result<Response<ureq::Body>, Failure> {
        let url = format!("{}{path}", self.base);
        let mut extra: Vec<(&str, String)> = headers
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        if let Some(token) = &self.token {
            extra.push(("authorization", format!("Bearer {token}")));
        }
        let result = match method {
            Method::Get | Method::Delete => {
                let mut request = if method == Method::Get {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                for (name, value) in &extra {
                    request = request.header(*name, value);
                }
                if streaming {
                    request = request.config().timeout_per_read(None).build();
                }
                request.call()
            }
            Method::Post | Method::Put => {
                let mut request = if method == Method::Post {
                    self.agent.post(&url)
                } else {
                    self.agent.put(&url)
                };
                for (name, value) in &extra {
                    request = request.header(*name, value);
                }
                match payload {
                    Payload::Empty => request.send_empty(),
                    Payload::Json(value) => request
                        .header("content-type", "application/json")
                        .send(value.to_string().as_bytes()),
                    Payload::Bytes(bytes) => request
                        .header("content-type", "application/octet-stream")
                        .send(bytes),
                }
            }
        };
        result.map_err(|e| self.unreachable(&e))
    }

    fn unreachable(&self, error: &ureq::Error) -> Failure {
        Failure::new(format!(
            "cannot reach the server at {}: {}",
            self.base,
            transport_reason(error)
        ))
    }
}

/// The reason a request did not get through, in a few words.
fn transport_reason(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Timeout(_) => format!("no answer in time ({error})"),
        other => other.to_string(),
    }
}

/// The server URL, checked and without a trailing slash.
pub(crate) fn check_server(server: &str) -> Result<String, Failure> {
    let trimmed = server.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(trimmed.to_owned())
        }
        _ => Err(Failure::new(format!(
            "--server {server:?}: expected a URL such as {DEFAULT_SERVER}"
        ))),
    }
}

/// Reads a token file: one line, its line ending dropped.
fn read_token_file(path: &Path) -> Result<String, Failure> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::new(format!("cannot read the token file {shown}: {e}")))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| Failure::new(format!("cannot read the token file {shown}: {e}")))?;
    check_token(&text, &format!("the token file {shown}"))
}

/// A token as sent: trailing line endings dropped; empty or unprintable is refused.
pub(crate) fn check_token(text: &str, source: &str) -> Result<String, Failure> {
    let token = text.trim_end_matches(['\n', '\r']);
    if token.trim().is_empty() {
        return Err(Failure::new(format!("{source} holds an empty token")));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Failure::new(format!(
            "{source}: a token is one line of printable ASCII without spaces"
        )));
    }
    Ok(token.to_owned())
}

/// The failure for an error answer: the 401 line, or the server's message and code.
pub(crate) fn refusal(answer: &Answer) -> Failure {
    Failure::new(error_line(answer.status, &answer.body))
}

/// One line for an error answer: `<message> (<code>)` from the error body, the token
/// advice for a 401, the status for a body that is not the API's error.
pub(crate) fn error_line(status: u16, body: &[u8]) -> String {
    if status == 401 {
        return "the server refused the token (401): set CAXTON_TOKEN or --token-file".to_owned();
    }
    match api_error(body) {
        Some((code, message)) => format!("{message} ({code})"),
        None => {
            let text = String::from_utf8_lossy(body);
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            match first {
                Some(line) => format!("the server answered {status}: {}", clip(line, 200)),
                None => format!("the server answered {status}"),
            }
        }
    }
}

/// The `code` and `message` of `{"error": {"code", "message"}}`.
pub(crate) fn api_error(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let code = error.get("code")?.as_str()?.to_owned();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(|m| m.lines().next().unwrap_or_default().trim().to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| code.replace('_', " "));
    Some((code, message))
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// One path segment, percent-encoded (ids and agent names are safe already; anything
/// else still makes a well-formed URL).
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether standard error is a terminal (a live progress line goes there only then).
pub(crate) fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_becomes_message_and_code() {
        let body = br#"{"error": {"code": "is_production", "message": "processor-v1 serves production\nmore"}}"#;
        assert_eq!(
            error_line(409, body),
            "processor-v1 serves production (is_production)"
        );
        let body = br#"{"error": {"code": "not_found"}}"#;
        assert_eq!(error_line(404, body), "not found (not_found)");
    }

    #[test]
    fn a_401_names_the_token_settings() {
        let line = error_line(
            401,
            br#"{"error": {"code": "unauthorized", "message": "no"}}"#,
        );
        assert_eq!(
            line,
            "the server refused the token (401): set CAXTON_TOKEN or --token-file"
        );
    }

    #[test]
    fn a_body_that_is_not_the_api_error_gives_the_status() {
        assert_eq!(
            error_line(502, b"\n  Bad Gateway\n"),
            "the server answered 502: Bad Gateway"
        );
        assert_eq!(error_line(500, b""), "the server answered 500");
        assert_eq!(
            error_line(500, br#"{"oops": 1}"#),
            r#"the server answered 500: {"oops": 1}"#
        );
    }

    #[test]
    fn tokens_lose_their_line_ending_and_empty_ones_are_refused() {
        assert_eq!(check_token("s3cret\n", "f").unwrap(), "s3cret");
        assert_eq!(check_token("s3cret\r\n", "f").unwrap(), "s3cret");
        assert!(
            check_token("\n", "the token file t")
                .unwrap_err()
                .reason()
                .contains("empty token")
        );
        assert!(check_token("two words", "f").is_err());
    }

    #[test]
    fn token_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "abc");
        std::fs::write(&path, "").unwrap();
        let err = read_token_file(&path).unwrap_err();
        assert!(err.reason().contains("token"), "{err:?}");
        let err = read_token_file(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.reason().contains("cannot read the token file"),
            "{err:?}"
        );
    }

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            check_server("http://127.0.0.1:7340/").unwrap(),
            "http://127.0.0.1:7340"
        );
        assert!(check_server("https://caxton.example").is_ok());
        assert!(check_server("127.0.0.1:7340").is_err());
        assert!(check_server("http://").is_err());
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("processor-v2-7f8d9"), "processor-v2-7f8d9");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn text_is_clipped_on_characters() {
        assert_eq!(clip("ééé", 2), "éé…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
