//! The stable finding codes. Hosts match on these strings; they never change meaning.

/// The module is empty.
pub const EMPTY_MODULE: &str = "empty_module";
/// The module is over the policy's size limit (checked before parsing).
pub const MODULE_TOO_LARGE: &str = "module_too_large";
/// The bytes do not start with the WebAssembly magic.
pub const NOT_WASM: &str = "not_wasm";
/// The bytes are a component, not a core module.
pub const COMPONENT_NOT_SUPPORTED: &str = "component_not_supported";
/// The module is malformed or invalid WebAssembly.
pub const INVALID_WASM: &str = "invalid_wasm";
/// An import outside the allowed set.
pub const IMPORT_NOT_ALLOWED: &str = "import_not_allowed";
/// An allowed import with the wrong signature.
pub const IMPORT_SIGNATURE_MISMATCH: &str = "import_signature_mismatch";
/// A required ABI export is missing.
pub const MISSING_EXPORT: &str = "missing_export";
/// An ABI export has the wrong kind or signature.
pub const EXPORT_SIGNATURE_MISMATCH: &str = "export_signature_mismatch";
/// The exported memory is 64-bit; the ABI passes 32-bit pointers.
pub const MEMORY64_NOT_SUPPORTED: &str = "memory64_not_supported";
/// A memory's initial size is over the policy.
pub const MEMORY_INITIAL_TOO_LARGE: &str = "memory_initial_too_large";
/// A memory's declared maximum is over the policy.
pub const MEMORY_MAXIMUM_TOO_LARGE: &str = "memory_maximum_too_large";
/// A memory declares no maximum and the policy requires one.
pub const MEMORY_MAXIMUM_MISSING: &str = "memory_maximum_missing";
/// A shared memory (threads), refused by default.
pub const SHARED_MEMORY_NOT_ALLOWED: &str = "shared_memory_not_allowed";
/// A start function, refused by default.
pub const START_FUNCTION_NOT_ALLOWED: &str = "start_function_not_allowed";
/// More functions than the policy allows.
pub const TOO_MANY_FUNCTIONS: &str = "too_many_functions";
/// More tables than the policy allows.
pub const TOO_MANY_TABLES: &str = "too_many_tables";
/// A table larger than the policy allows.
pub const TABLE_TOO_LARGE: &str = "table_too_large";
/// More globals than the policy allows.
pub const TOO_MANY_GLOBALS: &str = "too_many_globals";
/// More data segments than the policy allows.
pub const TOO_MANY_DATA_SEGMENTS: &str = "too_many_data_segments";
/// More data bytes than the policy allows.
pub const DATA_TOO_LARGE: &str = "data_too_large";

/// The module could not be compiled by the runtime.
pub const COMPILE_FAILED: &str = "compile_failed";
/// The module breaks the agent ABI at load time.
pub const ABI_VIOLATION: &str = "abi_violation";
/// `caxton_init` failed in the sandbox.
pub const INIT_FAILED: &str = "init_failed";
/// A probe message trapped.
pub const PROBE_TRAPPED: &str = "probe_trapped";
/// A probe message ran out of fuel.
pub const PROBE_OUT_OF_FUEL: &str = "probe_out_of_fuel";
/// A probe message ran past its deadline.
pub const PROBE_DEADLINE_EXCEEDED: &str = "probe_deadline_exceeded";
/// A probe message hit the memory limit.
pub const PROBE_MEMORY_LIMIT: &str = "probe_memory_limit";
/// A probe message overflowed the stack.
pub const PROBE_STACK_OVERFLOW: &str = "probe_stack_overflow";
/// A probe's reply pointed outside linear memory.
pub const PROBE_REPLY_OUT_OF_BOUNDS: &str = "probe_reply_out_of_bounds";
/// Two fresh instances replied differently to the same messages.
pub const NONDETERMINISTIC_REPLY: &str = "nondeterministic_reply";

/// The `caxton.contract` section is not valid.
pub const MALFORMED_CONTRACT: &str = "malformed_contract";
/// The module has no `caxton.contract` section and the policy requires one.
pub const MISSING_CONTRACT: &str = "missing_contract";
/// The contract test vector file is not valid.
pub const MALFORMED_TEST_VECTORS: &str = "malformed_test_vectors";
/// A contract test vector failed to get a reply.
pub const VECTOR_FAILED: &str = "vector_failed";
/// A reply is not a JSON object with a string `kind`.
pub const REPLY_NOT_JSON: &str = "reply_not_json";
/// A reply's kind differs from the vector's expectation.
pub const UNEXPECTED_KIND: &str = "unexpected_kind";
/// A reply's field differs from the vector's expectation.
pub const FIELD_MISMATCH: &str = "field_mismatch";
/// A reply's kind is not one the contract emits.
pub const KIND_NOT_EMITTED: &str = "kind_not_emitted";
/// A vector sends a kind the contract does not accept.
pub const KIND_NOT_ACCEPTED: &str = "kind_not_accepted";
/// The new version accepts fewer kinds than the previous.
pub const ACCEPTS_NARROWED: &str = "accepts_narrowed";
/// The previous version given for comparison could not be read.
pub const PREVIOUS_UNREADABLE: &str = "previous_unreadable";

/// The workload failed while profiling.
pub const WORKLOAD_FAILED: &str = "workload_failed";
/// Fuel per message over the budget.
pub const FUEL_OVER_BUDGET: &str = "fuel_over_budget";
/// Peak memory over the budget.
pub const MEMORY_OVER_BUDGET: &str = "memory_over_budget";
/// Instantiation time over the budget.
pub const INSTANTIATE_OVER_BUDGET: &str = "instantiate_over_budget";
/// Handle latency over the budget.
pub const LATENCY_OVER_BUDGET: &str = "latency_over_budget";

/// A stage ran past its time limit.
pub const STAGE_TIME_LIMIT: &str = "stage_time_limit";
