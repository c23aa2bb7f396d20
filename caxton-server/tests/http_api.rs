//! The HTTP API over a real host, through real loopback connections.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_host::Host;
use caxton_server::{Server, Token, install_prometheus, openapi};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789abcdef";

struct TestServer {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<Result<(), caxton_server::ServeError>>>,
    http: ureq::Agent,
    token: Option<&'static str>,
    routes: Vec<(axum::http::Method, &'static str)>,
}

struct Reply {
    status: u16,
    deployment: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

impl TestServer {
    fn start(
        configure: impl FnOnce(caxton_server::ServerBuilder) -> caxton_server::ServerBuilder,
        token: Option<&'static str>,
    ) -> Self {
        let prometheus = install_prometheus().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let host = Arc::new(Host::builder().build().unwrap());
        let mut builder = Server::builder(host).prometheus(prometheus);
        if let Some(token) = token {
            builder = builder.token(Token::new(token).unwrap());
        }
        let server = configure(builder).build();
        let routes = server.routes();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = runtime.spawn(server.run(listener, async move {
            let _ = stopped.await;
        }));
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        TestServer {
            runtime,
            addr,
            stop: Some(stop),
            serving: Some(serving),
            http,
            token,
            routes,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn call(&self, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        if let Some(token) = self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.to_vec()).unwrap();
        let response = self.http.run(request).unwrap();
        let status = response.status().as_u16();
        let deployment = response
            .headers()
            .get("caxton-deployment")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        Reply {
            status,
            deployment,
            body,
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.call("GET", path, b"", &[])
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, body.to_string().as_bytes(), &[])
    }

    fn upload(&self, module: &[u8]) -> String {
        let reply = self.call("PUT", "/v1/artifacts", module, &[]);
        assert!(
            matches!(reply.status, 200 | 201),
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()["digest"].as_str().unwrap().to_owned()
    }

    /// Creates a deployment and waits until its rollout is over.
    fn deploy(&self, agent: &str, body: Value) -> Value {
        let reply = self.post(&format!("/v1/agents/{agent}/deployments"), body);
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let id = reply.json()["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.get(&format!("/v1/agents/{agent}")).json();
            let running = status["rollout"]["deployment"].as_str() == Some(id.as_str());
            if !running {
                return self
                    .get(&format!("/v1/agents/{agent}/deployments/{id}"))
                    .json();
            }
            assert!(Instant::now() < deadline, "rollout of {id} did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), serving).await });
        }
    }
}

fn echo(tag: &str) -> Vec<u8> {
    caxton_wasm::fixtures::tagged_echo(tag)
}

fn first_version(server: &TestServer, agent: &str, tag: &str) -> Value {
    let module = server.upload(&echo(tag));
    let deployment = server.deploy(agent, json!({"module": module, "label": "v1"}));
    assert_eq!(deployment["state"], "running", "{deployment}");
    assert_eq!(deployment["is_production"], true);
    deployment
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_served() {
    let server = TestServer::start(|b| b, None);
    let document = server.get("/openapi.json").json();
    assert_eq!(document["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> = server
        .routes
        .iter()
        .map(|(method, path)| (method.to_string(), (*path).to_owned()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);

    // Every documented operation reaches a handler: never the no-route or wrong-method
    // answers, whatever the handler then says about the made-up names.
    for (method, path) in &documented {
        let concrete = path
            .replace("{agent}", "nobody")
            .replace("{id}", "nobody-v1-00000")
            .replace("{session}", "s1");
        let reply = server.call(method, &concrete, b"", &[]);
        if reply.status >= 400 {
            let code = reply.code();
            assert!(
                code != "no_route" && code != "method_not_allowed",
                "{method} {path}: {code}"
            );
        }
        // Every error a route answers with is documented for it.
        let operation = &document["paths"][path][method.to_lowercase()];
        assert!(
            operation["responses"][reply.status.to_string()].is_object(),
            "{method} {path} answered {} which is not documented",
            reply.status
        );
    }

    let reply = server.get("/v2/nothing");
    assert_eq!((reply.status, reply.code().as_str()), (404, "no_route"));
    let reply = server.call("PATCH", "/v1/artifacts", b"", &[]);
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (405, "method_not_allowed")
    );
    assert!(openapi::document()["components"]["schemas"]["Deployment"].is_object());
}

#[test]
fn deploy_send_roll_out_and_roll_back_through_the_api() {
    let server = TestServer::start(|b| b, None);
    let v1 = first_version(&server, "orders", "v1:");

    let reply = server.call("POST", "/v1/agents/orders/messages", b"hi", &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"v1:hi");
    assert_eq!(reply.deployment.as_deref(), v1["id"].as_str());

    let module = server.upload(&echo("v2:"));
    let v2 = server.deploy(
        "orders",
        json!({"module": module, "label": "v2", "rollout": {"strategy": "direct"}}),
    );
    assert_eq!(v2["is_production"], true, "{v2}");
    assert_eq!(
        server
            .call("POST", "/v1/agents/orders/messages", b"hi", &[])
            .body,
        b"v2:hi"
    );

    // v1 was retired by the direct switch: the rollback reloads it from its artifact.
    let v2_id = v2["id"].as_str().unwrap();
    let reply = server.post(
        &format!("/v1/agents/orders/deployments/{v2_id}/rollback"),
        json!({}),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let outcome = reply.json();
    assert_eq!(outcome["reloaded_from_artifact"], true);
    assert!(outcome["took_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(outcome["rolled_back"]["state"], "rolled_back");
    assert_eq!(
        server
            .call("POST", "/v1/agents/orders/messages", b"hi", &[])
            .body,
        b"v1:hi"
    );

    // Found by id alone, listed newest first, in the history, in the status.
    let found = server.get(&format!("/v1/deployments/{v2_id}")).json();
    assert_eq!(found["agent"], "orders");
    let list = server.get("/v1/agents/orders/deployments").json();
    assert!(list.as_array().unwrap().len() >= 3, "{list}");
    assert!(list[0]["created_at"].as_str().unwrap().ends_with('Z'));
    let history = server.get("/v1/agents/orders/history").json();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["to"] == "rolled_back"),
        "{history}"
    );
    let status = server.get("/v1/agents/orders").json();
    assert_eq!(status["production"], outcome["restored"]["id"]);
    assert_eq!(status["rollout"], Value::Null);

    // Preview reaches a named running deployment whatever the split.
    let restored = outcome["restored"]["id"].as_str().unwrap();
    let reply = server.call(
        "POST",
        &format!("/v1/agents/orders/deployments/{restored}/messages"),
        b"p",
        &[],
    );
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, b"v1:p".as_slice())
    );
}

#[test]
fn refused_requests_change_nothing() {
    let server = TestServer::start(|b| b.max_body_bytes(4096), None);
    let v1 = first_version(&server, "orders", "v1:");
    first_version(&server, "billing", "b1:");
    let v1_id = v1["id"].as_str().unwrap();
    let before = server.get("/v1/agents/orders/deployments").body;

    // Unknown agent, another agent's deployment.
    assert_eq!(server.get("/v1/agents/nobody").code(), "unknown_agent");
    let reply = server.get(&format!("/v1/agents/billing/deployments/{v1_id}"));
    assert_eq!((reply.status, reply.code().as_str()), (404, "not_found"));
    let reply = server.post(
        &format!("/v1/agents/billing/deployments/{v1_id}/rollback"),
        json!({}),
    );
    assert_eq!(reply.status, 404);

    // Malformed JSON names the field.
    let reply = server.call(
        "POST",
        "/v1/agents/orders/deployments",
        br#"{"module": "sha256:00", "sesions": "sessions"}"#,
        &[],
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sesions"),
        "{}",
        reply.json()
    );
    let reply = server.call("POST", "/v1/agents/orders/deployments", b"{not json", &[]);
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "invalid_request")
    );
    let reply = server.post(
        "/v1/agents/orders/deployments",
        json!({"module": "sha256:0000000000000000000000000000000000000000000000000000000000000000"}),
    );
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (404, "artifact_not_found")
    );

    // Over the body limit: 413 in the API's format.
    let reply = server.call("POST", "/v1/agents/orders/messages", &vec![b'x'; 8192], &[]);
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (413, "payload_too_large")
    );

    // Conflicts: the production cannot be deleted; nothing to promote.
    let reply = server.call(
        "DELETE",
        &format!("/v1/agents/orders/deployments/{v1_id}"),
        b"",
        &[],
    );
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (409, "is_production")
    );
    let reply = server.post(
        &format!("/v1/agents/orders/deployments/{v1_id}/pause"),
        json!({}),
    );
    assert_eq!(reply.status, 409, "{}", reply.json());

    assert_eq!(server.get("/v1/agents/orders/deployments").body, before);
    assert_eq!(
        server
            .call("POST", "/v1/agents/orders/messages", b"hi", &[])
            .body,
        b"v1:hi"
    );
}

#[test]
fn every_v1_route_needs_the_token_and_probes_do_not() {
    let mut server = TestServer::start(|b| b, Some(TOKEN));
    first_version(&server, "orders", "v1:");
    let before = server.get("/v1/agents/orders/deployments").body;

    server.token = None;
    for (method, path) in server.routes.clone() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = path
            .replace("{agent}", "orders")
            .replace("{id}", "orders-v1-00000")
            .replace("{session}", "s1");
        let reply = server.call(method.as_str(), &concrete, b"{}", &[]);
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (401, "unauthorized"),
            "{method} {path}"
        );
        let reply = server.call(
            method.as_str(),
            &concrete,
            b"{}",
            &[("authorization", "Bearer test-token-0123456789abcdeX")],
        );
        assert_eq!(reply.status, 401, "{method} {path}");
    }
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").status, 200);
    assert_eq!(server.get("/openapi.json").status, 200);

    server.token = Some(TOKEN);
    assert_eq!(server.get("/v1/agents/orders/deployments").body, before);
}

#[test]
fn events_replay_then_stream_a_rollout() {
    let server = TestServer::start(|b| b, None);
    let v1 = first_version(&server, "orders", "v1:");
    let url = server.url(&format!(
        "/v1/agents/orders/events?deployment={}",
        v1["id"].as_str().unwrap()
    ));
    let response = server.http.get(&url).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    let mut kinds = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(kind) = line.strip_prefix("event: ") {
            kinds.push(kind.to_owned());
            if kind == "finished" {
                break;
            }
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let event: Value = serde_json::from_str(data).unwrap();
            assert_eq!(event["deployment_id"], v1["id"]);
            assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
        }
    }
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("started"),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"validation_finished".to_owned()),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("finished"),
        "{kinds:?}"
    );
}

#[test]
fn metrics_and_probes_report_the_host() {
    let server = TestServer::start(|b| b, None);
    first_version(&server, "metered", "m:");
    for _ in 0..3 {
        assert_eq!(
            server
                .call("POST", "/v1/agents/metered/messages", b"x", &[])
                .status,
            200
        );
    }
    let text = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("caxton_agent_messages_total{")
                && l.contains("agent=\"metered\"")),
        "{text}"
    );
    assert!(
        text.contains("caxton_deployment_validation_time_seconds"),
        "{text}"
    );
    assert!(text.contains("caxton_agent_version_active"), "{text}");
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
}

#[test]
fn sessions_stay_on_their_deployment_and_end() {
    let server = TestServer::start(|b| b, None);
    let module = server.upload(&echo("c1:"));
    server.deploy(
        "chat",
        json!({"module": module, "label": "v1", "sessions": "sessions"}),
    );
    let reply = server.call(
        "POST",
        "/v1/agents/chat/messages",
        b"a",
        &[("caxton-session", "s-1")],
    );
    assert_eq!(reply.status, 200);
    let reply = server.call("DELETE", "/v1/agents/chat/sessions/s-1", b"", &[]);
    assert_eq!(reply.status, 204);
    let reply = server.call("DELETE", "/v1/agents/chat/sessions/never-opened", b"", &[]);
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (404, "unknown_session")
    );
    let reply = server.call(
        "POST",
        "/v1/agents/chat/messages",
        b"a",
        &[("caxton-session", "bad session id with spaces")],
    );
    assert_eq!(reply.status, 400);
}
