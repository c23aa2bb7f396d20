//! `WasmRuntime` as core's `AgentRuntime`: sessions, live config, isolation, hot reload.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use caxton_core::{AgentError, AgentRuntime, ManualClock, SessionId, Timestamp};
use caxton_wasm::fixtures::{Fixture, tagged_echo};
use caxton_wasm::{ConfigSource, InstanceLimits, WasmRuntime, config_keys};
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
    let send =
        |s: &SessionId| String::from_utf8(runtime.handle(&counter, Some(s), b"").unwrap()).unwrap();
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
    assert_eq!(runtime.handle(&id, None, b"x").unwrap(), b"x");
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
    let mut spec = spec("reader", "reader-v1", Fixture::ConfigReader.wasm());
    spec.config.insert("temperature".into(), "0.2".into());
    runtime.load(spec).unwrap();
    let id = deployment("reader-v1");
    runtime.warm_up(&id).unwrap();
    let s = session("s");
    let read = |key: &str| {
        let reply = runtime
            .handle(&id, Some(&s), &config_query(64, key))
            .unwrap();
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
    assert_eq!(runtime.handle(&id, Some(&s), &good).unwrap(), good);
    let err = runtime.handle(&id, Some(&s), &bad).unwrap_err();
    assert!(matches!(err, AgentError::ReplyOutOfBounds { .. }), "{err}");
    // The session goes on, on a fresh instance.
    assert_eq!(runtime.handle(&id, Some(&s), &good).unwrap(), good);
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
    assert_eq!(runtime.handle(&id, Some(&a), b"").unwrap(), b"1");
    assert_eq!(runtime.handle(&id, Some(&b), b"").unwrap(), b"2");
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
        assert_eq!(reply, message.as_bytes());
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
                    assert_eq!(reply, format!("{tag}{message}").as_bytes());
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
        assert_eq!(runtime.handle(&v1, None, b"x").unwrap(), b"v1:x");
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
    assert_eq!(in_flight.join().unwrap().unwrap(), b"done");
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
