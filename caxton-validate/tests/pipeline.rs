//! The pipeline end to end on real modules: a well-behaved agent passes all four stages,
//! and every failing stage has a fixture that fails it with the right finding.

use std::path::PathBuf;
use std::sync::OnceLock;

use caxton_validate::contract::ContractTest;
use caxton_validate::policy::Policy;
use caxton_validate::report::{Finding, Severity, StageStatus, ValidationReport};
use caxton_validate::{
    ModuleSource, Pipeline, PipelineError, Stage, StageContext, ValidationInput, codes,
};
use caxton_wasm::fixtures::Fixture;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn default_pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| Pipeline::new(Policy::default()).expect("pipeline"))
}

fn validate(source: ModuleSource) -> ValidationReport {
    default_pipeline().validate(&ValidationInput::new(source))
}

fn fixture(f: Fixture) -> ModuleSource {
    ModuleSource::from_bytes(format!("{f:?}"), f.wasm())
}

fn processor(version: u8) -> ModuleSource {
    ModuleSource::from_path(&repo_file(&format!(
        "caxton-cli/samples/processor_v{version}.wasm"
    )))
    .expect("sample agent")
}

fn processor_vectors() -> Vec<ContractTest> {
    ContractTest::from_file(&repo_file("examples/agents/processor/contract_tests.json"))
        .expect("vectors")
}

fn statuses(report: &ValidationReport) -> Vec<(&str, StageStatus)> {
    report
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.status))
        .collect()
}

fn failing_codes<'a>(report: &'a ValidationReport, stage: &str) -> Vec<&'a str> {
    report
        .stage(stage)
        .expect("stage")
        .findings_at_least(Severity::Error)
        .map(|f| f.code.as_str())
        .collect()
}

/// A JSON agent in WAT: replies `reply` to every message, except that it traps on a message
/// of exactly 12 bytes; carries `contract` as its `caxton.contract` section when given.
fn json_agent(contract: Option<&str>, reply: &str) -> ModuleSource {
    let section = contract.map_or(String::new(), |c| {
        format!(
            "(@custom \"caxton.contract\" \"{}\")",
            c.replace('"', "\\\"")
        )
    });
    let escaped = reply.replace('"', "\\\"");
    let wat = format!(
        r#"(module
            (memory (export "memory") 2)
            (data (i32.const 16) "{escaped}")
            (func (export "caxton_alloc") (param i32) (result i32) i32.const 4096)
            (func (export "caxton_handle") (param i32 i32) (result i64)
                (if (i32.eq (local.get 1) (i32.const 12)) (then unreachable))
                i64.const {packed})
            {section})"#,
        packed = (16i64 << 32) | reply.len() as i64,
    );
    ModuleSource::from_wat("json_agent.wat", &wat).expect("fixture")
}

const PING_CONTRACT: &str = r#"{"accepts":["ping"],"emits":["pong","error"]}"#;

#[test]
fn a_well_behaved_agent_passes_all_four_stages() {
    let input = ValidationInput::new(processor(1)).contract_tests(processor_vectors());
    let report = default_pipeline().validate(&input);
    assert!(
        report.accepted,
        "{:#?}",
        report.findings().collect::<Vec<_>>()
    );
    assert_eq!(
        statuses(&report),
        [
            ("static", StageStatus::Passed),
            ("sandbox", StageStatus::Passed),
            ("contracts", StageStatus::Passed),
            ("resources", StageStatus::Passed)
        ]
    );
    let profile = report.profile.expect("profile");
    assert!(
        profile.fuel_per_message_p50 > 0
            && profile.fuel_per_message_p99 >= profile.fuel_per_message_p50
    );
    assert!(profile.peak_memory_bytes >= 65_536);
    assert!(profile.instantiate_us_p50 > 0.0 && profile.handle_us_p99 >= profile.handle_us_p50);
    assert!(report.digest.starts_with("sha256:"));
    assert!(report.stages.iter().all(|s| s.duration_ms >= 0.0));
}

#[test]
fn every_sample_agent_is_accepted() {
    for name in [
        "processor_v1",
        "processor_v2",
        "processor_v3",
        "chat_v1",
        "chat_v2",
    ] {
        let source =
            ModuleSource::from_path(&repo_file(&format!("caxton-cli/samples/{name}.wasm")))
                .unwrap();
        let report = validate(source);
        assert!(
            report.accepted,
            "{name}: {:#?}",
            report.findings().collect::<Vec<_>>()
        );
    }
}

#[test]
fn contract_vectors_catch_the_processor_v2_regression() {
    let input = ValidationInput::new(processor(2))
        .previous(processor(1))
        .contract_tests(processor_vectors());
    let report = default_pipeline().validate(&input);
    assert!(!report.accepted);
    assert_eq!(
        report.stage("contracts").unwrap().status,
        StageStatus::Failed
    );
    assert!(failing_codes(&report, "contracts").contains(&codes::UNEXPECTED_KIND));
    assert_eq!(
        report.stage("resources").unwrap().status,
        StageStatus::Skipped
    );
    assert!(report.profile.is_none());
}

#[test]
fn a_failed_stage_skips_the_rest() {
    let report = validate(fixture(Fixture::MissingMemory));
    assert!(!report.accepted);
    assert_eq!(
        statuses(&report),
        [
            ("static", StageStatus::Failed),
            ("sandbox", StageStatus::Skipped),
            ("contracts", StageStatus::Skipped),
            ("resources", StageStatus::Skipped)
        ]
    );
    assert_eq!(failing_codes(&report, "static"), [codes::MISSING_EXPORT]);
    assert!(report.stage("sandbox").unwrap().findings.is_empty());
}

#[test]
fn static_findings_of_broken_abis() {
    for (f, code) in [
        (Fixture::MissingAlloc, codes::MISSING_EXPORT),
        (Fixture::MissingHandle, codes::MISSING_EXPORT),
        (
            Fixture::WrongHandleSignature,
            codes::EXPORT_SIGNATURE_MISMATCH,
        ),
        (Fixture::ForeignImport, codes::IMPORT_NOT_ALLOWED),
    ] {
        let report = validate(fixture(f));
        assert!(
            failing_codes(&report, "static").contains(&code),
            "{f:?}: {:?}",
            report.stage("static")
        );
    }
}

#[test]
fn each_sandbox_failure_is_named() {
    for (f, expected) in [
        (Fixture::TrappingInit, &[codes::INIT_FAILED][..]),
        (Fixture::InitNotReady, &[codes::INIT_FAILED]),
        (
            Fixture::InfiniteLoop,
            &[codes::PROBE_OUT_OF_FUEL, codes::PROBE_DEADLINE_EXCEEDED],
        ),
        (Fixture::MemoryBomb, &[codes::PROBE_MEMORY_LIMIT]),
        (Fixture::UnboundedRecursion, &[codes::PROBE_STACK_OVERFLOW]),
        (
            Fixture::ReplyOutsideMemory,
            &[codes::PROBE_REPLY_OUT_OF_BOUNDS],
        ),
    ] {
        let report = validate(fixture(f));
        assert_eq!(
            report.stage("static").unwrap().status,
            StageStatus::Passed,
            "{f:?}"
        );
        let found = failing_codes(&report, "sandbox");
        // The hostile fixtures also refuse (trap on) messages over 60,000 bytes, so the
        // 64 KiB probe traps in `caxton_alloc` before their hostility shows.
        assert!(
            found.iter().any(|c| expected.contains(c)),
            "{f:?}: {found:?}"
        );
        assert!(
            found
                .iter()
                .all(|c| expected.contains(c) || *c == codes::PROBE_TRAPPED),
            "{f:?}: {found:?}"
        );
        assert_eq!(
            report.stage("contracts").unwrap().status,
            StageStatus::Skipped
        );
    }
    // A trap on one probe (the 12-byte messages never come from the probes, so use the
    // empty probe through an agent that traps on empty messages).
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "caxton_alloc") (param i32) (result i32) i32.const 0)
        (func (export "caxton_handle") (param i32 i32) (result i64)
            (if (i32.eqz (local.get 1)) (then unreachable)) i64.const 0))"#;
    let report = validate(ModuleSource::from_wat("trap_on_empty.wat", wat).unwrap());
    let sandbox = report.stage("sandbox").unwrap();
    assert_eq!(failing_codes(&report, "sandbox"), [codes::PROBE_TRAPPED]);
    assert!(
        sandbox.findings[0].message.contains("empty probe"),
        "{}",
        sandbox.findings[0].message
    );
}

/// Replies with `caxton.now_ms()` as 8 bytes, to messages of any size up to 64 KiB.
fn clock_agent() -> ModuleSource {
    let wat = r#"(module
        (import "caxton" "now_ms" (func $now_ms (result i64)))
        (memory (export "memory") 2)
        (func (export "caxton_alloc") (param i32) (result i32) i32.const 1024)
        (func (export "caxton_handle") (param i32 i32) (result i64)
            (i64.store (i32.const 0) (call $now_ms))
            i64.const 8))"#;
    ModuleSource::from_wat("clock.wat", wat).unwrap()
}

#[test]
fn clock_dependent_replies_are_nondeterminism_by_policy() {
    let report = validate(clock_agent());
    let sandbox = report.stage("sandbox").unwrap();
    assert_eq!(sandbox.status, StageStatus::Passed, "a warning by default");
    assert!(
        sandbox
            .findings
            .iter()
            .any(|f| f.code == codes::NONDETERMINISTIC_REPLY && f.severity == Severity::Warning)
    );

    let mut policy = Policy::default();
    policy.sandbox.nondeterminism = Severity::Error;
    let strict = Pipeline::new(policy).unwrap();
    let report = strict.validate(&ValidationInput::new(clock_agent()));
    assert_eq!(
        failing_codes(&report, "sandbox"),
        [codes::NONDETERMINISTIC_REPLY]
    );

    let echo = validate(fixture(Fixture::Echo));
    assert!(echo.accepted && !echo.has_finding(codes::NONDETERMINISTIC_REPLY));
}

#[test]
fn contract_sections_are_checked() {
    let ok = validate(json_agent(Some(PING_CONTRACT), r#"{"kind":"pong"}"#));
    assert!(ok.accepted, "{:?}", ok.stage("contracts"));

    let malformed = validate(json_agent(
        Some(r#"{"accepts":"ping"}"#),
        r#"{"kind":"pong"}"#,
    ));
    assert_eq!(
        failing_codes(&malformed, "contracts"),
        [codes::MALFORMED_CONTRACT]
    );
    assert!(
        malformed.stage("contracts").unwrap().findings[0]
            .offset
            .is_some()
    );

    let absent = validate(json_agent(None, r#"{"kind":"pong"}"#));
    assert!(absent.accepted);
    assert!(
        absent
            .stage("contracts")
            .unwrap()
            .findings
            .iter()
            .any(|f| f.code == codes::MISSING_CONTRACT && f.severity == Severity::Info)
    );
    let mut policy = Policy::default();
    policy.contracts.require_contract = true;
    let strict = Pipeline::new(policy)
        .unwrap()
        .validate(&ValidationInput::new(json_agent(
            None,
            r#"{"kind":"pong"}"#,
        )));
    assert_eq!(
        failing_codes(&strict, "contracts"),
        [codes::MISSING_CONTRACT]
    );
}

fn vectors(json: &str) -> Vec<ContractTest> {
    ContractTest::parse_all(json).expect("vectors")
}

#[test]
fn every_contract_violation_is_reported() {
    let tests = vectors(
        r#"[{"name": "kind", "input": {"kind": "ping"}, "expect": {"kind": "pang"}},
            {"name": "field", "input": {"kind": "ping"}, "expect": {"kind": "pong", "fields": {"v": 2, "w": true}}},
            {"name": "undeclared", "input": {"kind": "other"}, "expect": {"kind": "pong"}},
            {"name": "trap", "input": {"kind": "x"}, "expect": {"kind": "pong"}}]"#,
    );
    assert_eq!(
        serde_json::to_vec(&tests[3].input).unwrap().len(),
        12,
        "the trapping vector is 12 bytes"
    );
    let input = ValidationInput::new(json_agent(
        Some(r#"{"accepts":["ping","x"],"emits":["pang"]}"#),
        r#"{"kind":"pong","v":1}"#,
    ))
    .contract_tests(tests);
    let report = default_pipeline().validate(&input);
    let found = failing_codes(&report, "contracts");
    for code in [
        codes::UNEXPECTED_KIND,
        codes::FIELD_MISMATCH,
        codes::KIND_NOT_EMITTED,
        codes::KIND_NOT_ACCEPTED,
        codes::VECTOR_FAILED,
    ] {
        assert!(found.contains(&code), "{code} missing from {found:?}");
    }
    assert_eq!(
        found
            .iter()
            .filter(|c| **c == codes::FIELD_MISMATCH)
            .count(),
        2,
        "one finding per field"
    );

    let not_json = ValidationInput::new(json_agent(Some(PING_CONTRACT), "pong")).contract_tests(
        vectors(r#"[{"name": "p", "input": {"kind": "ping"}, "expect": {"kind": "pong"}}]"#),
    );
    assert_eq!(
        failing_codes(&default_pipeline().validate(&not_json), "contracts"),
        [codes::REPLY_NOT_JSON]
    );
}

#[test]
fn a_new_version_must_accept_what_the_previous_accepted() {
    let previous = json_agent(
        Some(r#"{"accepts":["ping","status"],"emits":["pong"]}"#),
        r#"{"kind":"pong"}"#,
    );
    let narrowed = ValidationInput::new(json_agent(Some(PING_CONTRACT), r#"{"kind":"pong"}"#))
        .previous(previous.clone());
    let report = default_pipeline().validate(&narrowed);
    assert_eq!(
        failing_codes(&report, "contracts"),
        [codes::ACCEPTS_NARROWED]
    );
    assert!(
        report.stage("contracts").unwrap().findings[0]
            .message
            .contains("`status`")
    );

    let widened = ValidationInput::new(json_agent(
        Some(r#"{"accepts":["ping","status","new"],"emits":["pong"]}"#),
        r#"{"kind":"pong"}"#,
    ))
    .previous(previous);
    assert!(default_pipeline().validate(&widened).accepted);

    let unknown_previous =
        ValidationInput::new(json_agent(Some(PING_CONTRACT), r#"{"kind":"pong"}"#))
            .previous(json_agent(None, "{}"));
    let report = default_pipeline().validate(&unknown_previous);
    assert!(report.accepted);
    assert!(report.has_finding(codes::PREVIOUS_UNREADABLE));
}

#[test]
fn resource_budgets_fail_what_is_over() {
    let mut policy = Policy::default();
    policy.resources.max_fuel_per_message_p99 = Some(1);
    policy.resources.max_peak_memory_bytes = Some(1);
    policy.resources.max_instantiate_us_p50 = Some(0.0);
    policy.resources.max_handle_us_p99 = Some(0.0);
    let report = Pipeline::new(policy)
        .unwrap()
        .validate(&ValidationInput::new(fixture(Fixture::Echo)));
    assert_eq!(
        failing_codes(&report, "resources"),
        [
            codes::FUEL_OVER_BUDGET,
            codes::MEMORY_OVER_BUDGET,
            codes::INSTANTIATE_OVER_BUDGET,
            codes::LATENCY_OVER_BUDGET
        ]
    );
    assert!(
        report.profile.is_some(),
        "the profile is reported even when over budget"
    );
}

#[derive(Debug)]
struct Sleepy;

impl Stage for Sleepy {
    fn name(&self) -> &str {
        "sleepy"
    }

    fn run(&self, cx: &mut StageContext<'_>) -> Vec<Finding> {
        std::thread::sleep(cx.remaining() + std::time::Duration::from_millis(5));
        Vec::new()
    }
}

#[derive(Debug)]
struct Refuse(&'static str);

impl Stage for Refuse {
    fn name(&self) -> &str {
        self.0
    }

    fn run(&self, cx: &mut StageContext<'_>) -> Vec<Finding> {
        vec![Finding::error(
            "house_rule",
            format!("{} is not signed", cx.module().name()),
        )]
    }
}

#[test]
fn stages_are_pluggable() {
    let mut policy = Policy::default();
    policy.stage_time_limits_ms.insert("sleepy".into(), 1);
    let pipeline = Pipeline::builder()
        .policy(policy)
        .stage_before("sandbox", Sleepy)
        .without("resources")
        .build()
        .unwrap();
    assert_eq!(
        pipeline.stage_names(),
        ["static", "sleepy", "sandbox", "contracts"]
    );
    let report = pipeline.validate(&ValidationInput::new(fixture(Fixture::Echo)));
    assert_eq!(failing_codes(&report, "sleepy"), [codes::STAGE_TIME_LIMIT]);
    assert_eq!(
        report.stage("sandbox").unwrap().status,
        StageStatus::Skipped
    );

    let replaced = Pipeline::builder()
        .replace("contracts", Refuse("signature"))
        .build()
        .unwrap();
    assert_eq!(
        replaced.stage_names(),
        ["static", "sandbox", "signature", "resources"]
    );
    let report = replaced.validate(&ValidationInput::new(fixture(Fixture::Echo)));
    assert_eq!(failing_codes(&report, "signature"), ["house_rule"]);
    assert_eq!(
        report.stage("resources").unwrap().status,
        StageStatus::Skipped
    );

    assert!(matches!(
        Pipeline::builder().without("nope").build(),
        Err(PipelineError::UnknownStage { .. })
    ));
    assert!(matches!(
        Pipeline::builder().stage(Refuse("static")).build(),
        Err(PipelineError::DuplicateStage { .. })
    ));
}

#[test]
fn without_the_static_stage_the_compiler_still_names_abi_violations() {
    let pipeline = Pipeline::builder().without("static").build().unwrap();
    let report = pipeline.validate(&ValidationInput::new(fixture(Fixture::MissingHandle)));
    assert_eq!(failing_codes(&report, "sandbox"), [codes::ABI_VIOLATION]);
    assert!(
        report.stage("sandbox").unwrap().findings[0]
            .message
            .contains("caxton_handle")
    );
}
