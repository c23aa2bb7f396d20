//! `WasmRuntime` as core's `AgentRuntime`: sessions, live config, isolation, hot reload.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use caxton_core::{AgentError, AgentRuntime, ManualClock, SessionId, Timestamp};
use caxton_wasm::fixtures::{Fixture, tagged_echo};
use caxton_wasm::{
    AgentEngine, ConfigSource, EngineConfig, InstanceLimits, PoolingConfig, WasmRuntime,
    config_keys,
};
use common::*;

fn runtime() -> WasmRuntime {
    WasmRuntime::builder(engine())
        .limits(limits().deadline(Some(Duration::from_millis(200))).build())
        .build()
}

fn session(name: &str) -> SessionId {
    SessionId::new(name).unwrap()
}

fn ready(
    runtime: &WasmRuntime,
    agent: &str,
    id: &str,
    module: Vec<u8>,
) -> caxton_core::DeploymentId {
    runtime.load(spec(agent, id, module)).unwrap();
    let id = deployment(id);
    runtime.warm_up(&id).unwrap();
    id
}

#[test]
fn session_state_is_kept_within_a_session_and_separate_between_sessions() {
    let runtime = runtime();
    let counter = ready(&runtime, "counter", "counter-v1", Fixture::Counter.wasm());
    let (a, b) = (session("a"), session("b"));
    let send = |s: &SessionId| {
        String::from_utf8(runtime.handle(&counter, Some(s), b"").unwrap().bytes).unwrap()
    };
    assert_eq!(send(&a), "1");
    assert_eq!(send(&a), "2");
    assert_eq!(send(&b), "1");
    assert_eq!(send(&a), "3");
    assert_eq!(send(&b), "2");
    assert_eq!(runtime.health(&counter).unwrap().sessions, 2);

    assert!(runtime.end_session(&counter, &a));
    assert!(!runtime.end_session(&counter, &a));
    assert_eq!(runtime.health(&counter).unwrap().sessions, 1);
    // A new session of the same name starts from scratch.
    assert_eq!(send(&a), "1");
}

#[test]
fn messages_need_a_loaded_and_warmed_up_deployment() {
    let runtime = runtime();
    let id = deployment("echo-v1");
    assert_eq!(
        runtime.handle(&id, None, b"x").unwrap_err(),
        AgentError::NotLoaded {
            deployment: id.clone()
        }
    );
    runtime
        .load(spec("echo", "echo-v1", Fixture::Echo.wasm()))
        .unwrap();
    assert_eq!(
        runtime.handle(&id, None, b"x").unwrap_err(),
        AgentError::NotReady {
            deployment: id.clone()
        }
    );
    let health = runtime.health(&id).unwrap();
    assert!(health.live && !health.ready);
    runtime.warm_up(&id).unwrap();
    assert_eq!(runtime.handle(&id, None, b"x").unwrap().bytes, b"x");
    assert!(matches!(
        runtime.load(spec("echo", "echo-v1", Fixture::Echo.wasm())),
        Err(AgentError::AlreadyLoaded { .. })
    ));
}

#[test]
fn a_module_not_matching_its_code_digest_is_refused() {
    let runtime = runtime();
    let mut spec = spec("echo", "echo-v1", Fixture::Echo.wasm());
    spec.module = Fixture::Counter.wasm().into();
    let err = runtime.load(spec).unwrap_err();
    assert!(matches!(err, AgentError::DigestMismatch { .. }), "{err}");
}

#[test]
fn abi_breakers_fail_to_load_with_the_reason() {
    let runtime = runtime();
    let err = runtime
        .load(spec("bad", "bad-v1", Fixture::ForeignImport.wasm()))
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::AbiViolation { message, .. } if message.contains("env.abort")),
        "{err}"
    );
    assert!(runtime.health(&deployment("bad-v1")).is_none());
}

#[test]
fn a_failing_warm_up_leaves_the_deployment_not_ready_with_the_error() {
    let runtime = runtime();
    runtime
        .load(spec("broken", "broken-v1", Fixture::TrappingInit.wasm()))
        .unwrap();
    let id = deployment("broken-v1");
    let err = runtime.warm_up(&id).unwrap_err();
    assert!(matches!(err, AgentError::InitFailed { .. }), "{err}");
    let health = runtime.health(&id).unwrap();
    assert!(!health.ready);
    assert!(health.last_error.unwrap().contains("caxton_init"));
}

#[test]
fn config_change_is_seen_without_reloading() {
    let shared = Arc::new(ConfigSource::from_iter([("region", "eu")]));
    let runtime = WasmRuntime::builder(engine())
        .shared_config(shared.clone())
        .build();
    let mut spec = spec("reader", "reader-v1", Fixture::ConfigReader.wasm()).grant_secret("region");
    spec.config.insert("temperature".into(), "0.2".into());
    runtime.load(spec).unwrap();
    let id = deployment("reader-v1");
    runtime.warm_up(&id).unwrap();
    let s = session("s");
    let read = |key: &str| {
        let reply = runtime
            .handle(&id, Some(&s), &config_query(64, key))
            .unwrap()
            .bytes;
        let (len, buffer) = config_answer(&reply);
        (len >= 0).then(|| String::from_utf8(buffer[..len as usize].to_vec()).unwrap())
    };
    assert_eq!(read("temperature").as_deref(), Some("0.2"));
    assert_eq!(
        read(config_keys::MODEL).as_deref(),
        Some("anthropic/claude-sonnet@2026-01-01")
    );
    assert_eq!(read(config_keys::DEPLOYMENT).as_deref(), Some("reader-v1"));
    assert_eq!(read("region").as_deref(), Some("eu"));

    runtime.config(&id).unwrap().set("temperature", "0.7");
    shared.set("region", "us");
    assert_eq!(read("temperature").as_deref(), Some("0.7"));
    assert_eq!(read("region").as_deref(), Some("us"));
    // The same instance served every read: nothing was restarted.
    assert_eq!(runtime.stats(&id).unwrap().instances_started, 2);
}

#[test]
fn a_failed_session_instance_is_replaced_and_the_loss_is_visible() {
    let runtime = runtime();
    let id = ready(&runtime, "reply", "reply-v1", Fixture::ReplyAt.wasm());
    let s = session("s");
    let good = caxton_wasm::abi::pack_reply(1024, 8).to_le_bytes();
    let bad = caxton_wasm::abi::pack_reply(1 << 20, 8).to_le_bytes();
    assert_eq!(runtime.handle(&id, Some(&s), &good).unwrap().bytes, good);
    let err = runtime.handle(&id, Some(&s), &bad).unwrap_err();
    assert!(matches!(err, AgentError::ReplyOutOfBounds { .. }), "{err}");
    // The session goes on, on a fresh instance.
    assert_eq!(runtime.handle(&id, Some(&s), &good).unwrap().bytes, good);
    let stats = runtime.stats(&id).unwrap();
    assert_eq!(stats.sessions_reset, 1);
    assert_eq!(stats.health.traps, 1);
    assert_eq!(stats.health.messages, 3);
    assert!(stats.health.last_error.unwrap().contains("outside"));
}

#[test]
fn idle_sessions_lose_their_instance() {
    let clock = ManualClock::new(Timestamp::from_millis(0));
    let runtime = WasmRuntime::builder(engine())
        .clock(Arc::new(clock.clone()))
        .session_idle_timeout(Duration::from_secs(60))
        .build();
    let id = ready(&runtime, "counter", "counter-v1", Fixture::Counter.wasm());
    let (a, b) = (session("a"), session("b"));
    runtime.handle(&id, Some(&a), b"").unwrap();
    clock.advance(Duration::from_secs(30));
    runtime.handle(&id, Some(&b), b"").unwrap();
    clock.advance(Duration::from_secs(31));
    assert_eq!(runtime.evict_idle_sessions(), 1);
    assert_eq!(runtime.health(&id).unwrap().sessions, 1);
    // `a` starts over; `b` kept its count.
    assert_eq!(runtime.handle(&id, Some(&a), b"").unwrap().bytes, b"1");
    assert_eq!(runtime.handle(&id, Some(&b), b"").unwrap().bytes, b"2");
}

#[test]
fn hostile_agents_do_not_disturb_a_well_behaved_one() {
    // Generous limits for the good agent: a busy machine must not fail it.
    let runtime = WasmRuntime::builder(engine())
        .limits(limits().deadline(Some(Duration::from_secs(5))).build())
        .build();
    let echo = ready(&runtime, "echo", "echo-v1", Fixture::Echo.wasm());
    let hostile: Vec<_> = [
        Fixture::InfiniteLoop,
        Fixture::MemoryBomb,
        Fixture::UnboundedRecursion,
        Fixture::ReplyOutsideMemory,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, fixture)| {
        let id = format!("hostile-{i}");
        // Only the loop runs into the short deadline; the others fail by their own limits.
        let deadline = match fixture {
            Fixture::InfiniteLoop => Duration::from_millis(30),
            _ => Duration::from_secs(5),
        };
        let limits = InstanceLimits::builder()
            .deadline(Some(deadline))
            .memory_bytes(8 << 20)
            .build();
        runtime
            .load_with_limits(spec("hostile", &id, fixture.wasm()), limits)
            .unwrap();
        let id = deployment(&id);
        runtime.warm_up(&id).unwrap();
        (fixture, id)
    })
    .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let attacks: Vec<Arc<AtomicU32>> = (0..hostile.len()).map(|_| Arc::default()).collect();
    let attackers: Vec<_> = hostile
        .into_iter()
        .zip(attacks.clone())
        .map(|((fixture, id), count)| {
            let runtime = runtime.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let err = runtime.handle(&id, None, b"attack").unwrap_err();
                    let expected = match fixture {
                        Fixture::InfiniteLoop => "deadline_exceeded",
                        Fixture::MemoryBomb => "memory_limit",
                        Fixture::UnboundedRecursion => "stack_overflow",
                        _ => "reply_out_of_bounds",
                    };
                    assert_eq!(err.code(), expected, "{fixture:?}: {err}");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // At least 300 messages, and on until every hostile agent has failed twice meanwhile.
    const MESSAGES: u64 = 300;
    let mut sent = 0u64;
    while sent < MESSAGES || attacks.iter().any(|c| c.load(Ordering::Relaxed) < 2) {
        let message = format!("message {sent}");
        let session = session(&format!("s{}", sent % 3));
        let reply = runtime
            .handle(&echo, Some(&session), message.as_bytes())
            .expect("the well-behaved agent answers");
        assert_eq!(reply.bytes, message.as_bytes());
        sent += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().expect("attacker thread");
    }
    let health = runtime.health(&echo).unwrap();
    assert_eq!((health.messages, health.traps), (sent, 0));
}

#[test]
fn two_versions_answer_side_by_side() {
    let runtime = runtime();
    let v1 = ready(&runtime, "greeter", "greeter-v1", tagged_echo("v1:"));
    let v2 = ready(&runtime, "greeter", "greeter-v2", tagged_echo("v2:"));
    let workers: Vec<_> = [(v1, "v1:"), (v2, "v2:")]
        .into_iter()
        .map(|(id, tag)| {
            let runtime = runtime.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    let message = format!("m{i}");
                    let reply = runtime.handle(&id, None, message.as_bytes()).unwrap();
                    assert_eq!(reply.bytes, format!("{tag}{message}").as_bytes());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

#[test]
fn loading_a_version_does_not_block_messages_to_another() {
    let runtime = runtime();
    let v1 = ready(&runtime, "greeter", "greeter-v1", tagged_echo("v1:"));
    let loading = {
        let runtime = runtime.clone();
        thread::spawn(move || {
            for i in 0..5 {
                let id = format!("greeter-v{}", i + 2);
                runtime
                    .load(spec("greeter", &id, tagged_echo(&format!("v{}:", i + 2))))
                    .unwrap();
            }
        })
    };
    let mut answered = 0;
    while !loading.is_finished() || answered < 50 {
        assert_eq!(runtime.handle(&v1, None, b"x").unwrap().bytes, b"v1:x");
        answered += 1;
    }
    loading.join().unwrap();
    assert_eq!(runtime.loaded().len(), 6);
}

#[test]
fn unload_waits_for_in_flight_messages_and_refuses_new_ones() {
    let runtime = WasmRuntime::builder(engine())
        .limits(limits().deadline(Some(Duration::from_secs(5))).build())
        .build();
    let slow = ready(&runtime, "slow", "slow-v1", Fixture::Slow.wasm());
    let in_flight = {
        let runtime = runtime.clone();
        let slow = slow.clone();
        thread::spawn(move || runtime.handle(&slow, Some(&session("s")), &300u32.to_le_bytes()))
    };
    while runtime.stats(&slow).map(|s| s.in_flight) != Some(1) {
        thread::yield_now();
    }
    let unload_started = Instant::now();
    let unloader = {
        let runtime = runtime.clone();
        let slow = slow.clone();
        thread::spawn(move || {
            runtime.unload(&slow).unwrap();
            Instant::now()
        })
    };
    // While unloading, new messages are refused.
    while runtime.health(&slow).is_some_and(|h| h.live) {
        thread::yield_now();
    }
    if let Err(err) = runtime.handle(&slow, None, &0u32.to_le_bytes()) {
        assert!(
            matches!(
                err,
                AgentError::Unloading { .. } | AgentError::NotLoaded { .. }
            ),
            "{err}"
        );
    } else {
        panic!("a message was accepted during unload");
    }
    let unloaded_at = unloader.join().unwrap();
    assert_eq!(in_flight.join().unwrap().unwrap().bytes, b"done");
    assert!(
        unloaded_at.duration_since(unload_started) >= Duration::from_millis(150),
        "unload returned before the in-flight message could have finished"
    );
    assert!(runtime.health(&slow).is_none());
    assert_eq!(
        runtime.handle(&slow, None, b"").unwrap_err(),
        AgentError::NotLoaded { deployment: slow }
    );
}

/// Echoes its message, but traps (`unreachable`) on a message starting with a zero byte.
const TRAPS_ON_ZERO: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 60000)) (then unreachable))
    (i32.const 1024))
  (func (export "caxton_handle") (param $ptr i32) (param $len i32) (result i64)
    (if (i32.eqz (i32.load8_u (local.get $ptr))) (then unreachable))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))"#;

#[test]
fn repeated_agent_faults_turn_liveness_off_until_a_success() {
    let runtime = WasmRuntime::builder(engine())
        .limits(limits().max_message_bytes(100).build())
        .max_consecutive_failures(3)
        .build();
    let id = ready(
        &runtime,
        "flaky",
        "flaky-v1",
        wat::parse_str(TRAPS_ON_ZERO).unwrap(),
    );
    let s = session("s");
    let trap = |session: Option<&SessionId>| {
        let err = runtime.handle(&id, session, b"\0boom").unwrap_err();
        assert!(matches!(err, AgentError::Trap { .. }), "{err}");
    };
    let live = || runtime.health(&id).unwrap().live;

    trap(None);
    trap(Some(&s));
    assert!(live(), "two failures are under the limit of three");
    // A refusal by the host is not the agent's fault: it neither counts nor breaks the run.
    let err = runtime.handle(&id, None, &[1u8; 101]).unwrap_err();
    assert!(matches!(err, AgentError::MessageTooLarge { .. }), "{err}");
    assert!(live());
    trap(None);
    let health = runtime.health(&id).unwrap();
    assert!(!health.live && health.ready, "{health:?}");
    // Still taking messages: one success makes it live again and starts the count over.
    assert_eq!(runtime.handle(&id, Some(&s), b"ok").unwrap().bytes, b"ok");
    assert!(live());
    trap(None);
    trap(None);
    assert!(live());
    trap(Some(&s));
    assert!(!live());
}

#[test]
fn by_default_five_faults_in_a_row_make_a_deployment_not_live() {
    let runtime = runtime();
    let id = ready(
        &runtime,
        "flaky",
        "flaky-v1",
        wat::parse_str(TRAPS_ON_ZERO).unwrap(),
    );
    for failures in 1..=5 {
        runtime.handle(&id, None, b"\0").unwrap_err();
        assert_eq!(
            runtime.health(&id).unwrap().live,
            failures < 5,
            "{failures}"
        );
    }
    assert_eq!(runtime.health(&id).unwrap().traps, 5);
}

#[test]
fn failing_warm_ups_count_towards_liveness() {
    let runtime = WasmRuntime::builder(engine())
        .max_consecutive_failures(2)
        .build();
    runtime
        .load(spec("broken", "broken-v1", Fixture::TrappingInit.wasm()))
        .unwrap();
    let id = deployment("broken-v1");
    runtime.warm_up(&id).unwrap_err();
    assert!(runtime.health(&id).unwrap().live);
    runtime.warm_up(&id).unwrap_err();
    let health = runtime.health(&id).unwrap();
    assert!(!health.live && !health.ready, "{health:?}");
}

#[test]
fn replies_carry_what_the_message_cost() {
    let metered = WasmRuntime::builder(metering_engine())
        .limits(limits().fuel_per_message(Some(1_000_000)).build())
        .build();
    let id = ready(&metered, "echo", "echo-v1", Fixture::Echo.wasm());
    let reply = metered.handle(&id, None, b"cost me").unwrap();
    assert_eq!(reply.bytes, b"cost me");
    assert!(reply.stats.fuel_consumed.is_some_and(|fuel| fuel > 0));
    assert_eq!(reply.stats.memory_bytes, 64 << 10);
    assert!(reply.stats.latency > Duration::ZERO);
    // Without fuel metering there is no fuel to report.
    let plain = runtime();
    let id = ready(&plain, "echo", "echo-v1", Fixture::Echo.wasm());
    assert_eq!(
        plain.handle(&id, None, b"x").unwrap().stats.fuel_consumed,
        None
    );
}

#[test]
fn the_runtime_serves_as_a_trait_object() {
    let runtime: Arc<dyn AgentRuntime> = Arc::new(runtime());
    runtime
        .load(spec("echo", "echo-v1", Fixture::Echo.wasm()))
        .unwrap();
    runtime
        .load(spec("echo", "echo-v2", Fixture::Echo.wasm()))
        .unwrap();
    let mut loaded = runtime.loaded();
    loaded.sort();
    assert_eq!(loaded, [deployment("echo-v1"), deployment("echo-v2")]);
    runtime.warm_up(&loaded[0]).unwrap();
    assert_eq!(
        runtime.handle(&loaded[0], None, b"dyn").unwrap().bytes,
        b"dyn"
    );
    runtime.unload(&loaded[1]).unwrap();
    assert_eq!(runtime.loaded(), [deployment("echo-v1")]);
}

/// Sends one message to a counter agent in `session` and returns its count.
fn count(runtime: &WasmRuntime, id: &caxton_core::DeploymentId, session: &str) -> u32 {
    let reply = runtime
        .handle(id, Some(&self::session(session)), b"")
        .unwrap();
    String::from_utf8(reply.bytes).unwrap().parse().unwrap()
}

#[test]
fn sessions_are_bounded_per_deployment_and_the_least_recently_used_goes_first() {
    let runtime = WasmRuntime::builder(engine())
        .max_sessions_per_deployment(3)
        .build();
    let id = ready(&runtime, "counter", "counter-v1", Fixture::Counter.wasm());
    for name in ["a", "b", "c"] {
        assert_eq!(count(&runtime, &id, name), 1);
    }
    // `a` is used again, so `b` is now the least recently used.
    assert_eq!(count(&runtime, &id, "a"), 2);
    assert_eq!(count(&runtime, &id, "d"), 1);
    let stats = runtime.stats(&id).unwrap();
    assert_eq!((stats.sessions_open, stats.sessions_evicted), (3, 1));
    assert_eq!(stats.health.sessions, 3);
    // `a` and `c` kept their state; `b` lost it and, coming back, pushes out `c`.
    assert_eq!(count(&runtime, &id, "a"), 3);
    assert_eq!(count(&runtime, &id, "b"), 1);
    assert_eq!(count(&runtime, &id, "d"), 2);
    assert_eq!(count(&runtime, &id, "c"), 1);
    assert_eq!(runtime.stats(&id).unwrap().sessions_evicted, 3);
}

#[test]
fn one_deployment_opening_many_sessions_does_not_starve_another() {
    // An engine of 12 instances in all; each deployment keeps at most 4 sessions.
    let engine = AgentEngine::new(
        EngineConfig::default().pooling(
            PoolingConfig::default()
                .max_instances(12)
                .max_memory_bytes(64 << 20),
        ),
    )
    .unwrap();
    let runtime = WasmRuntime::builder(engine)
        .max_sessions_per_deployment(4)
        .build();
    let greedy = ready(&runtime, "greedy", "greedy-v1", Fixture::Counter.wasm());
    let modest = ready(&runtime, "modest", "modest-v1", Fixture::Echo.wasm());
    for i in 0..50 {
        assert_eq!(count(&runtime, &greedy, &format!("s{i}")), 1);
    }
    let stats = runtime.stats(&greedy).unwrap();
    assert_eq!(stats.health.sessions, 4);
    assert_eq!(stats.sessions_evicted, 46);
    assert_eq!(stats.health.traps, 0);
    for s in [Some(session("x")), Some(session("y")), None] {
        let reply = runtime
            .handle(&modest, s.as_ref(), b"still served")
            .unwrap();
        assert_eq!(reply.bytes, b"still served");
    }
}

#[test]
fn a_session_whose_instance_cannot_start_is_not_kept() {
    // Room for two instances: the warm-up's pooled one and one session.
    let engine = AgentEngine::new(
        EngineConfig::default().pooling(
            PoolingConfig::default()
                .max_instances(2)
                .max_memory_bytes(64 << 20),
        ),
    )
    .unwrap();
    let runtime = WasmRuntime::new(engine);
    let id = ready(&runtime, "counter", "counter-v1", Fixture::Counter.wasm());
    assert_eq!(count(&runtime, &id, "a"), 1);
    for _ in 0..3 {
        let err = runtime.handle(&id, Some(&session("b")), b"").unwrap_err();
        assert!(matches!(err, AgentError::Host { .. }), "{err}");
    }
    assert_eq!(runtime.stats(&id).unwrap().sessions_open, 1);
    assert!(runtime.end_session(&id, &session("a")));
    assert!(!runtime.end_session(&id, &session("b")), "b was never kept");
    assert_eq!(count(&runtime, &id, "b"), 1);
    assert_eq!(runtime.stats(&id).unwrap().sessions_open, 1);
}

#[test]
fn a_new_session_is_refused_while_every_session_is_busy() {
    let runtime = WasmRuntime::builder(engine())
        .limits(limits().deadline(Some(Duration::from_secs(5))).build())
        .max_sessions_per_deployment(1)
        .build();
    let slow = ready(&runtime, "slow", "slow-v1", Fixture::Slow.wasm());
    let busy = {
        let runtime = runtime.clone();
        let slow = slow.clone();
        thread::spawn(move || runtime.handle(&slow, Some(&session("a")), &300u32.to_le_bytes()))
    };
    while runtime.stats(&slow).map(|s| s.in_flight) != Some(1) {
        thread::yield_now();
    }
    let err = runtime
        .handle(&slow, Some(&session("b")), &0u32.to_le_bytes())
        .unwrap_err();
    assert_eq!(
        err,
        AgentError::TooManySessions {
            deployment: slow.clone(),
            limit: 1
        }
    );
    assert_eq!(err.code(), "too_many_sessions");
    assert_eq!(busy.join().unwrap().unwrap().bytes, b"done");
    // Once `a` is idle, `b` takes its place.
    let reply = runtime
        .handle(&slow, Some(&session("b")), &0u32.to_le_bytes())
        .unwrap();
    assert_eq!(reply.bytes, b"done");
    assert_eq!(runtime.stats(&slow).unwrap().sessions_evicted, 1);
}

#[test]
fn sessions_idle_for_thirty_minutes_expire_by_default() {
    let clock = ManualClock::new(Timestamp::from_millis(0));
    let runtime = WasmRuntime::builder(engine())
        .clock(Arc::new(clock.clone()))
        .build();
    let id = ready(&runtime, "counter", "counter-v1", Fixture::Counter.wasm());
    assert_eq!(count(&runtime, &id, "a"), 1);
    clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(runtime.evict_idle_sessions(), 0);
    clock.advance(Duration::from_secs(2 * 60));
    assert_eq!(runtime.evict_idle_sessions(), 1);
    let stats = runtime.stats(&id).unwrap();
    assert_eq!((stats.sessions_open, stats.sessions_expired), (0, 1));
    assert_eq!(count(&runtime, &id, "a"), 1);
}

#[test]
fn the_log_rate_limit_is_the_deployments_not_each_instances() {
    // A burst of 3 and one more line a second, for the whole deployment.
    let runtime = WasmRuntime::builder(engine())
        .limits(limits().log_rate(1, 3).build())
        .build();
    let chatty = ready(&runtime, "chatty", "chatty-v1", Fixture::Logger.wasm());
    let quiet = ready(&runtime, "quiet", "quiet-v1", Fixture::Logger.wasm());
    let started = Instant::now();
    let output = capture_logs(|| {
        // Every session is an instance of its own; none gets a burst of its own.
        for i in 0..5 {
            let s = session(&format!("s{i}"));
            for _ in 0..2 {
                runtime
                    .handle(&chatty, Some(&s), &log_message(2, b"chatty line"))
                    .unwrap();
            }
        }
        runtime
            .handle(&chatty, None, &log_message(2, b"chatty line"))
            .unwrap();
        // Another deployment has a budget of its own.
        runtime
            .handle(&quiet, Some(&session("q")), &log_message(2, b"quiet line"))
            .unwrap();
    });
    let refilled = started.elapsed().as_secs() as usize;
    let chatty_lines = output.matches("chatty line").count();
    assert!(
        (3..=3 + refilled).contains(&chatty_lines),
        "{chatty_lines} lines after {refilled} s:\n{output}"
    );
    assert_eq!(output.matches("quiet line").count(), 1, "{output}");
}

/// What a config-reader agent reads for `key`, in a session of its own.
fn read_config(runtime: &WasmRuntime, id: &caxton_core::DeploymentId, key: &str) -> Option<String> {
    let reply = runtime
        .handle(id, Some(&session("reader")), &config_query(64, key))
        .unwrap()
        .bytes;
    let (len, buffer) = config_answer(&reply);
    (len >= 0).then(|| String::from_utf8(buffer[..len as usize].to_vec()).unwrap())
}

#[test]
fn an_agent_reads_only_the_host_wide_secrets_granted_to_it() {
    let secrets = Arc::new(ConfigSource::from_iter([
        ("api-key", "k-123"),
        ("db-password", "p-456"),
    ]));
    let runtime = WasmRuntime::builder(engine())
        .shared_config(secrets.clone())
        .build();
    let granted = spec("a", "a-v1", Fixture::ConfigReader.wasm()).grant_secret("api-key");
    runtime.load(granted).unwrap();
    let a = deployment("a-v1");
    runtime.warm_up(&a).unwrap();
    let not_granted = spec("b", "b-v1", Fixture::ConfigReader.wasm()).with_config("mode", "b-own");
    runtime.load(not_granted).unwrap();
    let b = deployment("b-v1");
    runtime.warm_up(&b).unwrap();

    assert_eq!(
        read_config(&runtime, &a, "api-key").as_deref(),
        Some("k-123")
    );
    assert_eq!(read_config(&runtime, &a, "db-password"), None);
    assert_eq!(read_config(&runtime, &b, "api-key"), None);
    assert_eq!(read_config(&runtime, &b, "db-password"), None);
    // B still reads its own configuration and the runtime's keys.
    assert_eq!(read_config(&runtime, &b, "mode").as_deref(), Some("b-own"));
    assert_eq!(
        read_config(&runtime, &b, config_keys::DEPLOYMENT).as_deref(),
        Some("b-v1")
    );
    // A rotated secret reaches the agent granted it, and still only that one.
    secrets.set("api-key", "k-789");
    assert_eq!(
        read_config(&runtime, &a, "api-key").as_deref(),
        Some("k-789")
    );
    assert_eq!(read_config(&runtime, &b, "api-key"), None);
}
