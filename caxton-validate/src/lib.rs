//! The four-stage validation pipeline of Caxton: every version passes it before it takes a
//! message.
//!
//! | stage | what it does |
//! |---|---|
//! | `static` | WebAssembly validity with the runtime engine's features, a size limit checked before parsing, the agent ABI's imports and exports with exact signatures, memory and structure limits, no start function or shared memory by default: every finding, with its byte offset |
//! | `sandbox` | a fresh instance under tight limits (small memory, fuel, a wall deadline, a virtual clock, empty configuration) runs `caxton_init` and probe messages (empty, small JSON, 64 KiB, invalid UTF-8); a second instance must reply the same |
//! | `contracts` | the `caxton.contract` section, the host's contract test vectors, the kinds replies may have, and backward compatibility with the previous version |
//! | `resources` | a workload measured for fuel per message, peak memory, instantiation and handle time, against the policy's budgets; the profile goes into the report |
//!
//! Stages are pluggable ([`Stage`], [`PipelineBuilder`]); after a failed stage the later
//! ones are reported as skipped. The module is compiled once and shared by every stage.
//! The [`ValidationReport`] serializes to the JSON of `caxton validate --json`. Every
//! finding has a stable code from [`codes`].
//!
//! # Example: validate a module and read the report
//!
//! ```
//! use caxton_validate::{ModuleSource, Pipeline, Policy, StageStatus, ValidationInput, codes};
//!
//! let agent = ModuleSource::from_wat("echo.wat", r#"
//!     (module
//!       (memory (export "memory") 2)
//!       (func (export "caxton_alloc") (param i32) (result i32) i32.const 1024)
//!       (func (export "caxton_handle") (param i32 i32) (result i64)
//!         (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32))
//!                 (i64.extend_i32_u (local.get 1)))))
//! "#)?;
//! let pipeline = Pipeline::new(Policy::default())?;
//! let report = pipeline.validate(&ValidationInput::new(agent));
//!
//! assert!(report.accepted);
//! assert!(report.stages.iter().all(|s| s.status == StageStatus::Passed));
//! let profile = report.profile.expect("the resources stage ran");
//! assert!(profile.fuel_per_message_p99 > 0);
//!
//! // A module without the ABI's exports fails the static stage; the rest is skipped.
//! let broken = ModuleSource::from_wat("empty.wat", "(module)")?;
//! let report = pipeline.validate(&ValidationInput::new(broken));
//! assert!(!report.accepted);
//! assert!(report.has_finding(codes::MISSING_EXPORT));
//! assert_eq!(report.stage("sandbox").unwrap().status, StageStatus::Skipped);
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod codes;
pub mod contract;
pub mod input;
pub mod pipeline;
pub mod policy;
pub mod report;
pub mod stage;
pub mod stages;
pub mod static_stage;

pub use contract::{Contract, ContractTest};
pub use input::{InputError, ModuleSource};
pub use pipeline::{Pipeline, PipelineBuilder, PipelineError, ValidationInput};
pub use policy::Policy;
pub use report::{Finding, Profile, Severity, StageReport, StageStatus, ValidationReport};
pub use stage::{Stage, StageContext};

/// The WebAssembly features the static stage validates against: those of the runtime's
/// engine ([`caxton_wasm::AGENT_WASM_FEATURES`]).
pub fn engine_features() -> wasmparser::WasmFeatures {
    caxton_wasm::AGENT_WASM_FEATURES
}
