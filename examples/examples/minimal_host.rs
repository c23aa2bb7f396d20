//! The smallest Caxton host: a `caxton_host::Host` with every part at its default, one agent
//! deployed and one message sent. Run with `cargo run --example minimal_host`.

use caxton_core::{AgentId, SessionId};
use caxton_host::{DeployRequest, Host, ModuleSource};

const PROCESSOR_V1: &[u8] = include_bytes!("../../caxton-cli/samples/processor_v1.wasm");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host: an in-memory registry and artifact store, the wasmtime runtime, the router
    // and the four-stage validation pipeline.
    let host = Host::builder().build()?;
    let agent = AgentId::new("processor")?;

    // The agent's first deployment: validated, warmed up, then production.
    let request = DeployRequest::builder(agent.clone(), ModuleSource::Bytes(PROCESSOR_V1.into()))
        .label("v1")
        .build();
    let report =
        futures::executor::block_on(async { host.deploy(request).await?.rollout.wait().await })?;
    println!("{}: {}", report.deployment, report.outcome.as_str());

    // One message: the router picks the deployment, the runtime runs it.
    let order = br#"{"kind":"order","id":"o-1","items":[{"sku":"A1","qty":2,"price_cents":1250}],"coupon":"SAVE10"}"#;
    let session = SessionId::new("customer-42")?;
    let delivery = host.send(&agent, Some(&session), order)?;
    let text = String::from_utf8_lossy(&delivery.reply);
    println!("{} answered: {text}", delivery.deployment);
    Ok(())
}
