//! The agent ABI v1: exports checked at load, messages and replies, and the host functions.

mod common;

use std::sync::Arc;

use caxton_core::{AgentError, ManualClock, Timestamp};
use caxton_wasm::abi::pack_reply;
use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{AbiViolation, CompileError, ConfigLayers, ConfigSource};
use common::*;
use proptest::prelude::*;

#[test]
fn echo_round_trips_messages_of_every_size() {
    let engine = engine();
    let mut echo = instance(&engine, Fixture::Echo, limits().build());
    for len in [0usize, 1, 255, 256, 65_536, 200_000] {
        let message: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let reply = echo.handle(&message).unwrap();
        assert_eq!(reply.bytes, message, "length {len}");
        assert!(reply.stats.memory_bytes >= len as u64 + 1024);
    }
    assert_eq!(echo.messages(), 6);
    assert!(!echo.is_failed());
}

#[test]
fn a_module_missing_each_required_export_is_refused_naming_it() {
    let engine = engine();
    for (fixture, name) in [
        (Fixture::MissingMemory, "memory"),
        (Fixture::MissingAlloc, "caxton_alloc"),
        (Fixture::MissingHandle, "caxton_handle"),
    ] {
        let err = engine.compile(&fixture.wasm()).unwrap_err();
        let CompileError::Abi { violations, .. } = &err else {
            panic!("{fixture:?}: expected an ABI error, got {err}");
        };
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            matches!(&violations[0], AbiViolation::MissingExport { name: n, .. } if *n == name),
            "{violations:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn a_mistyped_export_is_refused_with_both_signatures() {
    let err = engine()
        .compile(&Fixture::WrongHandleSignature.wasm())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("caxton_handle")
            && text.contains("(i32, i32) -> (i64)")
            && text.contains("(i32, i32) -> (i32)"),
        "{text}"
    );
}

#[test]
fn imports_outside_the_abi_are_refused_each_named() {
    let err = engine()
        .compile(&Fixture::ForeignImport.wasm())
        .unwrap_err();
    let CompileError::Abi { violations, .. } = &err else {
        panic!("expected an ABI error, got {err}");
    };
    let named: Vec<String> = violations
        .iter()
        .map(|v| match v {
            AbiViolation::UnknownImport { module, name, .. } => format!("{module}.{name}"),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(named, ["env.abort", "caxton.exec"]);
}

#[test]
fn invalid_bytes_are_a_compile_error() {
    let err = engine().compile(b"not wasm at all").unwrap_err();
    assert!(matches!(err, CompileError::Invalid { .. }), "{err}");
}

#[test]
fn a_reply_outside_memory_is_reported_with_its_bounds() {
    let engine = engine();
    let mut agent = instance(&engine, Fixture::ReplyOutsideMemory, limits().build());
    let err = agent.handle(b"hi").unwrap_err();
    assert_eq!(
        err,
        AgentError::ReplyOutOfBounds {
            deployment: deployment("tester-v1"),
            ptr: 0x7fff_0000,
            len: 16,
            memory_bytes: 65_536,
        }
    );
    assert!(agent.is_failed());
    // A failed instance is never run again.
    let again = agent.handle(b"hi").unwrap_err();
    assert!(again.to_string().contains("failed earlier"), "{again}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn replies_are_read_exactly_when_inside_memory_and_refused_otherwise(
        ptr in prop_oneof![0u32..70_000, any::<u32>()],
        len in prop_oneof![0u32..70_000, any::<u32>()],
    ) {
        let engine = shared_engine();
        let agent = shared_reply_at(&engine);
        let mut instance = agent.instantiate(&setup()).unwrap();
        let packed = pack_reply(ptr, len);
        let result = instance.handle(&packed.to_le_bytes());
        let inside = u64::from(ptr) + u64::from(len) <= 65_536;
        match result {
            Ok(reply) => {
                prop_assert!(inside);
                prop_assert_eq!(reply.bytes.len(), len as usize);
                // The message itself sits at 1024: where the reply overlaps it, so must the bytes.
                if ptr == 1024 && len == 8 {
                    prop_assert_eq!(reply.bytes, packed.to_le_bytes().to_vec());
                }
            }
            Err(AgentError::ReplyOutOfBounds { ptr: p, len: l, memory_bytes, .. }) => {
                prop_assert!(!inside);
                prop_assert_eq!((p, l, memory_bytes), (ptr, len, 65_536));
            }
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}

fn shared_engine() -> caxton_wasm::AgentEngine {
    static ENGINE: std::sync::OnceLock<caxton_wasm::AgentEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(engine).clone()
}

fn shared_reply_at(engine: &caxton_wasm::AgentEngine) -> Arc<caxton_wasm::CompiledAgent> {
    compile(engine, Fixture::ReplyAt)
}

fn config_reader(config: ConfigLayers) -> caxton_wasm::AgentInstance {
    compile(&shared_engine(), Fixture::ConfigReader)
        .instantiate(&setup().config(config))
        .unwrap()
}

#[test]
fn config_returns_the_length_and_copies_only_what_fits() {
    let source = Arc::new(ConfigSource::from_iter([
        ("model", "anthropic/claude"),
        ("empty", ""),
    ]));
    let mut agent = config_reader(ConfigLayers::new(source.clone()));

    let reply = agent.handle(&config_query(64, "model")).unwrap().bytes;
    let (len, buffer) = config_answer(&reply);
    assert_eq!(len, 16);
    assert_eq!(&buffer[..16], b"anthropic/claude");
    assert!(buffer[16..].iter().all(|&b| b == b'#'));

    // Too long for the capacity: the length is returned and nothing is copied.
    let reply = agent.handle(&config_query(5, "model")).unwrap().bytes;
    let (len, buffer) = config_answer(&reply);
    assert_eq!(len, 16);
    assert!(buffer.iter().all(|&b| b == b'#'));

    let reply = agent.handle(&config_query(64, "absent")).unwrap().bytes;
    assert_eq!(config_answer(&reply).0, -1);

    let reply = agent.handle(&config_query(0, "empty")).unwrap().bytes;
    assert_eq!(config_answer(&reply).0, 0);
}

#[test]
fn config_changes_are_seen_by_a_running_instance() {
    let source = Arc::new(ConfigSource::new());
    let shared = Arc::new(ConfigSource::from_iter([("api_key", "shared-secret")]));
    let mut agent =
        config_reader(ConfigLayers::new(source.clone()).with_shared(shared.clone(), ["api_key"]));
    let read = |agent: &mut caxton_wasm::AgentInstance, key: &str| {
        let reply = agent.handle(&config_query(64, key)).unwrap().bytes;
        let (len, buffer) = config_answer(&reply);
        (len >= 0).then(|| String::from_utf8(buffer[..len as usize].to_vec()).unwrap())
    };
    assert_eq!(read(&mut agent, "prompt"), None);
    source.set("prompt", "be brief");
    assert_eq!(read(&mut agent, "prompt").as_deref(), Some("be brief"));
    assert_eq!(
        read(&mut agent, "api_key").as_deref(),
        Some("shared-secret")
    );
    source.set("api_key", "own-secret");
    assert_eq!(read(&mut agent, "api_key").as_deref(), Some("own-secret"));
    shared.set("api_key", "rotated");
    source.remove("api_key");
    assert_eq!(read(&mut agent, "api_key").as_deref(), Some("rotated"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn config_copies_iff_the_value_fits_and_always_reports_its_length(
        value in "[a-z0-9]{0,80}",
        cap in 0u32..=64,
    ) {
        let source = Arc::new(ConfigSource::from_iter([("key", value.clone())]));
        let mut agent = config_reader(ConfigLayers::new(source));
        let reply = agent.handle(&config_query(cap, "key")).unwrap().bytes;
        let (len, buffer) = config_answer(&reply);
        prop_assert_eq!(len as usize, value.len());
        if value.len() <= cap as usize {
            prop_assert_eq!(&buffer[..value.len()], value.as_bytes());
            prop_assert!(buffer[value.len()..].iter().all(|&b| b == b'#'));
        } else {
            prop_assert!(buffer.iter().all(|&b| b == b'#'));
        }
    }
}

#[test]
fn now_ms_reads_the_given_clock() {
    let clock = ManualClock::new(Timestamp::from_millis(1_234));
    let mut agent = compile(&shared_engine(), Fixture::Clock)
        .instantiate(&setup().clock(Arc::new(clock.clone())))
        .unwrap();
    let read = |agent: &mut caxton_wasm::AgentInstance| {
        i64::from_le_bytes(agent.handle(b"").unwrap().bytes.try_into().unwrap())
    };
    assert_eq!(read(&mut agent), 1_234);
    clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(read(&mut agent), 61_234);
}

#[test]
fn log_lines_reach_tracing_with_ids_capped_and_rate_limited() {
    let output = capture_logs(|| {
        let limits = limits().log_line_bytes(32).log_rate(1, 3).build();
        let mut agent = compile(&shared_engine(), Fixture::Logger)
            .instantiate(
                &setup()
                    .session(Some(caxton_core::SessionId::new("sess-9").unwrap()))
                    .limits(limits),
            )
            .unwrap();
        agent.handle(&log_message(3, b"disk almost full")).unwrap();
        agent.handle(&log_message(2, &[b'x'; 100])).unwrap();
        agent.handle(&log_message(4, b"third")).unwrap();
        // Over the burst of 3: dropped.
        agent.handle(&log_message(4, b"fourth")).unwrap();
        agent.handle(&log_message(4, b"fifth")).unwrap();
    });
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    assert!(lines[0].contains("WARN") && lines[0].contains("disk almost full"));
    for field in ["agent=tester", "deployment=tester-v1", "session=\"sess-9\""] {
        assert!(lines[0].contains(field), "{field} missing in {}", lines[0]);
    }
    assert!(lines[1].contains(&"x".repeat(32)) && !lines[1].contains(&"x".repeat(33)));
    assert!(lines[1].contains("truncated=true"), "{}", lines[1]);
    assert!(lines[2].contains("ERROR") && lines[2].contains("third"));
    assert!(!output.contains("fourth") && !output.contains("fifth"));
}

#[test]
fn a_log_line_cannot_forge_another() {
    let output = capture_logs(|| {
        let mut agent = instance(&shared_engine(), Fixture::Logger, limits().build());
        let forged = b"ok\n2026-01-01T00:00:00Z ERROR caxton::wasm: deployment unloaded\r\x1b[1A";
        agent.handle(&log_message(2, forged)).unwrap();
    });
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 1, "{output}");
    assert!(
        lines[0].contains(
            r"ok\n2026-01-01T00:00:00Z ERROR caxton::wasm: deployment unloaded\r\u{1b}[1A"
        ),
        "{output}"
    );
    assert!(
        !output.contains('\r') && !output.contains('\x1b'),
        "{output:?}"
    );
}

#[test]
fn a_trap_in_caxton_alloc_is_reported_as_a_trap() {
    let mut agent = compile(&shared_engine(), Fixture::Logger)
        .instantiate(&setup())
        .unwrap();
    // The logger's allocator refuses messages over 120 000 bytes with `unreachable`.
    let err = agent.handle(&vec![2u8; 200_000]).unwrap_err();
    assert!(
        matches!(&err, AgentError::Trap { message, .. } if message.contains("unreachable")),
        "{err}"
    );
}

#[test]
fn the_synthetic_agent_passes_the_abi_and_answers() {
    let module = caxton_wasm::fixtures::synthetic_agent(128);
    let mut agent = shared_engine()
        .compile(&module)
        .unwrap()
        .instantiate(&setup())
        .unwrap();
    let first = agent.handle(b"some message").unwrap().bytes;
    assert_eq!(first.len(), 4);
    assert_eq!(
        agent.handle(b"some message").unwrap().bytes,
        first,
        "deterministic"
    );
}
