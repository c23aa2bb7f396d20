//! A canary in real time: `processor` v3 rolled out over v1 under live order traffic by the
//! rollout driver, from a short rollout spec. v3 answers like v1, so every gate passes and
//! it is promoted. Run with `cargo run --example canary_rollout`.

use std::sync::Arc;
use std::time::Duration;

use caxton_core::SystemClock;
use caxton_examples::agents::{PROCESSOR_V1, PROCESSOR_V3};
use caxton_examples::host::{Host, agent_id};
use caxton_examples::load::{OrderMix, OrderTraffic};
use caxton_strategies::event::Mark;
use caxton_strategies::{Commands, EventSink, RolloutEvent, RolloutSpec};

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
"#;

/// Prints each rollout event as the command line does.
struct Print;

impl EventSink for Print {
    fn emit(&self, event: &RolloutEvent) {
        for line in event.human_lines() {
            let mark = match line.mark {
                Mark::Done => "✓",
                Mark::Failed => "✗",
                Mark::Progress => "→",
            };
            println!("{:>6.1}s  {mark} {}", event.at_s, line.text);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = Arc::new(Host::new(Arc::new(SystemClock))?);
    let agent = agent_id(&PROCESSOR_V1);
    let driver = host.driver(Arc::new(Print));

    println!("Deploying processor v1 (direct):");
    let direct = RolloutSpec::from_yaml("deployment:\n  strategy: direct\n")?
        .strategy
        .build()?;
    futures::executor::block_on(driver.run(
        host.new_deployment(&PROCESSOR_V1, "direct"),
        direct,
        Commands::none(),
    ))?;

    println!("\nCanary of processor v3 under 300 orders/s:");
    let traffic = OrderTraffic::start(
        host.clone(),
        agent,
        OrderMix {
            rate: 300,
            ..OrderMix::default()
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let spec = RolloutSpec::from_yaml(SPEC)?;
    let report = futures::executor::block_on(driver.run(
        host.new_deployment(&PROCESSOR_V3, "canary"),
        spec.strategy.build()?,
        Commands::none(),
    ))?;
    let tally = traffic.stop();
    futures::executor::block_on(host.reap());

    println!(
        "\n{}: {} in {:.1}s; {} orders sent, {} answered, {} lost",
        report.deployment,
        report.outcome.as_str(),
        report.duration().as_secs_f64(),
        tally.sent,
        tally.replied,
        tally.lost()
    );
    if report.outcome.as_str() != "promoted" || tally.lost() != 0 {
        return Err("the canary did not end as expected".into());
    }
    Ok(())
}
