//! Rainbow sessions: `chat` v2 deployed while v1 sessions are under way. Sessions that
//! started on v1 finish on v1; new sessions start on v2; v1 retires once its sessions end.
//! Run with `cargo run --example rainbow_sessions`.

use std::sync::Arc;
use std::time::Duration;

use caxton_core::{SessionAffinity, SessionId, SystemClock};
use caxton_examples::agents::{CHAT_V1, CHAT_V2};
use caxton_examples::host::{Host, agent_id};
use caxton_strategies::builtin::Rainbow;
use caxton_strategies::config::{Gates, RainbowConfig};
use caxton_strategies::{Commands, EventLog};

fn say(host: &Host, session: &SessionId, text: &str) -> Result<String, Box<dyn std::error::Error>> {
    let message = serde_json::json!({"kind": "say", "text": text}).to_string();
    let delivery = host.send(&agent_id(&CHAT_V1), Some(session), message.as_bytes())?;
    let reply: serde_json::Value = serde_json::from_slice(&delivery.reply)?;
    println!(
        "  {session} → {}: {}",
        delivery.deployment,
        reply["text"].as_str().unwrap_or("")
    );
    Ok(reply["version"].as_str().unwrap_or("?").to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = Arc::new(Host::new(Arc::new(SystemClock))?);
    let agent = agent_id(&CHAT_V1);
    let events = EventLog::new();
    let driver = host.driver(Arc::new(events.clone()));
    let direct = caxton_strategies::RolloutSpec::from_yaml("deployment:\n  strategy: direct\n")?
        .strategy
        .build()?;
    futures::executor::block_on(driver.run(
        host.new_deployment(&CHAT_V1, "direct"),
        direct,
        Commands::none(),
    ))?;
    host.router().set_session_affinity(
        &agent,
        Some(SessionAffinity {
            idle_timeout: Duration::from_secs(60),
        }),
    )?;

    println!("chat v1 in production; an old session starts:");
    let old = SessionId::new("old-session")?;
    let first = say(&host, &old, "Hi, I'm planning a trip.")?;

    println!("Rolling out chat v2 (rainbow):");
    let config = RainbowConfig {
        session_idle_timeout: Duration::from_secs(60),
        forced_drain_after: Duration::from_secs(20),
        gates: Gates {
            judge: None,
            check_interval: Duration::from_millis(200),
            min_requests: 1,
            ..Gates::default()
        },
        ..RainbowConfig::default()
    };
    let new = host.new_deployment(&CHAT_V2, "rainbow");
    let rollout = {
        let (driver, rainbow) = (host.driver(Arc::new(events.clone())), Rainbow::new(config)?);
        std::thread::spawn(move || {
            futures::executor::block_on(driver.run(new, Box::new(rainbow), Commands::none()))
        })
    };
    while host
        .router()
        .agent_route(&agent)?
        .production()
        .map(|d| d.as_str())
        != Some("chat-v2")
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let fresh = SessionId::new("new-session")?;
    let fresh_version = say(&host, &fresh, "Hello!")?;
    let still = say(&host, &old, "Somewhere warm, please.")?;
    println!("The old session ends; v1 can retire:");
    say(&host, &old, "Thanks, bye.")?;
    host.end_session(&agent, &old);
    let report = rollout
        .join()
        .map_err(|_| "the rollout thread panicked")??;
    futures::executor::block_on(host.reap());
    println!(
        "chat v2: {}; the old session stayed on {first} ({still}), the new one started on {fresh_version}",
        report.outcome.as_str()
    );
    if first != still || fresh_version != "v2" || report.outcome.as_str() != "promoted" {
        return Err("sessions did not stay on their versions".into());
    }
    Ok(())
}
