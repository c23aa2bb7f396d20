//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use caxton_core::{
    AgentId, CodeLayer, DeploymentId, LoadSpec, ModelLayer, PromptLayer, ToolsLayer, VersionTuple,
};
use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{
    AgentEngine, AgentInstance, CompiledAgent, EngineConfig, InstanceLimits, InstanceSetup,
    PoolingConfig,
};

/// A pooling engine small enough for tests running side by side.
pub fn engine() -> AgentEngine {
    engine_with(EngineConfig::default())
}

/// `config` with a small pool.
pub fn engine_with(config: EngineConfig) -> AgentEngine {
    AgentEngine::new(
        config.pooling(
            PoolingConfig::default()
                .max_instances(64)
                .max_memory_bytes(64 << 20),
        ),
    )
    .expect("engine")
}

pub fn metering_engine() -> AgentEngine {
    engine_with(EngineConfig::default().fuel_metering(true))
}

pub fn compile(engine: &AgentEngine, fixture: Fixture) -> Arc<CompiledAgent> {
    engine.compile(&fixture.wasm()).expect("fixture compiles")
}

pub fn setup() -> InstanceSetup {
    InstanceSetup::new(agent("tester"), deployment("tester-v1"))
}

pub fn limits() -> caxton_wasm::InstanceLimitsBuilder {
    InstanceLimits::builder().deadline(Some(Duration::from_secs(5)))
}

pub fn instance(engine: &AgentEngine, fixture: Fixture, limits: InstanceLimits) -> AgentInstance {
    compile(engine, fixture)
        .instantiate(&setup().limits(limits))
        .expect("instance starts")
}

pub fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

pub fn deployment(name: &str) -> DeploymentId {
    DeploymentId::new(name).unwrap()
}

/// A load spec of `module` for `deployment` of agent `agent`.
pub fn spec(agent_name: &str, deployment_name: &str, module: Vec<u8>) -> LoadSpec {
    let version = VersionTuple::new(
        CodeLayer::from_module(&module),
        ModelLayer::new("anthropic", "claude-sonnet", "2026-01-01"),
        PromptLayer::from_prompt("You test things.", &[]),
        ToolsLayer::from_json("[]").unwrap(),
    );
    LoadSpec::new(
        agent(agent_name),
        deployment(deployment_name),
        version,
        module,
    )
}

/// A config-reader message: capacity then key.
pub fn config_query(cap: u32, key: &str) -> Vec<u8> {
    let mut message = cap.to_le_bytes().to_vec();
    message.extend_from_slice(key.as_bytes());
    message
}

/// Splits a config-reader reply into the returned length and the 64-byte buffer.
pub fn config_answer(reply: &[u8]) -> (i32, &[u8]) {
    assert_eq!(reply.len(), 68, "config reader replies 4 + 64 bytes");
    (
        i32::from_le_bytes(reply[..4].try_into().unwrap()),
        &reply[4..],
    )
}

/// A writer that keeps what tracing writes to it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `run` with a plain-text tracing subscriber on this thread, at every level, and
/// returns what it logged.
pub fn capture_logs(run: impl FnOnce()) -> String {
    // tracing caches whether a log line is wanted once per call site, and while a single
    // dispatcher is registered it asks the registering thread's own: a test thread with
    // no subscriber reaching the call site first would silence it for this one. A second
    // dispatcher kept for the whole run makes tracing ask every live one instead.
    static ANCHOR: OnceLock<tracing::Dispatch> = OnceLock::new();
    ANCHOR.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

/// A logger message: the level byte then the text.
pub fn log_message(level: u8, text: &[u8]) -> Vec<u8> {
    let mut message = vec![level];
    message.extend_from_slice(text);
    message
}
