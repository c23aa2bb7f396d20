//! Embedding Caxton: a host that deploys an agent, sends it a message, rolls a new version
//! out as a canary under traffic and rolls it back, all through `caxton_host::Host`.
//! Run with `cargo run --example embed`.

use std::time::Duration;

use caxton_core::AgentId;
use caxton_host::{DeployRequest, Host, ModuleSource};
use caxton_strategies::RolloutSpec;

const V1: &[u8] = include_bytes!("../../caxton-cli/samples/processor_v1.wasm");
const V3: &[u8] = include_bytes!("../../caxton-cli/samples/processor_v3.wasm");
const ORDER: &[u8] =
    br#"{"kind":"order","id":"o-1","items":[{"sku":"A1","qty":2,"price_cents":1250}]}"#;
const CANARY: &str = "deployment: {strategy: canary, stages: [{canary: {weight: 50%, hold: 1s}}, \
    {full: 100%}], rollback_on: [error_rate > 1%], check_interval: 250ms, min_requests: 10, \
    judge: off}";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    futures::executor::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // In-memory registry and artifacts, wasmtime, the four validation stages, the router.
    let host = Host::builder().build()?;
    let agent = AgentId::new("processor")?;
    let module = |bytes: &[u8]| ModuleSource::Bytes(bytes.into());

    // An agent's first deployment is validated, warmed up and made production.
    let v1 = DeployRequest::builder(agent.clone(), module(V1)).label("v1");
    host.deploy(v1.build()).await?.rollout.wait().await?;
    let reply = host.send(&agent, None, ORDER)?;
    println!(
        "{} answered {}",
        reply.deployment,
        String::from_utf8_lossy(&reply.reply)
    );

    // v3 takes half the traffic for a second; it is rolled back if its error rate passes 1 %.
    let spec = RolloutSpec::from_yaml(CANARY)?;
    let v3 = DeployRequest::builder(agent.clone(), module(V3))
        .label("v3")
        .rollout(spec);
    let v3 = host.deploy(v3.build()).await?;
    while host.running_rollout(&agent).is_some() {
        host.send(&agent, None, ORDER)?; // runs the agent on this thread
        std::thread::sleep(Duration::from_millis(2));
    }
    let outcome = v3.rollout.wait().await?.outcome;
    println!("canary of {}: {}", v3.deployment.id, outcome.as_str());

    // Back to v1 in one router swap; v1 was retired, so it is reloaded from its artifact.
    let back = host.rollback(&agent, &v3.deployment.id, None).await?;
    println!("rolled back to {} in {:?}", back.restored.id, back.took);
    Ok(())
}
