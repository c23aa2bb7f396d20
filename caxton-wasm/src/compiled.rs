//! A compiled agent: the module, checked against the ABI and pre-linked, ready to
//! instantiate any number of times.

use std::sync::Arc;

use caxton_core::{AgentError, Digest};
use wasmtime::{InstancePre, Module, ModuleExport};

use crate::abi;
use crate::engine::{CompileError, EngineCore};
use crate::host::HostState;
use crate::instance::{AgentInstance, InstanceSetup};

/// Where the ABI exports sit in the module, looked up once so instantiation does no string
/// lookups.
#[derive(Clone)]
pub(crate) struct ExportIndices {
    pub(crate) memory: ModuleExport,
    pub(crate) alloc: ModuleExport,
    pub(crate) handle: ModuleExport,
    pub(crate) init: Option<ModuleExport>,
}

/// A module that passed the ABI check, compiled and linked to the host functions once.
/// Share it (`Arc`) between every instance of it; compiling is never on the message path.
pub struct CompiledAgent {
    pub(crate) core: Arc<EngineCore>,
    module: Module,
    pub(crate) pre: InstancePre<HostState>,
    digest: Digest,
    pub(crate) exports: ExportIndices,
}

impl std::fmt::Debug for CompiledAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledAgent")
            .field("digest", &self.digest)
            .field("has_init", &self.exports.init.is_some())
            .finish_non_exhaustive()
    }
}

impl CompiledAgent {
    /// Links a module that passed [`abi::check`].
    pub(crate) fn new(
        core: Arc<EngineCore>,
        module: Module,
        digest: Digest,
    ) -> Result<Self, CompileError> {
        let index = |name: &'static str| {
            module
                .get_export_index(name)
                .ok_or_else(|| CompileError::Abi {
                    digest,
                    violations: vec![abi::AbiViolation::MissingExport {
                        name,
                        expected: "an export".to_owned(),
                    }],
                })
        };
        let exports = ExportIndices {
            memory: index(abi::EXPORT_MEMORY)?,
            alloc: index(abi::EXPORT_ALLOC)?,
            handle: index(abi::EXPORT_HANDLE)?,
            init: module.get_export_index(abi::EXPORT_INIT),
        };
        let pre = core
            .linker
            .instantiate_pre(&module)
            .map_err(|err| CompileError::Link {
                digest,
                message: format!("{err:#}"),
            })?;
        Ok(CompiledAgent {
            core,
            module,
            pre,
            digest,
            exports,
        })
    }

    /// The SHA-256 of the module bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The compiled wasmtime module.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Whether the agent exports `caxton_init`.
    pub fn has_init(&self) -> bool {
        self.exports.init.is_some()
    }

    /// Starts an instance and runs its `caxton_init`; see [`AgentInstance::new`].
    pub fn instantiate(
        self: &Arc<Self>,
        setup: &InstanceSetup,
    ) -> Result<AgentInstance, AgentError> {
        AgentInstance::new(self.clone(), setup)
    }

    /// Whether the engine meters fuel, so instances may have a fuel budget.
    pub fn fuel_metering(&self) -> bool {
        self.core.fuel_metering
    }
}
