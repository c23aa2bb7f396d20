//! Arbitrary and mutated module bytes through the whole pipeline: it never panics, and its
//! report is always coherent.

use std::sync::OnceLock;

use caxton_core::Digest;
use caxton_validate::policy::Policy;
use caxton_validate::report::{StageStatus, ValidationReport};
use caxton_validate::{ModuleSource, Pipeline, ValidationInput};
use proptest::prelude::*;

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        // Small budgets keep a mutated module that loops from slowing the suite down.
        let mut policy = Policy::default();
        policy.sandbox.fuel_per_message = 1_000_000;
        policy.sandbox.deadline_ms = 200;
        policy.resources.iterations = 2;
        Pipeline::new(policy).expect("pipeline")
    })
}

fn seed_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (memory (export "memory") 2 16)
            (global $count (mut i32) (i32.const 0))
            (data (i32.const 16) "{\"kind\":\"pong\"}")
            (func (export "caxton_init") (result i32) i32.const 0)
            (func (export "caxton_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "caxton_handle") (param i32 i32) (result i64)
                (global.set $count (i32.add (global.get $count) (i32.const 1)))
                (if (i32.gt_u (local.get 1) (i32.const 100000)) (then unreachable))
                i64.const 0x100000000f)
            (@custom "caxton.contract" "{\"accepts\":[\"ping\"],\"emits\":[\"pong\"]}"))"#,
    )
    .expect("seed parses")
}

fn check_coherent(bytes: &[u8], report: &ValidationReport) -> Result<(), TestCaseError> {
    prop_assert_eq!(&report.digest, &Digest::of(bytes).to_string());
    prop_assert_eq!(report.stages.len(), 4);
    let first_failed = report
        .stages
        .iter()
        .position(|s| s.status == StageStatus::Failed);
    for (i, stage) in report.stages.iter().enumerate() {
        match first_failed {
            Some(f) if i > f => prop_assert_eq!(stage.status, StageStatus::Skipped),
            Some(f) if i == f => prop_assert_eq!(stage.status, StageStatus::Failed),
            _ => prop_assert_eq!(stage.status, StageStatus::Passed),
        }
        for finding in &stage.findings {
            prop_assert!(
                !finding.code.is_empty()
                    && finding
                        .code
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            prop_assert!(!finding.message.is_empty());
            if let Some(offset) = finding.offset {
                prop_assert!(
                    offset <= bytes.len() as u64,
                    "offset {} past the end",
                    offset
                );
            }
        }
    }
    prop_assert_eq!(report.accepted, first_failed.is_none());
    let resources_ran = report.stages[3].status != StageStatus::Skipped;
    prop_assert_eq!(report.profile.is_some(), resources_ran);
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip { at, xor } => {
                if !bytes.is_empty() {
                    bytes[at % len] ^= xor;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
            Mutation::Insert { at, bytes: new } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Remove { at, len: n } => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    let end = (at + n).min(bytes.len());
                    bytes.drain(at..end);
                }
            }
        }
    }
    bytes
}

#[test]
fn the_unmutated_seed_is_accepted() {
    let bytes = seed_module();
    let report = pipeline().validate(&ValidationInput::new(ModuleSource::from_bytes(
        "seed",
        bytes.clone(),
    )));
    assert!(
        report.accepted,
        "{:#?}",
        report.findings().collect::<Vec<_>>()
    );
    check_coherent(&bytes, &report).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_a_coherent_report(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let report = pipeline().validate(&ValidationInput::new(ModuleSource::from_bytes("arbitrary", bytes.clone())));
        check_coherent(&bytes, &report)?;
    }

    #[test]
    fn mutated_modules_get_a_coherent_report(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let bytes = mutate(seed_module(), &mutations);
        let report = pipeline().validate(&ValidationInput::new(ModuleSource::from_bytes("mutated", bytes.clone())));
        check_coherent(&bytes, &report)?;
    }
}
