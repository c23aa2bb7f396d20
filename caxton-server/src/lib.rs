//! `caxton serve`: the HTTP API of Caxton over the deployment API of [`caxton_host`].
//!
//! JSON over HTTP/1.1 under `/v1` (axum): artifacts, deployments (create with a rollout
//! spec, list, get, promote, rollback, pause, resume, abort, soft delete, preview),
//! messages with an optional `Caxton-Session` header, agent status, history, rollout
//! events as server-sent events; and `/healthz`, `/readyz`, `/metrics` (Prometheus text)
//! and `/openapi.json` (OpenAPI 3.1). Every error is a status with
//! `{"error": {"code", "message"}}`, and a refused request changes nothing.
//!
//! With a [`Token`], every `/v1` route needs `Authorization: Bearer <token>` (compared in
//! constant time); without one the server refuses to listen on anything but loopback.
//! Messages run the agent on the request's worker thread, handed over with
//! `block_in_place` on a multi-threaded runtime so that other requests move on.
//!
//! # Example: an in-process server on loopback
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//!
//! use caxton_host::Host;
//! use caxton_server::Server;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Runtime::new()?;
//! let host = Arc::new(Host::builder().build()?);
//! let server = Server::builder(host).build();
//! let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = runtime.spawn(server.run(listener, async move { let _ = stopped.await; }));
//!
//! let mut connection = std::net::TcpStream::connect(addr)?;
//! connection.write_all(b"GET /v1/agents/nobody HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
//! let mut response = String::new();
//! connection.read_to_string(&mut response)?;
//! assert!(response.starts_with("HTTP/1.1 404"));
//! assert!(response.contains(r#""code":"unknown_agent""#));
//!
//! let _ = stop.send(());
//! runtime.block_on(serving)??;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod auth;
mod error;
mod fleet;
pub mod openapi;
mod registry;
mod routes;
mod server;
mod views;

pub use auth::{MIN_TOKEN_BYTES, Token, TokenError};
pub use error::ApiError;
pub use fleet::Follower;
pub use registry::{
    DEFAULT_REGISTRY, Registry, RegistryError, SECRET_ENV_PREFIX, secrets_from_env,
};
pub use routes::{DEPLOYMENT_HEADER, SESSION_HEADER};
pub use server::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_MODULE_BYTES, ServeError, Server, ServerBuilder,
    check_listen, install_prometheus,
};
pub use views::{
    CreateDeployment, DeploymentView, EmptyBody, EventsQuery, ListQuery, MetadataBody, ModelBody,
    PromoteBody, RollbackBody, RollbackView,
};
