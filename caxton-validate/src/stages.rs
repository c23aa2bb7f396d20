//! The four built-in stages.

use caxton_core::AgentError;
use caxton_core::metrics::quantile;
use caxton_wasm::{AgentInstance, CompiledAgent};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::Timestamp;

use crate::codes;
use crate::contract::{Contract, reply_kind};
use crate::report::{Finding, Profile};
use crate::stage::{SANDBOX_TIME, Stage, StageContext};
use crate::static_stage;

/// The `static` stage: validity with the engine's feature set, the import and export ABI,
/// memory and structure limits; every finding, with its byte offset.
#[derive(Debug, Clone, Copy, Default)]
pub struct StaticStage;

impl Stage for StaticStage {
    fn name(&self) -> &str {
        "static"
    }

    fn run(&self, cx: &mut StageContext<'_>) -> Vec<Finding> {
        let (findings, facts) =
            static_stage::check(cx.module.bytes(), cx.policy, cx.engine.wasm_features());
        cx.facts = Some(facts);
        findings
    }
}

/// One probe message of the sandbox.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Its name in findings.
    pub name: &'static str,
    /// The bytes sent.
    pub message: Vec<u8>,
}

/// The probes every agent must survive: an empty message, a small JSON message, a 64 KiB
/// message and bytes that are not UTF-8.
pub fn probes() -> Vec<Probe> {
    let filler = "x".repeat(64 * 1024 - 32);
    vec![
        Probe {
            name: "empty",
            message: Vec::new(),
        },
        Probe {
            name: "small JSON",
            message: br#"{"kind":"ping","id":"probe-1"}"#.to_vec(),
        },
        Probe {
            name: "64 KiB",
            message: format!(r#"{{"kind":"probe","data":"{filler}"}}"#).into_bytes(),
        },
        Probe {
            name: "invalid UTF-8",
            message: vec![0xff, 0xfe, b'{', 0xc3, 0x28, b'}', 0x80],
        },
    ]
}

fn probe_code(err: &AgentError) -> &'static str {
    match err {
        AgentError::OutOfFuel { .. } => codes::PROBE_OUT_OF_FUEL,
        AgentError::DeadlineExceeded { .. } => codes::PROBE_DEADLINE_EXCEEDED,
        AgentError::MemoryLimit { .. } => codes::PROBE_MEMORY_LIMIT,
        AgentError::StackOverflow { .. } => codes::PROBE_STACK_OVERFLOW,
        AgentError::ReplyOutOfBounds { .. } => codes::PROBE_REPLY_OUT_OF_BOUNDS,
        _ => codes::PROBE_TRAPPED,
    }
}

fn start(compiled: &Arc<CompiledAgent>, cx: &StageContext<'_>) -> Result<AgentInstance, Finding> {
    start_at(compiled, cx, SANDBOX_TIME)
}

fn start_at(
    compiled: &Arc<CompiledAgent>,
    cx: &StageContext<'_>,
    time: Timestamp,
) -> Result<AgentInstance, Finding> {
    compiled
        .instantiate(&cx.sandbox_setup_at(time))
        .map_err(|err| {
            let code = match err {
                AgentError::MemoryLimit { .. } => codes::PROBE_MEMORY_LIMIT,
                _ => codes::INIT_FAILED,
            };
            Finding::error(code, format!("a sandboxed instance did not start: {err}"))
        })
}

/// The `sandbox` stage: a fresh instance under tight limits (small memory, fuel, a wall
/// deadline, a virtual clock, empty configuration) runs `caxton_init` and every probe; a
/// trap or a limit fails the stage and is named. A second fresh instance, its virtual clock
/// an hour later, must give the same replies to the same messages: a reply that depends on
/// the clock or on anything but the messages is reported (a warning by default, see
/// [`SandboxPolicy::nondeterminism`](crate::policy::SandboxPolicy::nondeterminism)).
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxStage;

impl Stage for SandboxStage {
    fn name(&self) -> &str {
        "sandbox"
    }

    fn run(&self, cx: &mut StageContext<'_>) -> Vec<Finding> {
        let compiled = match cx.compiled() {
            Ok(compiled) => compiled,
            Err(findings) => return findings,
        };
        let mut findings = Vec::new();
        let probes = probes();
        let mut first_replies = Vec::new();
        let mut instance = match start(&compiled, cx) {
            Ok(instance) => instance,
            Err(finding) => return vec![finding],
        };
        for probe in &probes {
            if instance.is_failed() {
                // A failed instance is never reused; the next probe gets a fresh one.
                instance = match start(&compiled, cx) {
                    Ok(fresh) => fresh,
                    Err(finding) => {
                        findings.push(finding);
                        return findings;
                    }
                };
            }
            match instance.handle(&probe.message) {
                Ok(reply) => first_replies.push(Some(reply.bytes)),
                Err(err) => {
                    findings.push(Finding::error(
                        probe_code(&err),
                        format!("the {} probe failed: {err}", probe.name),
                    ));
                    first_replies.push(None);
                }
            }
        }
        if findings.is_empty() {
            findings.extend(determinism(&compiled, cx, &probes, &first_replies));
        }
        findings
    }
}

fn determinism(
    compiled: &Arc<CompiledAgent>,
    cx: &StageContext<'_>,
    probes: &[Probe],
    first: &[Option<Vec<u8>>],
) -> Option<Finding> {
    let severity = cx.policy.sandbox.nondeterminism;
    let mut second = match start_at(compiled, cx, SANDBOX_TIME + Duration::from_secs(3_600)) {
        Ok(instance) => instance,
        Err(finding) => return Some(finding),
    };
    for (probe, expected) in probes.iter().zip(first) {
        let got = second.handle(&probe.message).ok().map(|r| r.bytes);
        if &got != expected {
            let message = format!(
                "two fresh instances replied differently to the {} probe (the same messages in the same order; only their virtual clocks differed, by an hour)",
                probe.name
            );
            return Some(Finding {
                severity,
                ..Finding::error(codes::NONDETERMINISTIC_REPLY, message)
            });
        }
    }
    None
}

/// The `contracts` stage: the `caxton.contract` section, the host's test vectors, the
/// kinds replies may have, and backward compatibility with the previous version.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContractsStage;

impl Stage for ContractsStage {
    fn name(&self) -> &str {
        "contracts"
    }

    fn run(&self, cx: &mut StageContext<'_>) -> Vec<Finding> {
        let mut findings = Vec::new();
        let sections = cx.facts().contract_sections.clone();
        let contract = match sections.as_slice() {
            [] => {
                if cx.policy.contracts.require_contract {
                    findings.push(Finding::error(
                        codes::MISSING_CONTRACT,
                        "the module has no `caxton.contract` section and the policy requires one",
                    ));
                } else {
                    findings.push(Finding::info(
                        codes::MISSING_CONTRACT,
                        "the module has no `caxton.contract` section: reply kinds are not checked",
                    ));
                }
                None
            }
            [(offset, bytes)] => match Contract::from_section(bytes) {
                Ok(contract) => Some(contract),
                Err(why) => {
                    findings.push(
                        Finding::error(
                            codes::MALFORMED_CONTRACT,
                            format!("the `caxton.contract` section is malformed: {why}"),
                        )
                        .at(*offset),
                    );
                    None
                }
            },
            [_, (offset, _), ..] => {
                findings.push(
                    Finding::error(
                        codes::MALFORMED_CONTRACT,
                        "the module has more than one `caxton.contract` section",
                    )
                    .at(*offset),
                );
                None
            }
        };
        if let Some(previous) = cx.previous {
            findings.extend(compare_with_previous(previous, contract.as_ref(), cx));
        }
        if !cx.tests.is_empty() {
            match cx.compiled() {
                Ok(compiled) => findings.extend(run_vectors(&compiled, cx, contract.as_ref())),
                Err(mut compile) => findings.append(&mut compile),
            }
        }
        findings
    }
}

fn compare_with_previous(
    previous: &crate::input::ModuleSource,
    contract: Option<&Contract>,
    cx: &StageContext<'_>,
) -> Vec<Finding> {
    let (_, facts) = static_stage::check(previous.bytes(), cx.policy, cx.engine.wasm_features());
    let name = previous.name();
    let previous_contract = match facts.contract_sections.as_slice() {
        [] => {
            return vec![Finding::info(
                codes::PREVIOUS_UNREADABLE,
                format!(
                    "the previous version {name} declares no contract; compatibility is not checked"
                ),
            )];
        }
        [(_, bytes)] => match Contract::from_section(bytes) {
            Ok(c) => c,
            Err(why) => {
                return vec![Finding::warning(
                    codes::PREVIOUS_UNREADABLE,
                    format!(
                        "the contract of the previous version {name} is malformed ({why}); compatibility is not checked"
                    ),
                )];
            }
        },
        _ => {
            return vec![Finding::warning(
                codes::PREVIOUS_UNREADABLE,
                format!(
                    "the previous version {name} has several contract sections; compatibility is not checked"
                ),
            )];
        }
    };
    let accepted_now = contract.map(|c| &c.accepts);
    let dropped: Vec<&str> = previous_contract
        .accepts
        .iter()
        .filter(|kind| accepted_now.is_none_or(|now| !now.contains(*kind)))
        .map(String::as_str)
        .collect();
    if dropped.is_empty() {
        return Vec::new();
    }
    vec![Finding::error(
        codes::ACCEPTS_NARROWED,
        format!(
            "the previous version {name} accepts {}, which this version does not: sessions carried across versions would break",
            dropped
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )]
}

fn run_vectors(
    compiled: &Arc<CompiledAgent>,
    cx: &StageContext<'_>,
    contract: Option<&Contract>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for test in cx.tests {
        let name = &test.name;
        if let (Some(contract), Some(kind)) = (contract, test.input_kind())
            && !contract.accepts.contains(kind)
        {
            findings.push(Finding::error(
                codes::KIND_NOT_ACCEPTED,
                format!("test `{name}` sends kind `{kind}`, which the contract does not accept"),
            ));
        }
        // Each vector gets a fresh instance, as a message without a session would.
        let reply = start(compiled, cx)
            .map_err(|f| f.message)
            .and_then(|mut instance| {
                instance
                    .handle(&test.message_bytes())
                    .map(|r| r.bytes)
                    .map_err(|e| e.to_string())
            });
        let reply = match reply {
            Ok(reply) => reply,
            Err(why) => {
                findings.push(Finding::error(
                    codes::VECTOR_FAILED,
                    format!("test `{name}` got no reply: {why}"),
                ));
                continue;
            }
        };
        let (kind, object) = match reply_kind(&reply) {
            Ok(parsed) => parsed,
            Err(why) => {
                findings.push(Finding::error(
                    codes::REPLY_NOT_JSON,
                    format!("test `{name}`: {why}"),
                ));
                continue;
            }
        };
        if kind != test.expect.kind {
            findings.push(Finding::error(
                codes::UNEXPECTED_KIND,
                format!(
                    "test `{name}` expected a reply of kind `{}`, got `{kind}`",
                    test.expect.kind
                ),
            ));
        }
        for (field, want) in &test.expect.fields {
            match object.get(field) {
                Some(got) if got == want => {}
                Some(got) => findings.push(Finding::error(
                    codes::FIELD_MISMATCH,
                    format!("test `{name}`: field `{field}` is {got}, expected {want}"),
                )),
                None => findings.push(Finding::error(
                    codes::FIELD_MISMATCH,
                    format!("test `{name}`: the reply has no field `{field}` (expected {want})"),
                )),
            }
        }
        if let Some(contract) = contract
            && !contract.emits.contains(&kind)
        {
            findings.push(Finding::error(
                codes::KIND_NOT_EMITTED,
                format!(
                    "test `{name}` got a reply of kind `{kind}`, which the contract does not emit"
                ),
            ));
        }
    }
    findings
}

/// The `resources` stage: runs a workload (the test vectors, or the probes) on fresh
/// instances, measures fuel, peak memory, instantiation and handle time, compares them with
/// the policy's budgets, and puts the profile in the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResourcesStage;

impl Stage for ResourcesStage {
    fn name(&self) -> &str {
        "resources"
    }

    fn run(&self, cx: &mut StageContext<'_>) -> Vec<Finding> {
        let compiled = match cx.compiled() {
            Ok(compiled) => compiled,
            Err(findings) => return findings,
        };
        let workload: Vec<(String, Vec<u8>)> = if cx.tests.is_empty() {
            probes()
                .into_iter()
                .map(|p| (format!("the {} probe", p.name), p.message))
                .collect()
        } else {
            cx.tests
                .iter()
                .map(|t| (format!("test `{}`", t.name), t.message_bytes()))
                .collect()
        };
        let iterations = cx.policy.resources.iterations.max(1);
        let mut fuel = Vec::new();
        let mut handle_us = Vec::new();
        let mut instantiate_us = Vec::new();
        let mut peak_memory = 0u64;
        for _ in 0..iterations {
            if Instant::now() >= cx.deadline {
                break;
            }
            let mut instance = match start(&compiled, cx) {
                Ok(instance) => instance,
                Err(finding) => {
                    return vec![Finding {
                        code: codes::WORKLOAD_FAILED.to_owned(),
                        ..finding
                    }];
                }
            };
            instantiate_us.push(instance.instantiate_time().as_secs_f64() * 1e6);
            peak_memory = peak_memory.max(instance.memory_bytes());
            for (what, message) in &workload {
                if instance.is_failed() {
                    instance = match start(&compiled, cx) {
                        Ok(fresh) => fresh,
                        Err(finding) => {
                            return vec![Finding {
                                code: codes::WORKLOAD_FAILED.to_owned(),
                                ..finding
                            }];
                        }
                    };
                }
                match instance.handle(message) {
                    Ok(reply) => {
                        fuel.push(reply.stats.fuel_consumed.unwrap_or(0) as f64);
                        handle_us.push(reply.stats.wall_time.as_secs_f64() * 1e6);
                        peak_memory = peak_memory.max(reply.stats.memory_bytes);
                    }
                    Err(err) => {
                        return vec![Finding::error(
                            codes::WORKLOAD_FAILED,
                            format!("{what} failed while profiling: {err}"),
                        )];
                    }
                }
            }
        }
        let q = |samples: &[f64], p: f64| quantile(samples, p).unwrap_or(0.0);
        let profile = Profile {
            fuel_per_message_p50: q(&fuel, 0.5) as u64,
            fuel_per_message_p99: q(&fuel, 0.99) as u64,
            peak_memory_bytes: peak_memory,
            instantiate_us_p50: round2(q(&instantiate_us, 0.5)),
            handle_us_p50: round2(q(&handle_us, 0.5)),
            handle_us_p99: round2(q(&handle_us, 0.99)),
        };
        cx.set_profile(profile);
        budgets(&profile, cx)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn budgets(profile: &Profile, cx: &StageContext<'_>) -> Vec<Finding> {
    let budget = &cx.policy.resources;
    let mut findings = Vec::new();
    if let Some(max) = budget.max_fuel_per_message_p99
        && profile.fuel_per_message_p99 > max
    {
        findings.push(Finding::error(
            codes::FUEL_OVER_BUDGET,
            format!(
                "fuel per message p99 is {}; the budget is {max}",
                profile.fuel_per_message_p99
            ),
        ));
    }
    if let Some(max) = budget.max_peak_memory_bytes
        && profile.peak_memory_bytes > max
    {
        findings.push(Finding::error(
            codes::MEMORY_OVER_BUDGET,
            format!(
                "peak linear memory is {} bytes; the budget is {max}",
                profile.peak_memory_bytes
            ),
        ));
    }
    if let Some(max) = budget.max_instantiate_us_p50
        && profile.instantiate_us_p50 > max
    {
        findings.push(Finding::error(
            codes::INSTANTIATE_OVER_BUDGET,
            format!(
                "instantiation p50 is {} µs; the budget is {max} µs",
                profile.instantiate_us_p50
            ),
        ));
    }
    if let Some(max) = budget.max_handle_us_p99
        && profile.handle_us_p99 > max
    {
        findings.push(Finding::error(
            codes::LATENCY_OVER_BUDGET,
            format!(
                "handle time p99 is {} µs; the budget is {max} µs",
                profile.handle_us_p99
            ),
        ));
    }
    findings
}
