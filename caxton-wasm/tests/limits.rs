//! Every limit enforced with its typed error, and the measurements instances report.

mod common;

use std::time::{Duration, Instant};

use caxton_core::AgentError;
use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{EngineConfig, InstanceLimits};
use common::*;

fn tester() -> caxton_core::DeploymentId {
    deployment("tester-v1")
}

#[test]
fn an_infinite_loop_exceeds_its_deadline() {
    let engine = engine();
    let deadline = Duration::from_millis(50);
    let mut agent = instance(
        &engine,
        Fixture::InfiniteLoop,
        limits().deadline(Some(deadline)).build(),
    );
    let started = Instant::now();
    let err = agent.handle(b"go").unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err,
        AgentError::DeadlineExceeded {
            deployment: tester(),
            limit: deadline
        }
    );
    assert!(
        took >= deadline,
        "stopped after {took:?}, before the deadline"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(agent.is_failed());
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_when_metered() {
    let engine = metering_engine();
    let mut agent = instance(
        &engine,
        Fixture::InfiniteLoop,
        limits().fuel_per_message(Some(100_000)).build(),
    );
    let err = agent.handle(b"go").unwrap_err();
    assert_eq!(
        err,
        AgentError::OutOfFuel {
            deployment: tester(),
            budget: 100_000
        }
    );
    assert_eq!(agent.last_stats().unwrap().fuel_consumed, Some(100_000));
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let engine = engine();
    let limit = 4 << 20;
    let mut agent = instance(
        &engine,
        Fixture::MemoryBomb,
        limits().memory_bytes(limit).build(),
    );
    let err = agent.handle(b"boom").unwrap_err();
    assert_eq!(
        err,
        AgentError::MemoryLimit {
            deployment: tester(),
            limit_bytes: limit
        }
    );
    let stats = agent.last_stats().unwrap();
    assert!(stats.memory_bytes <= limit, "{stats:?}");
}

#[test]
fn the_pools_memory_maximum_is_a_memory_limit_too() {
    // The instance limit is above the pool's 64 MiB per memory: the pool stops the bomb.
    let engine = engine();
    let mut agent = instance(
        &engine,
        Fixture::MemoryBomb,
        limits().memory_bytes(1 << 30).build(),
    );
    let err = agent.handle(b"boom").unwrap_err();
    assert!(matches!(err, AgentError::MemoryLimit { .. }), "{err}");
}

#[test]
fn a_module_whose_initial_memory_is_over_the_limit_does_not_start() {
    let engine = engine();
    let module = wat::parse_str(
        r#"(module
            (memory (export "memory") 32)
            (func (export "caxton_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "caxton_handle") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let err = engine
        .compile(&module)
        .unwrap()
        .instantiate(&setup().limits(limits().memory_bytes(1 << 20).build()))
        .unwrap_err();
    assert!(
        matches!(err, AgentError::MemoryLimit { limit_bytes, .. } if limit_bytes == 1 << 20),
        "{err}"
    );
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    let engine = engine();
    let mut agent = instance(&engine, Fixture::UnboundedRecursion, limits().build());
    let err = agent.handle(b"down").unwrap_err();
    assert_eq!(
        err,
        AgentError::StackOverflow {
            deployment: tester()
        }
    );
}

#[test]
fn a_trapping_init_fails_instantiation() {
    let engine = engine();
    let err = compile(&engine, Fixture::TrappingInit)
        .instantiate(&setup())
        .unwrap_err();
    let AgentError::InitFailed { message, .. } = &err else {
        panic!("expected InitFailed, got {err}");
    };
    assert!(message.contains("unreachable"), "{message}");
}

#[test]
fn an_init_that_is_not_ready_fails_instantiation_with_its_status() {
    let engine = engine();
    let err = compile(&engine, Fixture::InitNotReady)
        .instantiate(&setup())
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::InitFailed { message, .. } if message.contains("returned 7")),
        "{err}"
    );
}

#[test]
fn an_oversized_message_is_refused_without_failing_the_instance() {
    let engine = engine();
    let mut echo = instance(
        &engine,
        Fixture::Echo,
        limits().max_message_bytes(1_000).build(),
    );
    let err = echo.handle(&[0u8; 1_001]).unwrap_err();
    assert_eq!(
        err,
        AgentError::MessageTooLarge {
            deployment: tester(),
            len: 1_001,
            limit: 1_000
        }
    );
    assert!(!echo.is_failed());
    assert_eq!(echo.handle(b"still here").unwrap().bytes, b"still here");
}

#[test]
fn a_fuel_budget_needs_a_metering_engine() {
    let engine = engine();
    let err = compile(&engine, Fixture::Echo)
        .instantiate(&setup().limits(limits().fuel_per_message(Some(1_000)).build()))
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::Host { message, .. } if message.contains("fuel_metering")),
        "{err}"
    );
}

#[test]
fn fuel_per_message_is_measured_and_deterministic() {
    let engine = metering_engine();
    let mut echo = instance(
        &engine,
        Fixture::Echo,
        limits().fuel_per_message(Some(1_000_000)).build(),
    );
    let first = echo.handle(&[1u8; 300]).unwrap().stats;
    let second = echo.handle(&[2u8; 300]).unwrap().stats;
    let fuel = first.fuel_consumed.expect("metered");
    assert!(fuel > 0 && fuel < 1_000, "{fuel}");
    assert_eq!(second.fuel_consumed, Some(fuel));
    assert_eq!(first.memory_bytes, 65_536);
    // Without metering there is no fuel figure.
    let plain = instance(
        &engine_with(EngineConfig::default()),
        Fixture::Echo,
        limits().build(),
    )
    .handle(b"x")
    .unwrap()
    .stats;
    assert_eq!(plain.fuel_consumed, None);
}

#[test]
fn memory_growth_is_reported_per_message() {
    let engine = engine();
    let mut echo = instance(&engine, Fixture::Echo, InstanceLimits::default());
    assert_eq!(echo.memory_bytes(), 65_536);
    let stats = echo.handle(&vec![0u8; 300_000]).unwrap().stats;
    // 1024 + 300 000 bytes take 5 pages.
    assert_eq!(stats.memory_bytes, 5 * 65_536);
    assert!(echo.instantiate_time() > Duration::ZERO);
}
