//! Shared fixtures: real hosts on the real crates, small agents from wasm text.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use caxton_core::{AgentId, SessionId};
use caxton_host::{DeployRequest, Deployed, Host, ModuleSource, SessionMode};
use caxton_strategies::RolloutSpec;

pub fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

pub fn session(name: &str) -> SessionId {
    SessionId::new(name).unwrap()
}

/// An agent that answers `<tag><message>`.
pub fn echo(tag: &str) -> ModuleSource {
    ModuleSource::Bytes(caxton_wasm::fixtures::tagged_echo(tag).into())
}

/// Replies are JSON objects `{"kind":"<kind>","m":"<message>"}` when messages are `x"}`.
pub fn json_agent(kind: &str, version: &str) -> ModuleSource {
    echo(&format!(r#"{{"kind":"{kind}","v":"{version}","m":""#))
}

pub const JSON_MESSAGE: &[u8] = br#"x"}"#;

pub fn host() -> Host {
    Host::builder()
        .maintenance_interval(Duration::from_millis(200))
        .build()
        .unwrap()
}

pub fn spec(json: &str) -> RolloutSpec {
    RolloutSpec::parse(json).unwrap()
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// Polls `probe` until it returns something; fails naming `what` after 20 s.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `done` until it holds; fails naming `what` after 20 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    wait_for(what, || done().then_some(()));
}

/// Deploys and waits for the rollout to finish.
pub fn deploy_and_wait(host: &Host, request: DeployRequest) -> Deployed {
    block_on(async {
        let deployed = host.deploy(request).await.unwrap();
        deployed.rollout.wait().await.unwrap();
        deployed
    })
}

pub fn first_version(
    host: &Host,
    agent: &AgentId,
    module: ModuleSource,
    mode: SessionMode,
) -> Deployed {
    deploy_and_wait(
        host,
        DeployRequest::builder(agent.clone(), module)
            .label("v1")
            .sessions(mode)
            .build(),
    )
}

/// Sends messages of `agent` from a thread until stopped; counts every outcome.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<TrafficCounts>>,
}

#[derive(Debug, Default, Clone)]
pub struct TrafficCounts {
    pub sent: u64,
    pub replies: u64,
    pub failures: u64,
    pub by_deployment: std::collections::BTreeMap<String, u64>,
}

impl Traffic {
    pub fn start(host: &Host, agent: &AgentId, message: &'static [u8]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let host = host.clone();
        let agent = agent.clone();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut counts = TrafficCounts::default();
            let mut sender = host.sender();
            while !flag.load(Ordering::Relaxed) {
                counts.sent += 1;
                match sender.send(&agent, None, message) {
                    Ok(delivery) => {
                        counts.replies += 1;
                        *counts
                            .by_deployment
                            .entry(delivery.deployment.to_string())
                            .or_default() += 1;
                    }
                    Err(_) => counts.failures += 1,
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            counts
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> TrafficCounts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
