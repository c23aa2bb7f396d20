//! End to end: the real `caxton serve` on a loopback port with a temporary SQLite
//! registry, driven only through the real `caxton` binary and raw HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CAXTON: &str = env!("CARGO_BIN_EXE_caxton");
const TOKEN: &str = "e2e-token-0123456789abcdef";

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

/// A running `caxton serve`.
struct Serve {
    child: Child,
    url: String,
    dir: PathBuf,
    token: Option<&'static str>,
}

impl Serve {
    fn start(dir: &Path, token: Option<&'static str>) -> Serve {
        let mut command = Command::new(CAXTON);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--registry")
            .arg(format!("sqlite:{}", dir.join("registry.db").display()))
            .current_dir(dir)
            .env_remove("CAXTON_TOKEN")
            .env("CAXTON_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            let file = dir.join("token");
            std::fs::write(&file, format!("{token}\n")).unwrap();
            command.arg("--token-file").arg(file);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("caxton serve ended before listening")
                .unwrap();
            if let Some(url) = line.split("Listening on ").nth(1) {
                break url.trim().to_owned();
            }
        };
        // Keep draining what it prints so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            url,
            dir: dir.to_path_buf(),
            token,
        }
    }

    /// Runs the `caxton` client against this server.
    fn caxton(&self, args: &[&str]) -> Output {
        let mut command = Command::new(CAXTON);
        command
            .args(args)
            .env("CAXTON_SERVER", &self.url)
            .env_remove("CAXTON_TOKEN")
            .current_dir(&self.dir);
        if let Some(token) = self.token {
            command.env("CAXTON_TOKEN", token);
        }
        command.output().unwrap()
    }

    /// `caxton deploy agent samples/<module> --name <agent> --label <label> <extra…>`.
    fn deploy(&self, module: &str, agent: &str, label: &str, extra: &[&str]) -> Output {
        let module = sample(module);
        let mut args = vec![
            "deploy",
            "agent",
            module.to_str().unwrap(),
            "--name",
            agent,
            "--label",
            label,
        ];
        args.extend_from_slice(extra);
        self.caxton(&args)
    }

    fn http(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// A raw request: (status, `Caxton-Deployment`, body).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>, Vec<u8>) {
        call(
            &self.http(),
            &self.url,
            self.token,
            method,
            path,
            body,
            headers,
        )
    }

    fn json(&self, path: &str) -> Value {
        let (status, _, body) = self.call("GET", path, b"", &[]);
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    fn newest(&self, agent: &str) -> Value {
        self.json(&format!("/v1/agents/{agent}/deployments"))[0].clone()
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "caxton serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(
    http: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Vec<u8>) {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{url}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = http.run(request.body(body.to_vec()).unwrap()).unwrap();
    let status = response.status().as_u16();
    let deployment = response
        .headers()
        .get("caxton-deployment")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().read_to_vec().unwrap();
    (status, deployment, body)
}

fn assert_exit(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Orders sent to `processor` on a thread of its own, a share with a coupon (which
/// processor v2 fails), until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(serve: &Serve) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (url, token, http) = (serve.url.clone(), serve.token, serve.http());
        let thread = {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let mut order = json!({"kind": "order", "id": format!("o-{n}"),
                        "items": [{"sku": "SKU-A1", "qty": 1 + n % 3, "price_cents": 1999}]});
                    if n.is_multiple_of(3) {
                        order["coupon"] = json!("SAVE10");
                    }
                    let (status, _, _) = call(
                        &http,
                        &url,
                        token,
                        "POST",
                        "/v1/agents/processor/messages",
                        order.to_string().as_bytes(),
                        &[],
                    );
                    assert!(matches!(status, 200 | 502 | 503), "status {status}");
                    sent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Traffic {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

fn write_spec(dir: &Path, name: &str, spec: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, spec).unwrap();
    path.display().to_string()
}

const CANARY: &str = "deployment:
  strategy: canary
  stages:
    - canary: { weight: 20%, hold: 2s }
    - canary: { weight: 50%, hold: 2s }
    - full: 100%
  rollback_on: [ \"error_rate > 5%\" ]
  check_interval: 250ms
  min_requests: 20
";

#[test]
fn an_operator_deploys_canaries_and_rolls_back_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), None);
    let canary = write_spec(dir.path(), "canary.yaml", CANARY);

    // v1 becomes production.
    let output = serve.deploy("processor_v1.wasm", "processor", "v1", &["--wait"]);
    assert_exit(&output, 0, "deploy v1");
    let v1 = serve.newest("processor");
    assert_eq!(
        (v1["label"].as_str(), v1["is_production"].as_bool()),
        (Some("v1"), Some(true)),
        "{v1}"
    );

    // The regressing v2 is rolled back by its gate under live traffic: exit 1.
    let traffic = Traffic::start(&serve);
    let output = serve.deploy(
        "processor_v2.wasm",
        "processor",
        "v2",
        &["--spec", &canary, "--wait"],
    );
    assert_exit(&output, 1, "deploy v2 (regressing)");
    let v2 = serve.newest("processor");
    assert_eq!(v2["label"], "v2");
    assert_eq!(v2["state"], "rolled_back", "{v2}");
    assert_eq!(serve.json("/v1/agents/processor")["production"], v1["id"]);

    // The good v3 goes all the way.
    let output = serve.deploy(
        "processor_v3.wasm",
        "processor",
        "v3",
        &["--spec", &canary, "--wait"],
    );
    assert_exit(&output, 0, "deploy v3");
    let sent = traffic.stop();
    assert!(sent > 100, "only {sent} orders were sent");
    let v3 = serve.newest("processor");
    assert_eq!(v3["is_production"], true, "{v3}");
    let v1_now = serve.json(&format!("/v1/deployments/{}", v1["id"].as_str().unwrap()));
    assert_eq!(v1_now["state"], "retired", "{v1_now}");

    // status --json is the API's status, and it matches the deployments.
    let output = serve.caxton(&["status", "processor", "--json"]);
    assert_exit(&output, 0, "status --json");
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["production"], v3["id"]);
    assert_eq!(status["rollout"], Value::Null);
    let production_rows: Vec<&Value> = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["role"] == "production")
        .collect();
    assert_eq!(production_rows.len(), 1);
    assert_eq!(production_rows[0]["id"], v3["id"]);

    // Roll back to v1, retired when v3 was promoted: reloaded from its artifact.
    let v3_id = v3["id"].as_str().unwrap();
    let v1_id = v1["id"].as_str().unwrap();
    let output = serve.caxton(&["rollback", v3_id, "--to", v1_id]);
    assert_exit(&output, 0, "rollback to the retired v1");
    let status = serve.json("/v1/agents/processor");
    let production = status["production"].as_str().unwrap().to_owned();
    let restored = serve.json(&format!("/v1/deployments/{production}"));
    assert_eq!(restored["label"], "v1", "{restored}");
    let (code, answered_by, _) = serve.call(
        "POST",
        "/v1/agents/processor/messages",
        br#"{"kind": "order", "id": "o-x", "items": [{"sku": "SKU-A1", "qty": 1, "price_cents": 100}]}"#,
        &[],
    );
    assert_eq!(
        (code, answered_by.as_deref()),
        (200, Some(production.as_str()))
    );
    let history = serve.caxton(&["history", "processor", "--json"]);
    assert_exit(&history, 0, "history");
}

#[test]
fn sessions_opened_before_a_rainbow_deploy_stay_on_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), None);
    let output = serve.deploy("chat_v1.wasm", "chat", "v1", &["--sessions", "--wait"]);
    assert_exit(&output, 0, "deploy chat v1");
    let v1 = serve.newest("chat");
    let hello = br#"{"kind": "say", "text": "hello"}"#;
    for session in ["s-1", "s-2"] {
        let (code, by, _) = serve.call(
            "POST",
            "/v1/agents/chat/messages",
            hello,
            &[("caxton-session", session)],
        );
        assert_eq!((code, by.as_deref()), (200, v1["id"].as_str()));
    }

    let rainbow = write_spec(
        dir.path(),
        "rainbow.yaml",
        "deployment:\n  strategy: rainbow\n",
    );
    let output = serve.deploy("chat_v2.wasm", "chat", "v2", &["--spec", &rainbow]);
    assert_exit(&output, 0, "deploy chat v2 (rainbow)");
    let v2 = serve.newest("chat");
    assert_eq!(v2["label"], "v2");
    // Wait for the new version to take new sessions.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, by, _) = serve.call(
            "POST",
            "/v1/agents/chat/messages",
            hello,
            &[("caxton-session", "s-new")],
        );
        if code == 200 && by.as_deref() == v2["id"].as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2 never took a new session ({code}, {by:?})"
        );
        let _ = serve.call("DELETE", "/v1/agents/chat/sessions/s-new", b"", &[]);
        std::thread::sleep(Duration::from_millis(50));
    }
    for session in ["s-1", "s-2"] {
        let (code, by, _) = serve.call(
            "POST",
            "/v1/agents/chat/messages",
            hello,
            &[("caxton-session", session)],
        );
        assert_eq!(
            (code, by.as_deref()),
            (200, v1["id"].as_str()),
            "{session} left v1"
        );
    }
    // When the old sessions end, v1 drains and the rollout completes.
    for session in ["s-1", "s-2"] {
        let (code, _, _) = serve.call(
            "DELETE",
            &format!("/v1/agents/chat/sessions/{session}"),
            b"",
            &[],
        );
        assert_eq!(code, 204);
    }
    let output = serve.caxton(&["status", "chat", "--watch"]);
    assert_exit(&output, 0, "status --watch until the rainbow finished");
    assert_eq!(serve.json("/v1/agents/chat")["production"], v2["id"]);
}

#[test]
fn a_canary_survives_sigkill_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), None);
    assert_exit(
        &serve.deploy("processor_v1.wasm", "processor", "v1", &["--wait"]),
        0,
        "deploy v1",
    );
    let long = write_spec(
        dir.path(),
        "long.yaml",
        "deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 10%, hold: 1s }\n    - canary: { weight: 50%, hold: 1h }\n    - full: 100%\n  check_interval: 250ms\n  min_requests: 5\n",
    );
    assert_exit(
        &serve.deploy("processor_v3.wasm", "processor", "v3", &["--spec", &long]),
        0,
        "start the canary",
    );
    let candidate = serve.newest("processor");
    // Enough traffic for the first step to show the evidence it needs to go on.
    let traffic = Traffic::start(&serve);
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let status = serve.json("/v1/agents/processor");
        // The second step, so that a resumed rollout must know which step it is at.
        if status["rollout"]["weight_set"].as_f64() == Some(50.0) && status["rollout"]["step"] == 2
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the canary never reached 50 %: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    traffic.stop();
    serve.sigkill();
    let serve = Serve::start(dir.path(), None);
    // The restarted server resumes the same rollout from its journal, at the same step.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let status = serve.json("/v1/agents/processor");
        assert_eq!(status["rollout"]["deployment"], candidate["id"], "{status}");
        if status["rollout"]["weight_set"].as_f64() == Some(50.0)
            && status["rollout"]["stage"].is_string()
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the canary was not resumed at 50 %: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(after["rollout"]["step"], 2, "{after}");
    assert_eq!(
        after["rollout"]["steps"], before["rollout"]["steps"],
        "{after}"
    );
    assert_eq!(
        after["rollout"]["stage"], before["rollout"]["stage"],
        "{after}"
    );
    assert_eq!(after["production"], before["production"]);

    // The operator takes it from there.
    let id = candidate["id"].as_str().unwrap();
    assert_exit(
        &serve.caxton(&["promote", id, "--full"]),
        0,
        "promote --full after the restart",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while serve.json("/v1/agents/processor")["production"] != candidate["id"] {
        assert!(Instant::now() < deadline, "the promotion never landed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn refused_requests_change_nothing_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), Some(TOKEN));
    assert_exit(
        &serve.deploy("processor_v1.wasm", "processor", "v1", &["--wait"]),
        0,
        "deploy v1",
    );
    assert_exit(
        &serve.deploy("chat_v1.wasm", "chat", "v1", &["--sessions", "--wait"]),
        0,
        "deploy chat",
    );
    let processor_v1 = serve.newest("processor");
    let before = serve.json("/v1/agents/processor/deployments");

    // No token, a wrong token: 401, and the CLI says so on one line with exit 2.
    let anonymous = call(
        &serve.http(),
        &serve.url,
        None,
        "GET",
        "/v1/agents/processor",
        b"",
        &[],
    );
    assert_eq!(anonymous.0, 401);
    let wrong = call(
        &serve.http(),
        &serve.url,
        Some("e2e-token-0123456789abcdeX"),
        "POST",
        "/v1/agents/processor/deployments",
        b"{}",
        &[],
    );
    assert_eq!(wrong.0, 401);
    let token = serve.token.take();
    let output = serve.caxton(&["list", "processor"]);
    assert_exit(&output, 2, "list without the token");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    serve.token = token;

    // A bad body: 400 naming the field.
    let (code, _, body) = serve.call(
        "POST",
        "/v1/agents/processor/deployments",
        br#"{"module": "sha256:00", "strategy": "canary"}"#,
        &[],
    );
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("strategy"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Another agent's deployment: 404 through the API and through the CLI's verbs.
    let id = processor_v1["id"].as_str().unwrap();
    let (code, _, _) = serve.call(
        "POST",
        &format!("/v1/agents/chat/deployments/{id}/rollback"),
        b"{}",
        &[],
    );
    assert_eq!(code, 404);
    let (code, _, _) = serve.call(
        "DELETE",
        &format!("/v1/agents/chat/deployments/{id}"),
        b"",
        &[],
    );
    assert_eq!(code, 404);

    // Deleting the production is a conflict.
    let output = serve.caxton(&["delete", id]);
    assert_exit(&output, 2, "delete the production");

    assert_eq!(serve.json("/v1/agents/processor/deployments"), before);

    // SIGTERM stops it cleanly.
    let status = serve.sigterm();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_refuses_an_open_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(CAXTON)
        .args(["serve", "--listen", "0.0.0.0:0", "--registry"])
        .arg(format!("sqlite:{}", dir.path().join("r.db").display()))
        .env_remove("CAXTON_TOKEN")
        .output()
        .unwrap();
    assert_exit(&output, 2, "serve on 0.0.0.0 without a token");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
    assert!(
        !dir.path().join("r.db").exists(),
        "nothing is opened before the refusal"
    );
}
