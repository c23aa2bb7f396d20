//! The server: its configuration, the listening rule, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use caxton_core::AgentId;
use caxton_host::Host;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Token, require_token};
use crate::routes::{self, AppState};

/// Default limit of a JSON body or a message: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default limit of an uploaded module: 64 MiB.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 64 << 20;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Without a token the API would be open to anyone who can reach the address.
    #[error(
        "refusing to listen on {addr} without a token: anyone who can reach it could deploy \
         agents; listen on a loopback address or configure a token"
    )]
    OpenToTheNetwork {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The listener failed.
    #[error("the listener on {addr} failed: {source}")]
    Io {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Prometheus recorder could not be installed.
    #[error("the Prometheus recorder could not be installed: {0}")]
    Metrics(String),
}

/// The HTTP API over a [`Host`]. Built with [`Server::builder`].
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
    token: Option<Arc<Token>>,
    max_body: usize,
    max_module: usize,
    shutdown: watch::Sender<bool>,
}

/// Builds a [`Server`].
#[derive(Debug)]
pub struct ServerBuilder {
    host: Arc<Host>,
    token: Option<Token>,
    only_agent: Option<AgentId>,
    prometheus: Option<PrometheusHandle>,
    max_body: usize,
    max_module: usize,
}

impl ServerBuilder {
    /// Every `/v1` route needs `Authorization: Bearer <token>`.
    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// Serve only this agent: the others are unknown here.
    pub fn only_agent(mut self, agent: AgentId) -> Self {
        self.only_agent = Some(agent);
        self
    }

    /// Render `/metrics` from this recorder (see [`install_prometheus`]).
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// The largest JSON body or message accepted (413 beyond).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The largest module `PUT /v1/artifacts` accepts (413 beyond).
    pub fn max_module_bytes(mut self, bytes: usize) -> Self {
        self.max_module = bytes;
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        let (shutdown, stopped) = watch::channel(false);
        Server {
            state: Arc::new(AppState {
                host: self.host,
                only_agent: self.only_agent,
                prometheus: self.prometheus,
                shutdown: stopped,
            }),
            token: self.token.map(Arc::new),
            max_body: self.max_body,
            max_module: self.max_module,
            shutdown,
        }
    }
}

impl Server {
    /// A server over `host`: no token, every agent, no metrics, default body limits.
    pub fn builder(host: Arc<Host>) -> ServerBuilder {
        ServerBuilder {
            host,
            token: None,
            only_agent: None,
            prometheus: None,
            max_body: DEFAULT_MAX_BODY_BYTES,
            max_module: DEFAULT_MAX_MODULE_BYTES,
        }
    }

    /// The host it serves.
    pub fn host(&self) -> &Arc<Host> {
        &self.state.host
    }

    /// Every (method, path) the server routes.
    pub fn routes(&self) -> Vec<(Method, &'static str)> {
        let mut routes = routes::api_routes(self.max_module).routes().to_vec();
        routes.extend_from_slice(routes::open_routes().routes());
        routes
    }

    /// The axum router: the `/v1` API (behind the token when there is one), the probes,
    /// `/metrics` and `/openapi.json`. Any other path is a JSON 404.
    pub fn router(&self) -> Router {
        let mut api = routes::api_routes(self.max_module).into_router();
        if let Some(token) = &self.token {
            api = api.layer(axum::middleware::from_fn_with_state(
                Arc::clone(token),
                require_token,
            ));
        }
        api.merge(routes::open_routes().into_router())
            .fallback(routes::no_route)
            .method_not_allowed_fallback(routes::method_not_allowed)
            .layer(DefaultBodyLimit::max(self.max_body))
            .with_state(Arc::clone(&self.state))
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, ends the event
    /// streams and waits for the requests in flight. Without a token, `listener` must be
    /// on a loopback address.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr().map_err(|source| ServeError::Io {
            addr: "the listener".to_owned(),
            source,
        })?;
        check_listen(addr, self.token.is_some())?;
        let router = self.router();
        let upkeep = self.state.prometheus.clone().map(|handle| {
            // Histograms are folded by upkeep; without it they grow between scrapes.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    handle.run_upkeep();
                }
            })
        });
        let stop_streams = self.shutdown;
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections, finishing requests");
                let _ = stop_streams.send(true);
            })
            .await
            .map_err(|source| ServeError::Io {
                addr: addr.to_string(),
                source,
            });
        if let Some(upkeep) = upkeep {
            upkeep.abort();
        }
        result
    }
}

/// Refuses a non-loopback address unless a token guards the API.
pub fn check_listen(addr: SocketAddr, has_token: bool) -> Result<(), ServeError> {
    if has_token || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ServeError::OpenToTheNetwork { addr })
    }
}

/// Installs the process's Prometheus recorder (once; later calls return the same handle),
/// with histogram buckets for the `_seconds` metrics. Install it before building the
/// [`Host`]: the host registers its metrics with the recorder installed at that moment.
pub fn install_prometheus() -> Result<PrometheusHandle, ServeError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                    ],
                )
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|error| error.to_string())
        })
        .clone()
        .map_err(ServeError::Metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_is_allowed() {
        let open: SocketAddr = "0.0.0.0:7340".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:7340".parse().unwrap();
        let loopback6: SocketAddr = "[::1]:7340".parse().unwrap();
        assert!(matches!(
            check_listen(open, false),
            Err(ServeError::OpenToTheNetwork { .. })
        ));
        assert!(check_listen(open, true).is_ok());
        assert!(check_listen(loopback, false).is_ok());
        assert!(check_listen(loopback6, false).is_ok());
    }
}
