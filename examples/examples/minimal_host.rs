//! The smallest Caxton host: a runtime and a router put together by hand, one message.
//! Run with `cargo run --example minimal_host`.

use caxton_core::{AgentId, AgentRuntime, DeploymentId, LoadSpec, SessionId};
use caxton_examples::agents::PROCESSOR_V1;
use caxton_router::Router;
use caxton_wasm::{AgentEngine, EngineConfig, WasmRuntime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The runtime: one engine shared by every agent, and the agent loaded and warmed up.
    let runtime = WasmRuntime::new(AgentEngine::new(EngineConfig::default())?);
    let agent = AgentId::new("processor")?;
    let v1 = DeploymentId::new("processor-v1")?;
    let spec = LoadSpec::new(
        agent.clone(),
        v1.clone(),
        PROCESSOR_V1.version(),
        PROCESSOR_V1.module(),
    );
    runtime.load(spec)?;
    runtime.warm_up(&v1)?;

    // The router: the deployment is registered and promoted to production.
    let router = Router::new();
    router.register(&agent, &v1)?;
    router.promote(&agent, &v1)?;

    // One message: the router picks the deployment, the runtime runs it.
    let order = br#"{"kind":"order","id":"o-1","items":[{"sku":"A1","qty":2,"price_cents":1250}],"coupon":"SAVE10"}"#;
    let session = SessionId::new("customer-42")?;
    let decision = router.route(&agent, Some(&session))?;
    let reply = runtime.handle(decision.deployment(), None, order)?;
    let text = String::from_utf8_lossy(&reply.bytes);
    println!("{} answered: {text}", decision.deployment());
    Ok(())
}
