//! HTTP benchmarks (`caxton-server`), with their baseline in the same run.
//!
//! - `http/host_send_echo`: one 256-byte message through `Host::send` in process (the
//!   baseline: route, runtime, metrics, bookkeeping).
//! - `http/messages_echo_256b`: the same message as `POST /v1/agents/{a}/messages` over one
//!   keep-alive loopback connection to an in-process `caxton-server` (a minimal blocking
//!   HTTP/1.1 client, so the client adds as little as possible). The difference to the
//!   baseline is what the HTTP API costs a message; target ≤ 100 µs.
//!
//! In bench mode it then prints, outside criterion, a load run (several keep-alive
//! connections for a few seconds: throughput, p50 and p99) and the `took_ms` the API reports
//! for rollbacks to a live and to a retired version.
//!
//! Run with `RUST_BACKTRACE` unset.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::AgentId;
use caxton_host::{DeployRequest, Host, ModuleSource, RolloutSpec};
use caxton_server::Server;
use caxton_wasm::EngineConfig;
use caxton_wasm::PoolingConfig;
use caxton_wasm::fixtures::{Fixture, tagged_echo};
use criterion::Criterion;

/// A minimal keep-alive HTTP/1.1 client: one connection, requests in sequence.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    request: Vec<u8>,
    body: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Connection {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            request: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Sends one request; returns the status, leaves the body in `self.body`.
    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> u16 {
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .expect("write");
        self.request.extend_from_slice(body);
        self.writer.write_all(&self.request).expect("send");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("length");
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).expect("body");
        status
    }
}

struct Running {
    /// The server runs on it; dropping it stops the server.
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    host: Arc<Host>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn start() -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let host = Arc::new(
        Host::builder()
            .engine(EngineConfig::default().pooling(PoolingConfig::default().max_instances(64)))
            .build()
            .expect("host"),
    );
    let server = Server::builder(Arc::clone(&host)).build();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    Running {
        _runtime: runtime,
        addr,
        host,
        stop: Some(stop),
    }
}

fn spec(json: &str) -> RolloutSpec {
    RolloutSpec::parse(json).expect("spec")
}

fn deploy(host: &Host, agent: &AgentId, module: Vec<u8>, label: &str, rollout: &str) -> String {
    futures::executor::block_on(async {
        let deployed = host
            .deploy(
                DeployRequest::builder(agent.clone(), ModuleSource::Bytes(module.into()))
                    .label(label)
                    .rollout(spec(rollout))
                    .build(),
            )
            .await
            .expect("deploy");
        deployed.deployment.id.to_string()
    })
}

fn wait_idle(host: &Host, agent: &AgentId) {
    while host.running_rollout(agent).is_some() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

const DIRECT: &str = r#"{"deployment": {"strategy": "direct"}}"#;

fn messages(c: &mut Criterion, running: &Running) {
    let mut group = c.benchmark_group("http");
    let message: Vec<u8> = (0..256u32).map(|i| b'a' + (i % 26) as u8).collect();
    let agent = AgentId::new("echo").expect("id");
    deploy(&running.host, &agent, Fixture::Echo.wasm(), "v1", DIRECT);
    wait_idle(&running.host, &agent);

    group.bench_function("host_send_echo", |b| {
        b.iter(|| {
            running
                .host
                .send(black_box(&agent), None, black_box(&message))
                .expect("reply")
        })
    });

    let mut connection = Connection::open(running.addr);
    assert_eq!(
        connection.send("POST", "/v1/agents/echo/messages", &message),
        200
    );
    assert_eq!(connection.body, message);
    group.bench_function("messages_echo_256b", |b| {
        b.iter(|| {
            let status = connection.send("POST", "/v1/agents/echo/messages", black_box(&message));
            debug_assert_eq!(status, 200);
        })
    });
    group.finish();
}

/// Several keep-alive connections for `duration`: messages per second, p50 and p99.
fn load(running: &Running, connections: usize, duration: Duration) {
    let message = vec![b'x'; 256];
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let message = message.clone();
            let addr = running.addr;
            std::thread::spawn(move || {
                let mut connection = Connection::open(addr);
                let mut latencies = Vec::with_capacity(1 << 16);
                while started.elapsed() < duration {
                    let sent = Instant::now();
                    assert_eq!(
                        connection.send("POST", "/v1/agents/echo/messages", &message),
                        200
                    );
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("load thread"))
        .collect();
    latencies.sort();
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "http/load {connections} connections, {:.0?}: {} messages, {:.0} msg/s, p50 {:.1?}, p99 {:.1?}",
        duration,
        latencies.len(),
        latencies.len() as f64 / started.elapsed().as_secs_f64(),
        quantile(0.5),
        quantile(0.99),
    );
}

/// The `took_ms` of rollbacks through the API: to a live version (mid-canary) and to a
/// retired one (after a direct switch), median of `runs` each.
fn rollbacks(running: &Running, runs: usize) {
    let agent = AgentId::new("rolled").expect("id");
    deploy(&running.host, &agent, tagged_echo("r0:"), "v0", DIRECT);
    wait_idle(&running.host, &agent);
    let canary = r#"{"deployment": {"strategy": "canary", "stages": [{"canary": {"weight": "10%", "hold": "1h"}}, {"full": "100%"}]}}"#;
    let mut connection = Connection::open(running.addr);
    let mut took = |rollout: &str, n: usize| -> f64 {
        let id = deploy(
            &running.host,
            &agent,
            tagged_echo(&format!("r{n}:")),
            &format!("v{n}"),
            rollout,
        );
        // Mid-canary (live baseline) or after a direct switch (retired baseline).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = futures::executor::block_on(running.host.status(&agent)).expect("status");
            let settled = if rollout == DIRECT {
                status.rollout.is_none()
            } else {
                status.rollout.is_some_and(|r| r.weight_set > 0.0)
            };
            if settled {
                break;
            }
            assert!(Instant::now() < deadline, "rollout did not settle");
            std::thread::sleep(Duration::from_millis(2));
        }
        let path = format!("/v1/agents/rolled/deployments/{id}/rollback");
        assert_eq!(
            connection.send("POST", &path, b"{}"),
            200,
            "{}",
            String::from_utf8_lossy(&connection.body)
        );
        let outcome: serde_json::Value = serde_json::from_slice(&connection.body).expect("json");
        wait_idle(&running.host, &agent);
        outcome["took_ms"].as_f64().expect("took_ms")
    };
    let mut n = 0;
    for (name, rollout) in [("live", canary), ("retired", DIRECT)] {
        let mut samples: Vec<f64> = (0..runs)
            .map(|_| {
                n += 1;
                took(rollout, n)
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        println!(
            "http/rollback_{name}: took_ms median {:.3}, max {:.3} over {runs} rollbacks",
            samples[runs / 2],
            samples[runs - 1]
        );
    }
}

fn main() {
    let bench_mode = std::env::args().any(|arg| arg == "--bench");
    let running = start();
    let mut criterion = Criterion::default().configure_from_args();
    messages(&mut criterion, &running);
    criterion.final_summary();
    if bench_mode {
        load(&running, 1, Duration::from_secs(5));
        load(&running, 4, Duration::from_secs(5));
        load(&running, 16, Duration::from_secs(5));
        rollbacks(&running, 15);
    } else {
        load(&running, 2, Duration::from_millis(200));
        rollbacks(&running, 1);
    }
}
