//! Rainbow sessions: `chat` v2 deployed through a `caxton_host::Host` while v1 sessions are
//! under way. `chat` keeps state per session, so it is deployed as a sessions agent from v1
//! on: the host pins each session to the version that served its first message. Sessions
//! that started on v1 finish on v1; new sessions start on v2; v1 retires once its sessions
//! end. Run with `cargo run --example rainbow_sessions`.

use caxton_core::{AgentId, DeploymentId, SessionId};
use caxton_host::{DeployRequest, Host, ModuleSource, SessionMode};
use caxton_strategies::{EventKind, RolloutSpec};
use futures::StreamExt;
use futures::executor::block_on;

const CHAT_V1: &[u8] = include_bytes!("../../caxton-cli/samples/chat_v1.wasm");
const CHAT_V2: &[u8] = include_bytes!("../../caxton-cli/samples/chat_v2.wasm");

const RAINBOW: &str = r#"
deployment:
  strategy: rainbow
  max_live_versions: 2
  session_idle_timeout: 60s
  forced_drain_after: 20s
  check_interval: 200ms
  min_requests: 1
"#;

/// Says `text` in `session`; returns the deployment that answered.
fn say(
    host: &Host,
    agent: &AgentId,
    session: &SessionId,
    text: &str,
) -> Result<DeploymentId, Box<dyn std::error::Error>> {
    let message = serde_json::json!({"kind": "say", "text": text}).to_string();
    let delivery = host.send(agent, Some(session), message.as_bytes())?;
    let reply: serde_json::Value = serde_json::from_slice(&delivery.reply)?;
    println!(
        "  {session} → {}: {}",
        delivery.deployment,
        reply["text"].as_str().unwrap_or("")
    );
    Ok(delivery.deployment)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = Host::builder().build()?;
    let agent = AgentId::new("chat")?;
    let module = |bytes: &[u8]| ModuleSource::Bytes(bytes.into());

    let v1 = DeployRequest::builder(agent.clone(), module(CHAT_V1))
        .label("v1")
        .sessions(SessionMode::Sessions);
    let v1 = block_on(host.deploy(v1.build()))?;
    block_on(v1.rollout.wait())?;

    println!("chat v1 in production; an old session starts:");
    let old = SessionId::new("old-session")?;
    let first = say(&host, &agent, &old, "Hi, I'm planning a trip.")?;

    println!("Rolling out chat v2 (rainbow):");
    let mut events = host.events();
    let v2 = DeployRequest::builder(agent.clone(), module(CHAT_V2))
        .label("v2")
        .rollout(RolloutSpec::from_yaml(RAINBOW)?);
    let v2 = block_on(host.deploy(v2.build()))?;
    // New sessions go to v2 once the host reports it promoted.
    block_on(async {
        while let Some(event) = events.next().await {
            let event = event.event;
            if event.deployment_id == v2.deployment.id && matches!(event.kind, EventKind::Promoted)
            {
                break;
            }
        }
    });
    let fresh = SessionId::new("new-session")?;
    let fresh_on = say(&host, &agent, &fresh, "Hello!")?;
    let still_on = say(&host, &agent, &old, "Somewhere warm, please.")?;
    println!("The old session ends; v1 can retire:");
    say(&host, &agent, &old, "Thanks, bye.")?;
    host.end_session(&agent, &old);
    let report = block_on(v2.rollout.wait())?;
    let v1_state = block_on(host.get(&agent, &v1.deployment.id))?.state;
    println!(
        "chat v2: {}; the old session stayed on {first} ({still_on}), the new one started on \
         {fresh_on}; chat v1 is {v1_state}",
        report.outcome.as_str()
    );
    if first != v1.deployment.id
        || still_on != first
        || fresh_on != v2.deployment.id
        || report.outcome.as_str() != "promoted"
    {
        return Err("sessions did not stay on their versions".into());
    }
    Ok(())
}
