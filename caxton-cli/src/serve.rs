//! `caxton serve`: the HTTP API over a host with a durable registry, until SIGTERM or
//! Ctrl-C.
//!
//! On start it opens the registry (default `sqlite:.caxton/registry.db`), rebuilds the
//! host from it (routes, production and in-flight versions, interrupted rollouts resumed
//! from their journal), then listens. On SIGTERM it stops accepting connections, ends the
//! event streams, lets the requests in flight finish, and exits 0. Every registry write is
//! its own durable transaction, so there is no journal left to flush.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::AgentId;
use caxton_server::{
    DEFAULT_REGISTRY, Registry, Server, Token, check_listen, install_prometheus, secrets_from_env,
};
use clap::Args;

use crate::output::{CommandResult, Failure, Mark, Printer, Verdict};

/// Where `caxton serve` listens by default, and where the client verbs look for it.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7340";

/// Arguments of `caxton serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on. Without a token only a loopback address is allowed.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: String,
    /// The registry: `sqlite:PATH` or `postgres://…` [env: CAXTON_REGISTRY]
    /// [default: sqlite:.caxton/registry.db].
    #[arg(long, value_name = "URL", conflicts_with = "registry_file")]
    registry: Option<String>,
    /// A file holding the registry URL (a mounted Kubernetes Secret, say).
    #[arg(long, value_name = "FILE")]
    registry_file: Option<PathBuf>,
    /// A file holding the API token; every `/v1` request then needs
    /// `Authorization: Bearer <token>` [env: CAXTON_TOKEN].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve only this agent; the others are unknown here.
    #[arg(long, value_name = "AGENT")]
    agent: Option<String>,
    /// How long a rollout's lease lasts without a renewal: on a PostgreSQL registry,
    /// about how long after this host dies another host takes its rollouts over.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = lease_ttl)]
    lease_ttl: Duration,
}

fn lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl = caxton_strategies::duration::parse_duration(text).map_err(|e| e.to_string())?;
    if !(caxton_host::MIN_LEASE_TTL..=Duration::from_secs(3_600)).contains(&ttl) {
        return Err(format!("{text}: must be between 30ms and 1h"));
    }
    Ok(ttl)
}

/// Runs `caxton serve` until SIGTERM or Ctrl-C.
pub(crate) fn run(args: ServeArgs) -> CommandResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("caxton-serve")
        .build()
        .map_err(|error| Failure::new(format!("cannot start the runtime: {error}")))?;
    runtime.block_on(serve(args))
}

fn registry_of(args: &ServeArgs) -> Result<Registry, Failure> {
    let url = if let Some(url) = &args.registry {
        url.clone()
    } else if let Some(path) = &args.registry_file {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Failure::new(format!(
                "cannot read the registry file {}: {error}",
                path.display()
            ))
        })?;
        text.trim().to_owned()
    } else {
        std::env::var("CAXTON_REGISTRY").unwrap_or_else(|_| DEFAULT_REGISTRY.to_owned())
    };
    url.parse::<Registry>().map_err(Failure::new)
}

fn token_of(args: &ServeArgs) -> Result<Option<Token>, Failure> {
    match &args.token_file {
        Some(path) => Token::from_file(path).map(Some).map_err(Failure::new),
        None => match std::env::var("CAXTON_TOKEN") {
            Ok(text) if !text.is_empty() => Token::new(text.trim_end())
                .map(Some)
                .map_err(|error| Failure::new(format!("CAXTON_TOKEN: {error}"))),
            _ => Ok(None),
        },
    }
}

fn listen_addr(listen: &str) -> Result<SocketAddr, Failure> {
    listen
        .to_socket_addrs()
        .map_err(|error| Failure::new(format!("--listen {listen}: {error}")))?
        .next()
        .ok_or_else(|| Failure::new(format!("--listen {listen}: no address")))
}

async fn serve(args: ServeArgs) -> CommandResult {
    init_logging();
    let out = Printer::new();
    let addr = listen_addr(&args.listen)?;
    let token = token_of(&args)?;
    check_listen(addr, token.is_some()).map_err(Failure::new)?;
    let registry = registry_of(&args)?;
    let only_agent = args
        .agent
        .as_deref()
        .map(AgentId::new)
        .transpose()
        .map_err(|error| Failure::new(format!("--agent: {error}")))?;
    // Installed before the host exists: the host registers its metrics with the recorder
    // of that moment.
    let prometheus = install_prometheus().map_err(Failure::new)?;

    let started = Instant::now();
    let host = registry
        .open_host_with(secrets_from_env(std::env::vars()), args.lease_ttl)
        .map_err(Failure::new)?;
    let host = Arc::new(host);
    let recovery = host
        .recover()
        .await
        .map_err(|error| Failure::new(format!("cannot recover from the registry: {error}")))?;
    out.mark(
        "",
        Mark::Done,
        &format!(
            "Registry open: {} agents, {} deployments loaded, {} rollouts resumed, {} settled ({:.1}s)",
            recovery.agents,
            recovery.loaded.len(),
            recovery.resumed.len(),
            recovery.settled.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    if !recovery.elsewhere.is_empty() {
        out.progress(&format!(
            "{} open rollouts are driven by other hosts on the registry",
            recovery.elsewhere.len()
        ));
    }
    for settled in &recovery.settled {
        out.progress(&format!(
            "Rollout of {} ({}) was {}: {}",
            settled.deployment, settled.agent, settled.outcome, settled.reason
        ));
    }

    let follower = registry
        .follower(Arc::clone(&host))
        .map_err(Failure::new)?
        .map(|follower| tokio::spawn(follower.run()));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| Failure::new(format!("cannot listen on {addr}: {error}")))?;
    let local = listener
        .local_addr()
        .map_err(|error| Failure::new(format!("cannot listen on {addr}: {error}")))?;
    let mut server = Server::builder(Arc::clone(&host)).prometheus(prometheus);
    if let Some(token) = token {
        server = server.token(token);
    } else {
        out.progress("No token: the API is open to anyone on this machine (loopback only)");
    }
    if let Some(agent) = only_agent {
        server = server.only_agent(agent);
    }
    out.progress(&format!("Listening on http://{local}"));
    server
        .build()
        .run(listener, shutdown_signal())
        .await
        .map_err(Failure::new)?;
    if let Some(follower) = follower {
        follower.abort();
    }
    drop(host);
    out.mark(
        "",
        Mark::Done,
        "Stopped: requests in flight finished, registry closed",
    );
    out.finish()?;
    Ok(Verdict::Positive)
}

/// SIGTERM (what Kubernetes and systemd send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Logs to standard error; `CAXTON_LOG` filters (default `info`), `CAXTON_LOG_FORMAT=json`
/// writes one JSON object per line.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAXTON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if std::env::var("CAXTON_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_resolve() {
        assert_eq!(
            listen_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(listen_addr("not an address").is_err());
    }
}
