//! A canary in real time: `processor` v3 rolled out over v1 under live order traffic by a
//! `caxton_host::Host`, from a short rollout spec, with the host's rollout events printed as
//! they come. v3 answers like v1, so every gate passes and it is promoted. Run with
//! `cargo run --example canary_rollout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use caxton_core::{AgentId, SessionId};
use caxton_host::{DeployRequest, EventStream, Host, ModuleSource};
use caxton_strategies::event::Mark;
use caxton_strategies::{EventKind, RolloutSpec};
use futures::StreamExt;

const PROCESSOR_V1: &[u8] = include_bytes!("../../caxton-cli/samples/processor_v1.wasm");
const PROCESSOR_V3: &[u8] = include_bytes!("../../caxton-cli/samples/processor_v3.wasm");

const SPEC: &str = r#"
deployment:
  strategy: canary
  stages:
    - validate: 30s
    - canary: { weight: 10%, hold: 2s }
    - canary: { weight: 50%, hold: 2s }
    - full: 100%
  rollback_on:
    - error_rate > 1%
    - p99_latency > 100ms
  check_interval: 500ms
  min_requests: 20
  # Sub-millisecond latencies on a busy machine are mostly noise: the p99 gate guards
  # latency here, not the statistical judge.
  judge: off
"#;

/// Prints each rollout event as the command line does, until a rollout finishes.
fn print_until_finished(mut events: EventStream) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while let Some(event) = futures::executor::block_on(events.next()) {
            let event = event.event;
            for line in event.human_lines() {
                let mark = match line.mark {
                    Mark::Done => "✓",
                    Mark::Failed => "✗",
                    Mark::Progress => "→",
                };
                println!("{:>6.1}s  {mark} {}", event.at_s, line.text);
            }
            if matches!(event.kind, EventKind::Finished { .. }) {
                return;
            }
        }
    })
}

/// Messages sent, answered, and failed.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

/// Sends `rate` orders a second, each from one of 100 customers, until `stop` is set.
fn orders(host: Host, agent: AgentId, rate: u32, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut sender = host.sender();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let coupon = if n.is_multiple_of(7) {
            r#","coupon":"SAVE10""#
        } else {
            ""
        };
        let order = format!(
            r#"{{"kind":"order","id":"o-{n}","items":[{{"sku":"A{}","qty":{},"price_cents":1250}}]{coupon}}}"#,
            n % 5,
            1 + n % 3
        );
        let Ok(customer) = SessionId::new(format!("customer-{}", n % 100)) else {
            continue;
        };
        counts.sent.fetch_add(1, Ordering::Relaxed);
        match sender.send(&agent, Some(&customer), order.as_bytes()) {
            Ok(_) => counts.answered.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
        };
        std::thread::sleep(Duration::from_secs(1) / rate);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = Host::builder().build()?;
    let agent = AgentId::new("processor")?;
    let module = |bytes: &[u8]| ModuleSource::Bytes(bytes.into());

    println!("Deploying processor v1 (an agent's first deployment goes straight in):");
    let printer = print_until_finished(host.events());
    let v1 = DeployRequest::builder(agent.clone(), module(PROCESSOR_V1)).label("v1");
    futures::executor::block_on(async { host.deploy(v1.build()).await?.rollout.wait().await })?;
    let _ = printer.join();

    println!("\nCanary of processor v3 under 300 orders/s:");
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let traffic = {
        let (host, agent, stop, counts) =
            (host.clone(), agent.clone(), stop.clone(), counts.clone());
        std::thread::spawn(move || orders(host, agent, 300, stop, counts))
    };
    std::thread::sleep(Duration::from_millis(500));
    let printer = print_until_finished(host.events());
    let v3 = DeployRequest::builder(agent.clone(), module(PROCESSOR_V3))
        .label("v3")
        .rollout(RolloutSpec::from_yaml(SPEC)?);
    let report =
        futures::executor::block_on(async { host.deploy(v3.build()).await?.rollout.wait().await })?;
    let _ = printer.join();
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();

    let (sent, answered, failed) = (
        counts.sent.load(Ordering::Relaxed),
        counts.answered.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    println!(
        "\n{}: {} in {:.1}s; {sent} orders sent, {answered} answered, {failed} failed, {} lost",
        report.deployment,
        report.outcome.as_str(),
        report.duration().as_secs_f64(),
        sent - answered - failed
    );
    if report.outcome.as_str() != "promoted" || sent != answered {
        return Err("the canary did not end as expected".into());
    }
    Ok(())
}
