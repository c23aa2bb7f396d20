//! The client verbs through the real binary, without a real server: a port nobody
//! listens on, and a tiny hand-written HTTP responder that gives one fixed answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::mpsc::{Receiver, channel};
use std::thread;

/// Runs `caxton` with `args`, no server or token from the environment.
fn caxton(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_caxton"));
    command
        .args(args)
        .env_remove("CAXTON_SERVER")
        .env_remove("CAXTON_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the caxton binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A URL on loopback where nothing listens.
fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Reads one request: its head and as many body bytes as Content-Length says.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    head.push_str(&String::from_utf8_lossy(&body));
    Some(head)
}

/// Answers every request with `status`, `headers` and `body`; returns the URL and the
/// requests received.
fn responder(status: &str, headers: &str, body: &str) -> (String, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    );
    let (sent, received) = channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if let Some(request) = read_request(&stream) {
                let _ = sent.send(request);
                let _ = stream.write_all(answer.as_bytes());
                let _ = stream.flush();
            }
        }
    });
    (url, received)
}

/// Answers each request with the answer of the first route whose prefix its request
/// line starts with (404 otherwise); an answer without a content-length is sent whole
/// and the connection closed, as an event stream that ends.
fn router(routes: Vec<(&'static str, String)>) -> (String, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sent, received) = channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            let answer = routes
                .iter()
                .find(|(prefix, _)| request.starts_with(prefix))
                .map(|(_, answer)| answer.clone())
                .unwrap_or_else(|| {
                    json_answer(
                        "404 Not Found",
                        r#"{"error": {"code": "not_found", "message": "no route"}}"#,
                    )
                });
            let _ = sent.send(request);
            let _ = stream.write_all(answer.as_bytes());
            let _ = stream.flush();
        }
    });
    (url, received)
}

fn json_answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// An event stream that sends `events` (kind, JSON) then ends.
fn event_stream(events: &[(&str, String)]) -> String {
    let mut answer = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n: hello\n\n".to_owned();
    for (kind, data) in events {
        answer.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }
    answer
}

fn event(at_s: f64, deployment: &str, fields: &str) -> String {
    format!(
        r#"{{"at_s": {at_s}, {fields}, "agent_id": "processor", "deployment_id": "{deployment}", "version": "0123456789ab", "timestamp": "2026-11-30T10:00:00Z"}}"#
    )
}

const CREATED: &str = r#"{"id": "processor-v2-7f8d9", "agent": "processor", "label": "v2", "state": "pending", "is_production": false, "strategy": "canary"}"#;

fn canary_events(ending: &str) -> Vec<(&'static str, String)> {
    let id = "processor-v2-7f8d9";
    vec![
        (
            "started",
            event(
                0.0,
                id,
                r#""event": "started", "strategy": "canary", "baseline_id": "processor-v1-a1b2c""#,
            ),
        ),
        (
            "stage_started",
            event(
                0.0,
                "processor-v1-a1b2c",
                r#""event": "stage_started", "stage": "canary.5_percent", "percentage": 5.0, "hold_s": 300.0"#,
            ),
        ),
        (
            "validation_finished",
            event(
                0.8,
                id,
                r#""event": "validation_finished", "passed": true, "summary": "", "duration_s": 0.8"#,
            ),
        ),
        (
            "stage_started",
            event(
                1.0,
                id,
                r#""event": "stage_started", "stage": "canary.5_percent", "percentage": 5.0, "hold_s": 300.0"#,
            ),
        ),
        ("finished", event(9.0, id, ending)),
    ]
}

fn deploy_server(ending: &str) -> (String, Receiver<String>) {
    router(vec![
        (
            "PUT /v1/artifacts ",
            json_answer(
                "201 Created",
                r#"{"digest": "sha256:0123456789abcdef0123", "size": 8}"#,
            ),
        ),
        (
            "POST /v1/agents/processor/deployments ",
            json_answer("201 Created", CREATED),
        ),
        (
            "GET /v1/agents/processor/events ",
            event_stream(&canary_events(ending)),
        ),
    ])
}

fn module(dir: &std::path::Path) -> String {
    let module = dir.join("processor.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    module.to_str().unwrap().to_owned()
}

#[test]
fn deploy_uploads_creates_and_stops_at_the_first_stage() {
    let dir = tempfile::tempdir().unwrap();
    let module = module(dir.path());
    let (url, requests) = deploy_server(
        r#""event": "finished", "outcome": "rolled_back", "reason": "error_rate > 1%""#,
    );
    let output = caxton(
        &[
            "deploy",
            "agent",
            &module,
            "--label",
            "v2",
            "--canary-stages",
            "5:5m,50:10m",
            "--server",
            &url,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("✓ Module uploaded sha256:0123456789ab… (8 B, "),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "→ Rolling out processor-v2-7f8d9 of processor with canary (production: processor-v1-a1b2c)"
    );
    assert_eq!(lines[2], "✓ Validation passed (800ms)");
    assert_eq!(lines[3], "✓ Canary 5% started (0.2s)");
    assert!(lines[4].starts_with("→ Monitoring for 5 minutes"), "{out}");
    assert_eq!(lines[5], "→ Deployment ID: processor-v2-7f8d9");
    assert_eq!(lines[6], "→ Follow with: caxton status processor --watch");
    assert_eq!(lines.len(), 7, "{out}");
    let upload = requests.recv().unwrap();
    assert!(upload.ends_with("\r\n\r\n\0asm\x01\0\0\0"), "{upload:?}");
    let create = requests.recv().unwrap();
    let body: serde_json::Value =
        serde_json::from_str(create.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["module"], "sha256:0123456789abcdef0123");
    assert_eq!(body["label"], "v2");
    assert_eq!(
        body["rollout"],
        serde_json::json!({"strategy": "canary", "stages": [
            {"canary": {"weight": "5%", "hold": "5m"}}, {"canary": {"weight": "50%", "hold": "10m"}}, {"full": "100%"}]})
    );
}

#[test]
fn deploy_wait_follows_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let module = module(dir.path());
    let (url, _requests) = deploy_server(
        r#""event": "finished", "outcome": "rolled_back", "reason": "error_rate > 1%""#,
    );
    let output = caxton(
        &["deploy", "agent", &module, "--wait", "--server", &url],
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let out = stdout(&output);
    assert!(
        out.contains("→ Deployment ID: processor-v2-7f8d9\n"),
        "{out}"
    );
    assert!(!out.contains("Follow with"), "{out}");
    assert!(
        out.ends_with("✗ processor-v2-7f8d9 not deployed (rolled back): error_rate > 1%\n"),
        "{out}"
    );

    let (url, _requests) = deploy_server(r#""event": "finished", "outcome": "promoted""#);
    let output = caxton(
        &[
            "deploy", "agent", &module, "--wait", "--json", "--server", &url,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let out = stdout(&output);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["id"], "processor-v2-7f8d9");
    assert_eq!(lines.last().unwrap()["outcome"], "promoted");
    assert_eq!(lines.len(), 5, "{out}");
}

#[test]
fn deploy_falls_back_to_asking_when_the_stream_ends_early() {
    let dir = tempfile::tempdir().unwrap();
    let module = module(dir.path());
    let id = "processor-v2-7f8d9";
    let (url, _requests) = router(vec![
        (
            "PUT /v1/artifacts ",
            json_answer("200 OK", r#"{"digest": "sha256:ab", "size": 8}"#),
        ),
        (
            "POST /v1/agents/processor/deployments ",
            json_answer("201 Created", CREATED),
        ),
        (
            "GET /v1/agents/processor/events ",
            event_stream(&[(
                "validation_finished",
                event(
                    0.8,
                    id,
                    r#""event": "validation_finished", "passed": true, "summary": "", "duration_s": 0.8"#,
                ),
            )]),
        ),
        (
            "GET /v1/deployments/processor-v2-7f8d9 ",
            json_answer(
                "200 OK",
                r#"{"id": "processor-v2-7f8d9", "agent": "processor", "state": "running", "is_production": true}"#,
            ),
        ),
    ]);
    let output = caxton(
        &["deploy", "agent", &module, "--wait", "--server", &url],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout(&output).ends_with("✓ processor-v2-7f8d9 is running, production\n"),
        "{output:?}"
    );
}

#[test]
fn a_server_nobody_listens_on_is_exit_2_naming_the_url() {
    let url = closed_url();
    for args in [
        vec!["status", "processor"],
        vec!["list", "processor", "--all"],
        vec!["rollback", "processor-v2-7f8d9"],
    ] {
        let mut args = args;
        args.extend(["--server", &url]);
        let output = caxton(&args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("caxton: cannot reach the server at {url}: ")),
            "{err}"
        );
        assert!(stdout(&output).is_empty());
    }
    // The environment names the server too.
    let output = caxton(&["history", "processor"], &[("CAXTON_SERVER", &url)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains(&url), "{}", stderr(&output));
}

#[test]
fn a_refused_token_is_exit_2_with_the_token_line() {
    let (url, requests) = responder(
        "401 Unauthorized",
        "content-type: application/json\r\n",
        r#"{"error": {"code": "unauthorized", "message": "a bearer token is required"}}"#,
    );
    let output = caxton(
        &["status", "processor", "--server", &url],
        &[("CAXTON_TOKEN", "not-the-token")],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        stderr(&output),
        "caxton: the server refused the token (401): set CAXTON_TOKEN or --token-file\n"
    );
    let request = requests.recv().unwrap();
    assert!(
        request.starts_with("GET /v1/agents/processor HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer not-the-token\r\n"),
        "{request}"
    );
}

#[test]
fn a_token_file_is_sent_without_its_newline_and_an_empty_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let (url, requests) = responder("401 Unauthorized", "", "");
    let output = caxton(
        &[
            "list",
            "processor",
            "--server",
            &url,
            "--token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let request = requests.recv().unwrap().to_ascii_lowercase();
    assert!(
        request.contains("authorization: bearer s3cret\r\n"),
        "{request}"
    );
    assert!(
        request.starts_with("get /v1/agents/processor/deployments?include_deleted=true")
            || request.starts_with("get /v1/agents/processor/deployments http"),
        "{request}"
    );

    std::fs::write(&token, "\n").unwrap();
    let output = caxton(
        &[
            "list",
            "processor",
            "--server",
            &url,
            "--token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("empty token"), "{output:?}");
}

#[test]
fn an_error_answer_is_one_line_with_its_code() {
    let (url, _requests) = responder(
        "404 Not Found",
        "content-type: application/json\r\n",
        r#"{"error": {"code": "not_found", "message": "no deployment processor-v9-00000"}}"#,
    );
    let output = caxton(&["delete", "processor-v9-00000", "--server", &url], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        stderr(&output),
        "caxton: no deployment processor-v9-00000 (not_found)\n"
    );
}

#[test]
fn a_reply_is_printed_and_an_agent_failure_is_exit_1() {
    let (url, requests) = responder(
        "200 OK",
        "caxton-deployment: processor-v1-a1b2c\r\ncontent-type: application/json\r\n",
        r#"{"kind": "text", "text": "order accepted"}"#,
    );
    let output = caxton(
        &[
            "send",
            "processor",
            "hello",
            "--session",
            "s-1",
            "--server",
            &url,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout(&output),
        "{\"kind\": \"text\", \"text\": \"order accepted\"}\n"
    );
    let request = requests.recv().unwrap();
    assert!(
        request.starts_with("POST /v1/agents/processor/messages"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("caxton-session: s-1\r\n"),
        "{request}"
    );
    assert!(request.ends_with("\r\n\r\nhello"), "{request}");

    let output = caxton(
        &["send", "processor", "hello", "--json", "--server", &url],
        &[],
    );
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        printed,
        serde_json::json!({"deployment": "processor-v1-a1b2c", "reply": {"kind": "text", "text": "order accepted"}})
    );

    let (url, _requests) = responder(
        "502 Bad Gateway",
        "content-type: application/json\r\n",
        r#"{"error": {"code": "agent_failed", "message": "the agent trapped: unreachable"}}"#,
    );
    let output = caxton(&["send", "processor", "hello", "--server", &url], &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        stderr(&output),
        "caxton: the agent trapped: unreachable (agent_failed)\n"
    );
}

#[test]
fn bad_flags_are_exit_2_before_anything_is_sent() {
    let url = closed_url();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("processor.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let module = module.to_str().unwrap();
    let spec = dir.path().join("bad.yaml");
    std::fs::write(
        &spec,
        "deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 5%, hold: 5x }\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["deploy", "agent"], "MODULE"),
        (
            vec!["deploy", "agent", module, "--model", "only-a-name"],
            "--model",
        ),
        (
            vec!["deploy", "agent", module, "--config", "novalue"],
            "KEY=VALUE",
        ),
        (
            vec!["deploy", "agent", module, "--strategy", "yolo"],
            "--strategy",
        ),
        (
            vec!["deploy", "agent", module, "--spec", spec.to_str().unwrap()],
            "deployment.stages[0].canary.hold",
        ),
        (
            vec![
                "deploy",
                "agent",
                module,
                "--strategy",
                "canary",
                "--spec",
                "x.yaml",
            ],
            "--spec",
        ),
        (vec!["deploy", "agent", "missing.wasm"], "missing.wasm"),
        (vec!["status"], "AGENT"),
        (vec!["promote", "p-v2", "--fully"], "--fully"),
    ];
    for (mut args, needle) in cases {
        args.extend(["--server", &url]);
        let output = caxton(&args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("cannot reach"), "{args:?}: {err}");
    }
    let output = caxton(&["status", "processor", "--server", "localhost:7340"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--server"), "{output:?}");
}
