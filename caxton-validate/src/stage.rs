//! The stage trait and what a stage sees while it runs.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::{AgentId, DeploymentId, ManualClock, Timestamp};
use caxton_wasm::{
    AgentEngine, CachePolicy, CompileError, CompiledAgent, InstanceLimits, InstanceSetup,
};

use crate::codes;
use crate::contract::ContractTest;
use crate::input::ModuleSource;
use crate::policy::Policy;
use crate::report::{Finding, Profile};
use crate::static_stage::{self, ModuleFacts};

/// One stage of the pipeline. The four built-ins implement it; a host adds its own.
///
/// A stage reports what it finds; any finding of severity `Error` fails it, and the stages
/// after a failed one are reported as skipped. A stage should respect
/// [`StageContext::deadline`]; the pipeline also reports a stage that ran past its time
/// limit.
pub trait Stage: Send + Sync + fmt::Debug {
    /// The stage's name in the report, e.g. `static`; unique within a pipeline.
    fn name(&self) -> &str;

    /// Runs the stage on the module in `cx`.
    fn run(&self, cx: &mut StageContext<'_>) -> Vec<Finding>;
}

/// What a stage sees: the module, the policy, the shared compiled module and what earlier
/// stages left behind.
pub struct StageContext<'a> {
    pub(crate) module: &'a ModuleSource,
    pub(crate) previous: Option<&'a ModuleSource>,
    pub(crate) tests: &'a [ContractTest],
    pub(crate) policy: &'a Policy,
    pub(crate) engine: &'a AgentEngine,
    pub(crate) deadline: Instant,
    pub(crate) compiled: Option<Result<Arc<CompiledAgent>, Vec<Finding>>>,
    pub(crate) facts: Option<ModuleFacts>,
    pub(crate) profile: Option<Profile>,
}

impl fmt::Debug for StageContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageContext")
            .field("module", &self.module.name())
            .field("previous", &self.previous.map(ModuleSource::name))
            .field("tests", &self.tests.len())
            .field("compiled", &self.compiled.as_ref().map(Result::is_ok))
            .finish_non_exhaustive()
    }
}

/// The virtual time of every sandboxed instance: fixed, so replies cannot depend on it.
pub const SANDBOX_TIME: Timestamp = Timestamp::from_millis(1_767_225_600_000);

impl<'a> StageContext<'a> {
    /// The module under validation.
    pub fn module(&self) -> &ModuleSource {
        self.module
    }

    /// The version it replaces, when one was given.
    pub fn previous(&self) -> Option<&ModuleSource> {
        self.previous
    }

    /// The host's contract test vectors.
    pub fn contract_tests(&self) -> &[ContractTest] {
        self.tests
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        self.policy
    }

    /// When this stage's time limit runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before [`deadline`](Self::deadline).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// What the `static` stage learned (computed now if it did not run).
    pub fn facts(&mut self) -> &ModuleFacts {
        if self.facts.is_none() {
            let (_, facts) = static_stage::check(
                self.module.bytes(),
                self.policy,
                self.engine.wasm_features(),
            );
            self.facts = Some(facts);
        }
        self.facts.get_or_insert_with(ModuleFacts::default)
    }

    /// The module compiled by the runtime's engine: compiled on first use, then shared by
    /// every stage. A module that does not compile yields the findings that say why.
    pub fn compiled(&mut self) -> Result<Arc<CompiledAgent>, Vec<Finding>> {
        if self.compiled.is_none() {
            // Compile every time: a verdict must not come from a cache of an earlier run.
            let result = self
                .engine
                .compile_with(self.module.bytes(), CachePolicy::Bypass)
                .map_err(compile_findings);
            self.compiled = Some(result);
        }
        match &self.compiled {
            Some(result) => result.clone(),
            None => Err(Vec::new()),
        }
    }

    /// Records the resource profile for the report.
    pub fn set_profile(&mut self, profile: Profile) {
        self.profile = Some(profile);
    }

    /// The profile recorded so far.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// The setup of a sandboxed instance: the sandbox policy's memory, fuel and deadline
    /// (never past the stage's own deadline), empty configuration and a virtual clock
    /// standing still at [`SANDBOX_TIME`].
    pub fn sandbox_setup(&self) -> InstanceSetup {
        self.sandbox_setup_at(SANDBOX_TIME)
    }

    /// [`sandbox_setup`](Self::sandbox_setup) with the virtual clock standing at `time`.
    pub fn sandbox_setup_at(&self, time: Timestamp) -> InstanceSetup {
        let sandbox = &self.policy.sandbox;
        let deadline = Duration::from_millis(sandbox.deadline_ms)
            .min(self.remaining().max(Duration::from_millis(1)));
        let limits = InstanceLimits::builder()
            .memory_bytes(sandbox.memory_limit_bytes)
            .fuel_per_message(Some(sandbox.fuel_per_message))
            .deadline(Some(deadline))
            .max_message_bytes(1 << 20)
            .build();
        InstanceSetup::new(validation_agent(), sandbox_deployment(self.module))
            .limits(limits)
            .clock(Arc::new(ManualClock::new(time)))
    }
}

fn validation_agent() -> AgentId {
    AgentId::new("caxton-validation").unwrap_or_else(|_| unreachable_id())
}

fn sandbox_deployment(module: &ModuleSource) -> DeploymentId {
    DeploymentId::new(format!("validate-{}", module.digest().short()))
        .unwrap_or_else(|_| unreachable_id())
}

/// Both ids above are built from constant text and hex digits, which are always valid.
fn unreachable_id<T>() -> T {
    unreachable!("identifiers built from constants and hex digits are valid")
}

fn compile_findings(err: CompileError) -> Vec<Finding> {
    match err {
        CompileError::Abi { violations, .. } => violations
            .iter()
            .map(|v| Finding::error(codes::ABI_VIOLATION, v.to_string()))
            .collect(),
        other => vec![Finding::error(codes::COMPILE_FAILED, other.to_string())],
    }
}
