//! What a module is allowed to be and to cost. Safe defaults; loadable from a file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::report::Severity;

/// The validation policy. Every field has a safe default, so a policy file names only what
/// it changes; an unknown field is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Modules larger than this are refused before parsing.
    pub max_module_bytes: u64,
    /// Imports allowed beyond the `caxton` ABI imports, each with its exact signature.
    pub extra_imports: Vec<ImportRule>,
    /// Limits on the declared linear memories.
    pub memory: MemoryPolicy,
    /// Limits on the module's structure.
    pub limits: StructureLimits,
    /// Whether a start function is allowed (it runs before the host can set limits).
    pub allow_start_function: bool,
    /// Whether shared memories (threads) are allowed.
    pub allow_shared_memory: bool,
    /// The `sandbox` stage.
    pub sandbox: SandboxPolicy,
    /// The `contracts` stage.
    pub contracts: ContractPolicy,
    /// The `resources` stage.
    pub resources: ResourcePolicy,
    /// Time limit of every stage, in milliseconds, unless `stage_time_limits_ms` names it.
    pub stage_time_limit_ms: u64,
    /// Time limits of particular stages, in milliseconds, by stage name.
    pub stage_time_limits_ms: BTreeMap<String, u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_module_bytes: 32 * 1024 * 1024,
            extra_imports: Vec::new(),
            memory: MemoryPolicy::default(),
            limits: StructureLimits::default(),
            allow_start_function: false,
            allow_shared_memory: false,
            sandbox: SandboxPolicy::default(),
            contracts: ContractPolicy::default(),
            resources: ResourcePolicy::default(),
            stage_time_limit_ms: 10_000,
            stage_time_limits_ms: BTreeMap::new(),
        }
    }
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("policy file {path} is not a valid policy: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong and where.
        message: String,
    },
}

impl Policy {
    /// Reads a policy from a JSON or YAML file (YAML when the name ends in `.yaml` or
    /// `.yml`, JSON otherwise).
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        let yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        let parsed = if yaml {
            Policy::from_yaml(&text)
        } else {
            Policy::from_json(&text)
        };
        parsed.map_err(|message| PolicyError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses a JSON policy; the error names the field and the line and column.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Parses a YAML policy; the error names the field and where it is.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// The time limit of the stage called `stage`.
    pub fn stage_time_limit(&self, stage: &str) -> Duration {
        Duration::from_millis(
            self.stage_time_limits_ms
                .get(stage)
                .copied()
                .unwrap_or(self.stage_time_limit_ms),
        )
    }
}

/// A WebAssembly value type, as written in policy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 128-bit vector.
    V128,
    /// Nullable function reference.
    Funcref,
    /// Nullable external reference.
    Externref,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::I32 => "i32",
            ValueType::I64 => "i64",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
            ValueType::V128 => "v128",
            ValueType::Funcref => "funcref",
            ValueType::Externref => "externref",
        })
    }
}

/// One allowed function import with its exact signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRule {
    /// The module name.
    pub module: String,
    /// The field name.
    pub name: String,
    /// Parameter types.
    #[serde(default)]
    pub params: Vec<ValueType>,
    /// Result types.
    #[serde(default)]
    pub results: Vec<ValueType>,
}

impl ImportRule {
    /// A rule for a function import.
    pub fn function(module: &str, name: &str, params: &[ValueType], results: &[ValueType]) -> Self {
        ImportRule {
            module: module.to_owned(),
            name: name.to_owned(),
            params: params.to_vec(),
            results: results.to_vec(),
        }
    }

    /// The imports of the agent ABI v1: `caxton.log`, `caxton.config` and `caxton.now_ms`.
    pub fn abi_v1() -> Vec<ImportRule> {
        use ValueType::{I32, I64};
        vec![
            ImportRule::function("caxton", "log", &[I32, I32, I32], &[]),
            ImportRule::function("caxton", "config", &[I32, I32, I32, I32], &[I32]),
            ImportRule::function("caxton", "now_ms", &[], &[I64]),
        ]
    }
}

/// Limits on declared linear memories, in 64 KiB pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryPolicy {
    /// Largest initial size.
    pub max_initial_pages: u64,
    /// Largest declared maximum.
    pub max_maximum_pages: u64,
    /// Whether every memory must declare a maximum.
    pub require_maximum: bool,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        // 16 MiB initial, 1 GiB declared maximum: the runtime's own limit still applies.
        MemoryPolicy {
            max_initial_pages: 256,
            max_maximum_pages: 16_384,
            require_maximum: false,
        }
    }
}

/// Limits on the module's structure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StructureLimits {
    /// Functions, imported and defined.
    pub max_functions: u64,
    /// Tables.
    pub max_tables: u64,
    /// Initial elements of any one table.
    pub max_table_elements: u64,
    /// Globals.
    pub max_globals: u64,
    /// Data segments.
    pub max_data_segments: u64,
    /// Bytes of all data segments together.
    pub max_data_bytes: u64,
}

impl Default for StructureLimits {
    fn default() -> Self {
        StructureLimits {
            max_functions: 100_000,
            max_tables: 16,
            max_table_elements: 1_000_000,
            max_globals: 10_000,
            max_data_segments: 100_000,
            max_data_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The tight limits of the `sandbox` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxPolicy {
    /// Linear memory limit of the sandbox instance, in bytes.
    pub memory_limit_bytes: u64,
    /// Fuel per message.
    pub fuel_per_message: u64,
    /// Wall-clock deadline per message, in milliseconds.
    pub deadline_ms: u64,
    /// What a reply that differs between two fresh instances is.
    pub nondeterminism: Severity,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        SandboxPolicy {
            memory_limit_bytes: 64 * 1024 * 1024,
            fuel_per_message: 100_000_000,
            deadline_ms: 1_000,
            nondeterminism: Severity::Warning,
        }
    }
}

/// The `contracts` stage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContractPolicy {
    /// Whether a module without a `caxton.contract` section fails.
    pub require_contract: bool,
}

/// The workload and budgets of the `resources` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcePolicy {
    /// How many times the workload runs.
    pub iterations: u32,
    /// Budget for the 99th percentile of fuel per message.
    pub max_fuel_per_message_p99: Option<u64>,
    /// Budget for the peak linear memory, in bytes.
    pub max_peak_memory_bytes: Option<u64>,
    /// Budget for the median instantiation time, in µs.
    pub max_instantiate_us_p50: Option<f64>,
    /// Budget for the 99th percentile of handle time, in µs.
    pub max_handle_us_p99: Option<f64>,
}

impl Default for ResourcePolicy {
    fn default() -> Self {
        ResourcePolicy {
            iterations: 20,
            max_fuel_per_message_p99: Some(50_000_000),
            max_peak_memory_bytes: Some(64 * 1024 * 1024),
            max_instantiate_us_p50: None,
            max_handle_us_p99: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_names_only_what_it_changes() {
        let policy =
            Policy::from_json(r#"{"max_module_bytes": 1024, "memory": {"require_maximum": true}}"#)
                .unwrap();
        assert_eq!(policy.max_module_bytes, 1024);
        assert!(policy.memory.require_maximum);
        assert_eq!(
            policy.memory.max_initial_pages,
            MemoryPolicy::default().max_initial_pages
        );
        assert_eq!(policy.sandbox, SandboxPolicy::default());
    }

    #[test]
    fn unknown_fields_are_errors_that_name_them() {
        let err = Policy::from_json(r#"{"max_module_byte": 1}"#).unwrap_err();
        assert!(err.contains("max_module_byte"), "{err}");
        let err = Policy::from_yaml("sandbox:\n  fuel: 10\n").unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }

    #[test]
    fn yaml_and_json_agree() {
        let yaml = Policy::from_yaml(
            "extra_imports:\n  - module: env\n    name: rand\n    results: [i64]\nsandbox:\n  nondeterminism: error\n",
        )
        .unwrap();
        let json = Policy::from_json(
            r#"{"extra_imports": [{"module": "env", "name": "rand", "results": ["i64"]}], "sandbox": {"nondeterminism": "error"}}"#,
        )
        .unwrap();
        assert_eq!(yaml, json);
        assert_eq!(yaml.sandbox.nondeterminism, Severity::Error);
    }

    #[test]
    fn default_policy_round_trips() {
        let policy = Policy::default();
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(Policy::from_json(&json).unwrap(), policy);
    }

    #[test]
    fn stage_time_limits_fall_back_to_the_default() {
        let mut policy = Policy::default();
        policy.stage_time_limits_ms.insert("sandbox".into(), 50);
        assert_eq!(
            policy.stage_time_limit("sandbox"),
            Duration::from_millis(50)
        );
        assert_eq!(policy.stage_time_limit("static"), Duration::from_secs(10));
    }

    #[test]
    fn file_errors_name_the_file() {
        let err = Policy::from_file(Path::new("/no/such/policy.json")).unwrap_err();
        assert!(err.to_string().contains("/no/such/policy.json"));
    }
}
