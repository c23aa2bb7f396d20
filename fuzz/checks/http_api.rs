//! Request bodies of the HTTP API, through the real axum router of `caxton-server` over an
//! in-memory host (`tower::ServiceExt::oneshot`, no socket). The first byte picks the
//! route: creating a deployment, or promote, rollback, pause, resume and abort of one;
//! the rest is the JSON body. No artifact is stored, so a body that passes every check
//! ends at "unknown artifact" or "unknown deployment" and the host keeps no state between
//! inputs. Whatever the body, the answer is not a server error, and an error answer is
//! `{"error": {"code", "message"}}`.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use caxton_host::Host;
use caxton_server::Server;
use tower::ServiceExt;

const ROUTES: [&str; 6] = [
    "/v1/agents/fuzz/deployments",
    "/v1/agents/fuzz/deployments/fuzz-v1/promote",
    "/v1/agents/fuzz/deployments/fuzz-v1/rollback",
    "/v1/agents/fuzz/deployments/fuzz-v1/pause",
    "/v1/agents/fuzz/deployments/fuzz-v1/resume",
    "/v1/agents/fuzz/deployments/fuzz-v1/abort",
];

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let host = runtime.block_on(async { Host::builder().build().expect("an in-memory host") });
        let router = Server::builder(Arc::new(host)).build().router();
        Harness { runtime, router }
    })
}

pub(crate) fn check(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let path = ROUTES[usize::from(route) % ROUTES.len()];
    let harness = harness();
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let (status, bytes) = harness.runtime.block_on(async {
        let response = harness
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("the answer is readable");
        (status, bytes)
    });
    assert!(
        !status.is_server_error(),
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    if !status.is_success() {
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: {status}, the error is not JSON: {e}"));
        let error = &answer["error"];
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{answer}"
        );
    }
}
