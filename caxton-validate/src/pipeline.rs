//! The pipeline: stages in order over one module, compiled once.

use std::time::Instant;

use caxton_wasm::{AgentEngine, EngineConfig, EngineError};

use crate::codes;
use crate::contract::ContractTest;
use crate::input::ModuleSource;
use crate::policy::Policy;
use crate::report::{Finding, Severity, StageReport, StageStatus, ValidationReport, millis};
use crate::stage::{Stage, StageContext};
use crate::stages::{ContractsStage, ResourcesStage, SandboxStage, StaticStage};

/// What to validate: the module, optionally the version it replaces, and contract tests.
#[derive(Debug, Clone)]
pub struct ValidationInput {
    module: ModuleSource,
    previous: Option<ModuleSource>,
    contract_tests: Vec<ContractTest>,
}

impl ValidationInput {
    /// Validates `module` alone.
    pub fn new(module: ModuleSource) -> Self {
        ValidationInput {
            module,
            previous: None,
            contract_tests: Vec::new(),
        }
    }

    /// The version this one replaces: it must accept every kind the previous accepted.
    pub fn previous(mut self, previous: ModuleSource) -> Self {
        self.previous = Some(previous);
        self
    }

    /// Contract test vectors to run.
    pub fn contract_tests(mut self, tests: Vec<ContractTest>) -> Self {
        self.contract_tests = tests;
        self
    }

    /// The module under validation.
    pub fn module(&self) -> &ModuleSource {
        &self.module
    }
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The validation engine could not be created.
    #[error("the validation engine could not be created: {0}")]
    Engine(#[from] EngineError),
    /// The engine given does not meter fuel, which the sandbox and resources stages need.
    #[error("the validation engine must meter fuel (EngineConfig::fuel_metering(true))")]
    NoFuelMetering,
    /// Two stages have the same name.
    #[error("two stages are named `{name}`; stage names must be unique")]
    DuplicateStage {
        /// The name.
        name: String,
    },
    /// A stage to replace or remove is not in the pipeline.
    #[error("there is no stage named `{name}` to {action}")]
    UnknownStage {
        /// The name.
        name: String,
        /// `replace`, `remove` or `insert before`.
        action: &'static str,
    },
}

/// The validation pipeline: `static`, `sandbox`, `contracts`, `resources` by default.
///
/// The module is compiled once, by an engine configured like the runtime's (same
/// WebAssembly features, fuel metering on), and shared by every stage. After a failed stage
/// the later ones are reported as skipped.
#[derive(Debug)]
pub struct Pipeline {
    engine: AgentEngine,
    policy: Policy,
    stages: Vec<Box<dyn Stage>>,
}

/// Builds a [`Pipeline`]: set the policy or engine, add, replace or remove stages.
#[derive(Debug)]
pub struct PipelineBuilder {
    engine: Option<AgentEngine>,
    policy: Policy,
    stages: Vec<Box<dyn Stage>>,
    error: Option<PipelineError>,
}

impl PipelineBuilder {
    /// The policy (default: [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The engine to compile and run with; it must meter fuel. By default the pipeline
    /// makes its own (on-demand allocation, fuel metering on).
    pub fn engine(mut self, engine: AgentEngine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Adds a stage after the others.
    pub fn stage(mut self, stage: impl Stage + 'static) -> Self {
        self.stages.push(Box::new(stage));
        self
    }

    /// Adds a stage just before the one called `before`.
    pub fn stage_before(mut self, before: &str, stage: impl Stage + 'static) -> Self {
        if let Some(index) = self.position(before, "insert before") {
            self.stages.insert(index, Box::new(stage));
        }
        self
    }

    /// Replaces the stage called `name`.
    pub fn replace(mut self, name: &str, stage: impl Stage + 'static) -> Self {
        if let Some(index) = self.position(name, "replace") {
            self.stages[index] = Box::new(stage);
        }
        self
    }

    /// Removes the stage called `name`.
    pub fn without(mut self, name: &str) -> Self {
        if let Some(index) = self.position(name, "remove") {
            self.stages.remove(index);
        }
        self
    }

    fn position(&mut self, name: &str, action: &'static str) -> Option<usize> {
        let found = self.stages.iter().position(|s| s.name() == name);
        if found.is_none() && self.error.is_none() {
            self.error = Some(PipelineError::UnknownStage {
                name: name.to_owned(),
                action,
            });
        }
        found
    }

    /// The pipeline, or the first mistake made while building it.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        for (i, stage) in self.stages.iter().enumerate() {
            if self.stages[..i].iter().any(|s| s.name() == stage.name()) {
                return Err(PipelineError::DuplicateStage {
                    name: stage.name().to_owned(),
                });
            }
        }
        let engine = match self.engine {
            Some(engine) if !engine.fuel_metering() => return Err(PipelineError::NoFuelMetering),
            Some(engine) => engine,
            None => AgentEngine::new(EngineConfig::default().on_demand().fuel_metering(true))?,
        };
        Ok(Pipeline {
            engine,
            policy: self.policy,
            stages: self.stages,
        })
    }
}

impl Pipeline {
    /// A builder starting from the four built-in stages and the default policy.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder {
            engine: None,
            policy: Policy::default(),
            stages: vec![
                Box::new(StaticStage),
                Box::new(SandboxStage),
                Box::new(ContractsStage),
                Box::new(ResourcesStage),
            ],
            error: None,
        }
    }

    /// The four built-in stages under `policy`.
    pub fn new(policy: Policy) -> Result<Self, PipelineError> {
        Pipeline::builder().policy(policy).build()
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The engine modules are compiled and run with.
    pub fn engine(&self) -> &AgentEngine {
        &self.engine
    }

    /// The stages' names, in order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Runs every stage on `input` and reports the verdict. Never panics on bad modules:
    /// everything wrong with the module is a finding.
    pub fn validate(&self, input: &ValidationInput) -> ValidationReport {
        let started = Instant::now();
        let mut cx = StageContext {
            module: &input.module,
            previous: input.previous.as_ref(),
            tests: &input.contract_tests,
            policy: &self.policy,
            engine: &self.engine,
            deadline: started,
            compiled: None,
            facts: None,
            profile: None,
        };
        let mut stages = Vec::with_capacity(self.stages.len());
        let mut failed = false;
        for stage in &self.stages {
            let name = stage.name();
            if failed {
                stages.push(StageReport {
                    stage: name.to_owned(),
                    status: StageStatus::Skipped,
                    duration_ms: 0.0,
                    findings: Vec::new(),
                });
                continue;
            }
            let limit = self.policy.stage_time_limit(name);
            let stage_started = Instant::now();
            cx.deadline = stage_started + limit;
            let mut findings = {
                let _span = stage_span(name).entered();
                stage.run(&mut cx)
            };
            let elapsed = stage_started.elapsed();
            if elapsed > limit {
                findings.push(Finding::error(
                    codes::STAGE_TIME_LIMIT,
                    format!(
                        "the stage took {:.1} ms; its time limit is {} ms",
                        millis(elapsed),
                        limit.as_millis()
                    ),
                ));
            }
            metrics::histogram!("caxton_deployment_validation_time_seconds", "stage" => name.to_owned())
                .record(elapsed.as_secs_f64());
            let status = if findings.iter().any(|f| f.severity == Severity::Error) {
                failed = true;
                StageStatus::Failed
            } else {
                StageStatus::Passed
            };
            tracing::debug!(target: "caxton::validate", stage = name, ?status, findings = findings.len(), "stage finished");
            stages.push(StageReport {
                stage: name.to_owned(),
                status,
                duration_ms: millis(elapsed),
                findings,
            });
        }
        let profile = cx.profile;
        ValidationReport {
            module: input.module.name().to_owned(),
            digest: input.module.digest().to_string(),
            accepted: !failed,
            duration_ms: millis(started.elapsed()),
            stages,
            profile,
        }
    }
}

/// The span of a stage: `validation.<stage>` for the built-ins; a host's own stage runs in
/// `validation.custom` with its name as a field.
fn stage_span(name: &str) -> tracing::Span {
    match name {
        "static" => tracing::info_span!("validation.static"),
        "sandbox" => tracing::info_span!("validation.sandbox"),
        "contracts" => tracing::info_span!("validation.contracts"),
        "resources" => tracing::info_span!("validation.resources"),
        other => tracing::info_span!("validation.custom", stage = other),
    }
}
