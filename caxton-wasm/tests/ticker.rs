//! The epoch ticker lives exactly as long as something can still run agent code.
//! (Alone in its own test binary: it counts this process's threads.)

use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{AgentEngine, EngineConfig, InstanceSetup};

fn tickers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "caxton-epoch")
                .count()
        })
        .unwrap_or(0)
}

/// Waits up to a second for the count to reach `expected` (a new thread names itself once
/// it runs; a stopped one disappears once joined).
fn settles_at(expected: usize) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < until {
        if tickers() == expected {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

#[test]
fn the_ticker_stops_when_the_engine_and_its_agents_are_dropped() {
    if !std::path::Path::new("/proc/self/task").exists() {
        return; // Thread names are read from procfs; elsewhere there is nothing to count.
    }
    let engine = AgentEngine::new(EngineConfig::default().on_demand()).unwrap();
    assert!(settles_at(1));
    let agent = engine.compile(&Fixture::Echo.wasm()).unwrap();
    let setup = InstanceSetup::new("a".parse().unwrap(), "d".parse().unwrap());
    let mut instance = agent.instantiate(&setup).unwrap();
    drop(engine);
    drop(agent);
    // The instance still needs the epoch for its deadlines.
    assert!(settles_at(1));
    assert_eq!(instance.handle(b"ping").unwrap().bytes, b"ping");
    drop(instance);
    assert!(settles_at(0));
}
