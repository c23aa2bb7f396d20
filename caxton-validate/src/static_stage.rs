//! The `static` stage: validity, the import and export ABI, and structural limits, all from
//! one pass over the bytes with wasmparser.

use std::fmt::Write as _;

use wasmparser::{
    Encoding, ExternalKind, FuncType, FuncValidatorAllocations, Parser, Payload, TypeRef, ValType,
    ValidPayload, Validator, WasmFeatures,
};

use crate::codes;
use crate::policy::{ImportRule, Policy, ValueType};
use crate::report::Finding;

/// What the static stage learned about a module, for later stages and for hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleFacts {
    /// Whether the module is valid WebAssembly.
    pub valid: bool,
    /// The `caxton.contract` custom sections: byte offset and contents.
    pub contract_sections: Vec<(usize, Vec<u8>)>,
    /// Whether `caxton_init` is exported.
    pub has_init: bool,
}

/// Checks `bytes` against `policy` with the WebAssembly `features` of the runtime's engine.
///
/// Returns every finding, not only the first: after the module turns out invalid, the
/// checks that do not need type information still run.
pub fn check(bytes: &[u8], policy: &Policy, features: WasmFeatures) -> (Vec<Finding>, ModuleFacts) {
    check_with(bytes, policy, features, PARALLEL_CODE_BYTES)
}

fn check_with(
    bytes: &[u8],
    policy: &Policy,
    features: WasmFeatures,
    parallel_code_bytes: usize,
) -> (Vec<Finding>, ModuleFacts) {
    let mut findings = Vec::new();
    let mut facts = ModuleFacts::default();
    if bytes.is_empty() {
        findings.push(Finding::error(
            codes::EMPTY_MODULE,
            "the module is empty (0 bytes)",
        ));
        return (findings, facts);
    }
    if bytes.len() as u64 > policy.max_module_bytes {
        findings.push(Finding::error(
            codes::MODULE_TOO_LARGE,
            format!(
                "the module is {} bytes; the policy allows at most {} (not parsed)",
                bytes.len(),
                policy.max_module_bytes
            ),
        ));
        return (findings, facts);
    }
    if !bytes.starts_with(b"\0asm") {
        let shown: String = bytes.iter().take(4).fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x} ");
            s
        });
        findings.push(
            Finding::error(
                codes::NOT_WASM,
                format!("not a WebAssembly module: it starts with {}instead of 00 61 73 6d (\"\\0asm\")", shown),
            )
            .at(0),
        );
        return (findings, facts);
    }

    let mut scan = Scan::default();
    let mut validator = Validator::new_with_features(features);
    let mut allocations = FuncValidatorAllocations::default();
    let mut types = None;
    let mut invalid = false;
    // Bodies of a large code section are validated on several threads once the module
    // level is known; small ones inline, where threads would cost more than they save.
    let mut deferred = Vec::new();
    let mut defer_bodies = false;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = match payload {
            Ok(payload) => payload,
            Err(err) => {
                findings.push(invalid_wasm("malformed module", &err));
                invalid = true;
                break;
            }
        };
        if let Payload::Version {
            encoding: Encoding::Component,
            range,
            ..
        } = &payload
        {
            findings.push(
                Finding::error(
                    codes::COMPONENT_NOT_SUPPORTED,
                    "this is a WebAssembly component; agents are core modules (agent ABI v1)",
                )
                .at(range.start),
            );
            return (findings, facts);
        }
        if let Err(message) = scan.record(&payload) {
            findings.push(Finding::error(
                codes::INVALID_WASM,
                format!("malformed module: {message}"),
            ));
            invalid = true;
            break;
        }
        if invalid {
            continue;
        }
        if let Payload::CodeSectionStart { size, .. } = &payload {
            defer_bodies = *size as usize >= parallel_code_bytes && worker_threads() > 1;
        }
        match validator.payload(&payload) {
            Ok(ValidPayload::Func(to_validate, body)) if defer_bodies => {
                deferred.push((to_validate, body));
            }
            Ok(ValidPayload::Func(to_validate, body)) => {
                let mut func = to_validate.into_validator(std::mem::take(&mut allocations));
                if let Err(err) = func.validate(&body) {
                    findings.push(invalid_wasm("invalid function body", &err));
                    invalid = true;
                }
                allocations = func.into_allocations();
            }
            Ok(ValidPayload::End(end)) => types = Some(end),
            Ok(_) => {}
            Err(err) => {
                findings.push(invalid_wasm("invalid module", &err));
                invalid = true;
            }
        }
    }
    if !deferred.is_empty()
        && let Some(err) = validate_in_parallel(deferred)
    {
        findings.push(invalid_wasm("invalid function body", &err));
        invalid = true;
    }
    facts.valid = !invalid && types.is_some();
    facts.contract_sections = scan.contracts.clone();
    facts.has_init = scan.exports.iter().any(|e| e.name == "caxton_init");
    let types = if facts.valid { types } else { None };
    scan.check(policy, types.as_ref(), &mut findings);
    (findings, facts)
}

/// An `invalid_wasm` finding for a parser or validator error, at its offset.
fn invalid_wasm(what: &str, err: &wasmparser::BinaryReaderError) -> Finding {
    Finding::error(codes::INVALID_WASM, format!("{what}: {}", err.message())).at(err.offset())
}

/// Code sections at least this large are validated on several threads.
const PARALLEL_CODE_BYTES: usize = 256 * 1024;

fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

type PendingBody<'a> = (
    wasmparser::FuncToValidate<wasmparser::ValidatorResources>,
    wasmparser::FunctionBody<'a>,
);

/// Validates function bodies on scoped threads, each taking a contiguous run of them; the
/// error reported is the first in module order, as sequential validation would report.
fn validate_in_parallel(bodies: Vec<PendingBody<'_>>) -> Option<wasmparser::BinaryReaderError> {
    let threads = worker_threads();
    let per_thread = bodies.len().div_ceil(threads);
    let mut chunks: Vec<Vec<PendingBody<'_>>> = Vec::with_capacity(threads);
    let mut rest = bodies.into_iter();
    loop {
        let chunk: Vec<PendingBody<'_>> = rest.by_ref().take(per_thread).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut allocations = FuncValidatorAllocations::default();
                    for (to_validate, body) in chunk {
                        let mut func = to_validate.into_validator(allocations);
                        if let Err(err) = func.validate(&body) {
                            return Some(err);
                        }
                        allocations = func.into_allocations();
                    }
                    None
                })
            })
            .collect();
        // Join every worker; the earliest chunk with an error holds the first error.
        let results: Vec<Option<wasmparser::BinaryReaderError>> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        results.into_iter().flatten().next()
    })
}

/// Parameter and result types of a function.
type Signature<'a> = (&'a [ValueType], &'a [ValueType]);

struct ImportEntry {
    offset: usize,
    module: String,
    name: String,
    ty: TypeRef,
}

struct ExportEntry {
    offset: usize,
    name: String,
    kind: ExternalKind,
    index: u32,
}

#[derive(Default)]
struct Scan {
    imports: Vec<ImportEntry>,
    exports: Vec<ExportEntry>,
    /// Memories, imported and defined, in index order, with the offset where each is declared.
    memories: Vec<(usize, wasmparser::MemoryType)>,
    imported_functions: u64,
    defined_functions: u64,
    tables: Vec<(usize, wasmparser::TableType)>,
    globals: u64,
    data_segments: u64,
    data_bytes: u64,
    data_section_offset: usize,
    start: Option<usize>,
    contracts: Vec<(usize, Vec<u8>)>,
}

impl Scan {
    /// Notes what a payload declares. Malformed section contents are an error.
    fn record(&mut self, payload: &Payload<'_>) -> Result<(), String> {
        match payload {
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports_with_offsets() {
                    let (offset, import) = import.map_err(|e| e.message().to_owned())?;
                    match import.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => self.imported_functions += 1,
                        TypeRef::Memory(memory) => self.memories.push((offset, memory)),
                        TypeRef::Table(table) => self.tables.push((offset, table)),
                        TypeRef::Global(_) => self.globals += 1,
                        TypeRef::Tag(_) => {}
                    }
                    self.imports.push(ImportEntry {
                        offset,
                        module: import.module.to_owned(),
                        name: import.name.to_owned(),
                        ty: import.ty,
                    });
                }
            }
            Payload::FunctionSection(reader) => self.defined_functions += u64::from(reader.count()),
            Payload::TableSection(reader) => {
                for table in reader.clone().into_iter_with_offsets() {
                    let (offset, table) = table.map_err(|e| e.message().to_owned())?;
                    self.tables.push((offset, table.ty));
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader.clone().into_iter_with_offsets() {
                    let (offset, memory) = memory.map_err(|e| e.message().to_owned())?;
                    self.memories.push((offset, memory));
                }
            }
            Payload::GlobalSection(reader) => self.globals += u64::from(reader.count()),
            Payload::ExportSection(reader) => {
                for export in reader.clone().into_iter_with_offsets() {
                    let (offset, export) = export.map_err(|e| e.message().to_owned())?;
                    self.exports.push(ExportEntry {
                        offset,
                        name: export.name.to_owned(),
                        kind: export.kind,
                        index: export.index,
                    });
                }
            }
            Payload::StartSection { range, .. } => self.start = Some(range.start),
            Payload::DataSection(reader) => {
                self.data_section_offset = reader.range().start;
                self.data_segments += u64::from(reader.count());
                for data in reader.clone() {
                    let data = data.map_err(|e| e.message().to_owned())?;
                    self.data_bytes += data.data.len() as u64;
                }
            }
            Payload::CustomSection(reader) if reader.name() == "caxton.contract" => {
                self.contracts
                    .push((reader.range().start, reader.data().to_vec()));
            }
            _ => {}
        }
        Ok(())
    }

    fn check(
        &self,
        policy: &Policy,
        types: Option<&wasmparser::types::Types>,
        findings: &mut Vec<Finding>,
    ) {
        self.check_imports(policy, types, findings);
        self.check_exports(types, findings);
        self.check_memories(policy, findings);
        self.check_structure(policy, findings);
    }

    fn check_imports(
        &self,
        policy: &Policy,
        types: Option<&wasmparser::types::Types>,
        findings: &mut Vec<Finding>,
    ) {
        let mut rules = ImportRule::abi_v1();
        rules.extend(policy.extra_imports.iter().cloned());
        let allowed = || {
            rules
                .iter()
                .map(|r| format!("{}.{}", r.module, r.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for import in &self.imports {
            let qualified = format!("{}.{}", import.module, import.name);
            let type_index = match import.ty {
                TypeRef::Func(index) | TypeRef::FuncExact(index) => index,
                other => {
                    findings.push(
                        Finding::error(
                            codes::IMPORT_NOT_ALLOWED,
                            format!("imports the {} `{qualified}`; agents may import only functions ({})", kind_of_type_ref(&other), allowed()),
                        )
                        .at(import.offset),
                    );
                    continue;
                }
            };
            let Some(rule) = rules
                .iter()
                .find(|r| r.module == import.module && r.name == import.name)
            else {
                findings.push(
                    Finding::error(
                        codes::IMPORT_NOT_ALLOWED,
                        format!("imports the function `{qualified}`, which is not allowed; allowed are {}", allowed()),
                    )
                    .at(import.offset),
                );
                continue;
            };
            let Some(types) = types else { continue };
            let id = types.as_ref().core_type_at_in_module(type_index);
            let sub = &types[id];
            let found = match sub.composite_type.inner {
                wasmparser::CompositeInnerType::Func(ref f) => describe_func(f),
                _ => "a non-function type".to_owned(),
            };
            let expected = describe_rule(&rule.params, &rule.results);
            if found != expected {
                findings.push(
                    Finding::error(
                        codes::IMPORT_SIGNATURE_MISMATCH,
                        format!("imports `{qualified}` as {found}; the signature is {expected}"),
                    )
                    .at(import.offset),
                );
            }
        }
    }

    fn check_exports(&self, types: Option<&wasmparser::types::Types>, findings: &mut Vec<Finding>) {
        use ValueType::{I32, I64};
        let required: [(&str, Option<Signature<'_>>, bool); 4] = [
            ("memory", None, true),
            ("caxton_alloc", Some((&[I32], &[I32])), true),
            ("caxton_handle", Some((&[I32, I32], &[I64])), true),
            ("caxton_init", Some((&[], &[I32])), false),
        ];
        for (name, signature, mandatory) in required {
            let Some(export) = self.exports.iter().find(|e| e.name == name) else {
                if mandatory {
                    let what = match signature {
                        None => "its linear memory".to_owned(),
                        Some((p, r)) => format!("a function {}", describe_rule(p, r)),
                    };
                    findings.push(Finding::error(
                        codes::MISSING_EXPORT,
                        format!(
                            "the agent ABI requires the export `{name}` ({what}); it is missing"
                        ),
                    ));
                }
                continue;
            };
            match signature {
                None => {
                    if export.kind != ExternalKind::Memory {
                        findings.push(
                            Finding::error(
                                codes::EXPORT_SIGNATURE_MISMATCH,
                                format!(
                                    "`memory` must export a memory, not a {}",
                                    kind_name(export.kind)
                                ),
                            )
                            .at(export.offset),
                        );
                    } else if let Some((_, memory)) = self.memories.get(export.index as usize)
                        && memory.memory64
                    {
                        findings.push(
                            Finding::error(
                                codes::MEMORY64_NOT_SUPPORTED,
                                "the exported `memory` is 64-bit; the agent ABI v1 passes 32-bit pointers",
                            )
                            .at(export.offset),
                        );
                    }
                }
                Some((params, results)) => {
                    let expected = describe_rule(params, results);
                    if export.kind != ExternalKind::Func {
                        findings.push(
                            Finding::error(
                                codes::EXPORT_SIGNATURE_MISMATCH,
                                format!(
                                    "`{name}` must export a function {expected}, not a {}",
                                    kind_name(export.kind)
                                ),
                            )
                            .at(export.offset),
                        );
                        continue;
                    }
                    let Some(types) = types else { continue };
                    let id = types.as_ref().core_function_at(export.index);
                    let found = match types[id].composite_type.inner {
                        wasmparser::CompositeInnerType::Func(ref f) => describe_func(f),
                        _ => "a non-function type".to_owned(),
                    };
                    if found != expected {
                        findings.push(
                            Finding::error(
                                codes::EXPORT_SIGNATURE_MISMATCH,
                                format!("`{name}` has the signature {found}; the agent ABI requires {expected}"),
                            )
                            .at(export.offset),
                        );
                    }
                }
            }
        }
    }

    fn check_memories(&self, policy: &Policy, findings: &mut Vec<Finding>) {
        let limits = &policy.memory;
        for (index, (offset, memory)) in self.memories.iter().enumerate() {
            if memory.initial > limits.max_initial_pages {
                findings.push(
                    Finding::error(
                        codes::MEMORY_INITIAL_TOO_LARGE,
                        format!(
                            "memory {index} starts with {} pages ({} bytes); the policy allows at most {} pages",
                            memory.initial,
                            memory.initial.saturating_mul(65_536),
                            limits.max_initial_pages
                        ),
                    )
                    .at(*offset),
                );
            }
            match memory.maximum {
                Some(maximum) if maximum > limits.max_maximum_pages => findings.push(
                    Finding::error(
                        codes::MEMORY_MAXIMUM_TOO_LARGE,
                        format!(
                            "memory {index} declares a maximum of {maximum} pages; the policy allows at most {}",
                            limits.max_maximum_pages
                        ),
                    )
                    .at(*offset),
                ),
                None if limits.require_maximum => findings.push(
                    Finding::error(
                        codes::MEMORY_MAXIMUM_MISSING,
                        format!("memory {index} declares no maximum; the policy requires one"),
                    )
                    .at(*offset),
                ),
                _ => {}
            }
            if memory.shared && !policy.allow_shared_memory {
                findings.push(
                    Finding::error(
                        codes::SHARED_MEMORY_NOT_ALLOWED,
                        format!("memory {index} is shared (threads); the policy does not allow shared memory"),
                    )
                    .at(*offset),
                );
            }
        }
    }

    fn check_structure(&self, policy: &Policy, findings: &mut Vec<Finding>) {
        let limits = &policy.limits;
        if let Some(offset) = self.start
            && !policy.allow_start_function
        {
            findings.push(
                Finding::error(
                    codes::START_FUNCTION_NOT_ALLOWED,
                    "the module has a start function, which would run before the host sets limits; the policy does not allow it",
                )
                .at(offset),
            );
        }
        let functions = self.imported_functions + self.defined_functions;
        let counted = [
            (
                codes::TOO_MANY_FUNCTIONS,
                "functions",
                functions,
                limits.max_functions,
            ),
            (
                codes::TOO_MANY_TABLES,
                "tables",
                self.tables.len() as u64,
                limits.max_tables,
            ),
            (
                codes::TOO_MANY_GLOBALS,
                "globals",
                self.globals,
                limits.max_globals,
            ),
            (
                codes::TOO_MANY_DATA_SEGMENTS,
                "data segments",
                self.data_segments,
                limits.max_data_segments,
            ),
        ];
        for (code, what, count, max) in counted {
            if count > max {
                findings.push(Finding::error(
                    code,
                    format!("the module has {count} {what}; the policy allows at most {max}"),
                ));
            }
        }
        for (index, (offset, table)) in self.tables.iter().enumerate() {
            if table.initial > limits.max_table_elements {
                findings.push(
                    Finding::error(
                        codes::TABLE_TOO_LARGE,
                        format!(
                            "table {index} starts with {} elements; the policy allows at most {}",
                            table.initial, limits.max_table_elements
                        ),
                    )
                    .at(*offset),
                );
            }
        }
        if self.data_bytes > limits.max_data_bytes {
            findings.push(
                Finding::error(
                    codes::DATA_TOO_LARGE,
                    format!(
                        "the data segments hold {} bytes; the policy allows at most {}",
                        self.data_bytes, limits.max_data_bytes
                    ),
                )
                .at(self.data_section_offset),
            );
        }
    }
}

fn kind_of_type_ref(ty: &TypeRef) -> &'static str {
    match ty {
        TypeRef::Func(_) | TypeRef::FuncExact(_) => "function",
        TypeRef::Table(_) => "table",
        TypeRef::Memory(_) => "memory",
        TypeRef::Global(_) => "global",
        TypeRef::Tag(_) => "tag",
    }
}

fn kind_name(kind: ExternalKind) -> &'static str {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => "function",
        ExternalKind::Table => "table",
        ExternalKind::Memory => "memory",
        ExternalKind::Global => "global",
        ExternalKind::Tag => "tag",
    }
}

fn describe_func(ty: &FuncType) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(ty.params()), list(ty.results()))
}

fn describe_rule(params: &[ValueType], results: &[ValueType]) -> String {
    let list = |types: &[ValueType]| {
        types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABI: &str = r#"
        (memory (export "memory") 1)
        (func (export "caxton_alloc") (param i32) (result i32) i32.const 1024)
        (func (export "caxton_handle") (param i32 i32) (result i64)
            local.get 0 i64.extend_i32_u i64.const 32 i64.shl local.get 1 i64.extend_i32_u i64.or)
    "#;

    fn run(wat: &str) -> Vec<Finding> {
        run_with(wat, &Policy::default())
    }

    fn run_with(wat: &str, policy: &Policy) -> Vec<Finding> {
        let bytes = wat::parse_str(wat).expect("fixture parses");
        check(&bytes, policy, WasmFeatures::WASM3).0
    }

    fn codes_of(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn a_well_behaved_agent_has_no_findings() {
        let wat = format!(
            r#"(module
                (import "caxton" "log" (func (param i32 i32 i32)))
                (import "caxton" "config" (func (param i32 i32 i32 i32) (result i32)))
                (import "caxton" "now_ms" (func (result i64)))
                {ABI}
                (func (export "caxton_init") (result i32) i32.const 0))"#
        );
        let bytes = wat::parse_str(&wat).unwrap();
        let (findings, facts) = check(&bytes, &Policy::default(), WasmFeatures::WASM3);
        assert!(findings.is_empty(), "{findings:?}");
        assert!(facts.valid && facts.has_init);
    }

    #[test]
    fn empty_not_wasm_and_too_large_stop_before_parsing() {
        let policy = Policy {
            max_module_bytes: 16,
            ..Policy::default()
        };
        assert_eq!(
            codes_of(&check(&[], &policy, WasmFeatures::WASM3).0),
            [codes::EMPTY_MODULE]
        );
        let not_wasm = check(b"hello", &policy, WasmFeatures::WASM3).0;
        assert_eq!(codes_of(&not_wasm), [codes::NOT_WASM]);
        assert!(
            not_wasm[0].message.contains("68 65 6c 6c"),
            "{}",
            not_wasm[0].message
        );
        let big = vec![0u8; 17];
        let too_large = check(&big, &policy, WasmFeatures::WASM3).0;
        assert_eq!(codes_of(&too_large), [codes::MODULE_TOO_LARGE]);
        assert!(too_large[0].message.contains("17 bytes"));
    }

    #[test]
    fn truncated_and_invalid_modules_name_the_offset() {
        let good = wat::parse_str(format!("(module {ABI})")).unwrap();
        let truncated = &good[..good.len() - 3];
        let findings = check(truncated, &Policy::default(), WasmFeatures::WASM3).0;
        assert!(
            codes_of(&findings).contains(&codes::INVALID_WASM),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.code == codes::INVALID_WASM && f.offset.is_some())
        );

        let invalid = run(&format!("(module {ABI} (func (result i32) i64.const 1))"));
        let bad = invalid
            .iter()
            .find(|f| f.code == codes::INVALID_WASM)
            .expect("invalid body found");
        assert!(bad.message.contains("type mismatch"), "{}", bad.message);
        assert!(bad.offset.is_some());
    }

    #[test]
    fn a_component_is_refused() {
        let component = wat::parse_str("(component)").unwrap();
        let findings = check(&component, &Policy::default(), WasmFeatures::all()).0;
        assert_eq!(codes_of(&findings), [codes::COMPONENT_NOT_SUPPORTED]);
    }

    #[test]
    fn every_disallowed_import_is_reported() {
        let findings = run(&format!(
            r#"(module
                (import "env" "rand" (func (result i64)))
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "env" "mem" (memory 1))
                (import "caxton" "log" (func (param i32 i32)))
                {ABI})"#
        ));
        assert_eq!(
            codes_of(&findings),
            [
                codes::IMPORT_NOT_ALLOWED,
                codes::IMPORT_NOT_ALLOWED,
                codes::IMPORT_NOT_ALLOWED,
                codes::IMPORT_SIGNATURE_MISMATCH
            ]
        );
        assert!(findings[0].message.contains("env.rand"));
        assert!(findings[2].message.contains("memory"));
        assert!(
            findings[3].message.contains("(i32, i32) -> ()")
                && findings[3].message.contains("(i32, i32, i32) -> ()")
        );
        assert!(findings.iter().all(|f| f.offset.is_some()));
    }

    #[test]
    fn a_policy_may_allow_more_imports() {
        let mut policy = Policy::default();
        policy
            .extra_imports
            .push(ImportRule::function("env", "rand", &[], &[ValueType::I64]));
        let findings = run_with(
            &format!(r#"(module (import "env" "rand" (func (result i64))) {ABI})"#),
            &policy,
        );
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn each_missing_export_is_reported() {
        let findings = run("(module)");
        assert_eq!(codes_of(&findings), [codes::MISSING_EXPORT; 3]);
        for name in ["memory", "caxton_alloc", "caxton_handle"] {
            assert!(
                findings
                    .iter()
                    .any(|f| f.message.contains(&format!("`{name}`"))),
                "{name}"
            );
        }
    }

    #[test]
    fn mistyped_exports_are_reported_with_both_signatures() {
        let findings = run(r#"(module
                (global (export "memory") i32 (i32.const 0))
                (memory 1)
                (func (export "caxton_alloc") (param i64) (result i32) i32.const 0)
                (func (export "caxton_handle") (param i32 i32) (result i32) i32.const 0)
                (func (export "caxton_init")))"#);
        assert_eq!(codes_of(&findings), [codes::EXPORT_SIGNATURE_MISMATCH; 4]);
        assert!(findings[0].message.contains("not a global"));
        assert!(
            findings[1].message.contains("(i64) -> (i32)")
                && findings[1].message.contains("(i32) -> (i32)")
        );
        assert!(findings[3].message.contains("caxton_init"));
    }

    #[test]
    fn memory64_memory_export_is_refused() {
        let findings = run(r#"(module (memory (export "memory") i64 1)
                (func (export "caxton_alloc") (param i32) (result i32) i32.const 0)
                (func (export "caxton_handle") (param i32 i32) (result i64) i64.const 0))"#);
        assert_eq!(codes_of(&findings), [codes::MEMORY64_NOT_SUPPORTED]);
    }

    #[test]
    fn memory_limits_follow_the_policy() {
        let mut policy = Policy::default();
        policy.memory.require_maximum = true;
        let abi_fns = r#"(func (export "caxton_alloc") (param i32) (result i32) i32.const 0)
            (func (export "caxton_handle") (param i32 i32) (result i64) i64.const 0)"#;
        let findings = run_with(
            &format!(r#"(module (memory (export "memory") 300) {abi_fns})"#),
            &policy,
        );
        assert_eq!(
            codes_of(&findings),
            [
                codes::MEMORY_INITIAL_TOO_LARGE,
                codes::MEMORY_MAXIMUM_MISSING
            ]
        );
        let findings = run_with(
            &format!(r#"(module (memory (export "memory") 1 20000) {abi_fns})"#),
            &policy,
        );
        assert_eq!(codes_of(&findings), [codes::MEMORY_MAXIMUM_TOO_LARGE]);
        let findings = run(&format!(
            r#"(module (memory (export "memory") 1 2 shared) {abi_fns})"#
        ));
        assert_eq!(codes_of(&findings), [codes::SHARED_MEMORY_NOT_ALLOWED]);
    }

    #[test]
    fn a_start_function_is_refused_by_default() {
        let wat = format!("(module {ABI} (func $s) (start $s))");
        assert_eq!(codes_of(&run(&wat)), [codes::START_FUNCTION_NOT_ALLOWED]);
        let policy = Policy {
            allow_start_function: true,
            ..Policy::default()
        };
        assert!(run_with(&wat, &policy).is_empty());
    }

    #[test]
    fn structural_limits_are_enforced() {
        let mut policy = Policy::default();
        policy.limits.max_functions = 2;
        policy.limits.max_tables = 0;
        policy.limits.max_table_elements = 5;
        policy.limits.max_globals = 1;
        policy.limits.max_data_segments = 1;
        policy.limits.max_data_bytes = 4;
        let wat = format!(
            r#"(module {ABI} (func) (table 10 funcref)
                (global i32 (i32.const 0)) (global i32 (i32.const 0))
                (data (i32.const 0) "abc") (data (i32.const 8) "de"))"#
        );
        let findings = run_with(&wat, &policy);
        assert_eq!(
            codes_of(&findings),
            [
                codes::TOO_MANY_FUNCTIONS,
                codes::TOO_MANY_TABLES,
                codes::TOO_MANY_GLOBALS,
                codes::TOO_MANY_DATA_SEGMENTS,
                codes::TABLE_TOO_LARGE,
                codes::DATA_TOO_LARGE
            ]
        );
    }

    #[test]
    fn parallel_body_validation_agrees_with_sequential() {
        let bodies: String = (0..400)
            .map(|i| format!("(func (result i32) i32.const {i})"))
            .collect();
        let valid = wat::parse_str(format!("(module {ABI} {bodies})")).unwrap();
        let invalid = wat::parse_str(format!(
            "(module {ABI} {bodies} (func (result i32) i64.const 1) {bodies} (func (result i64) i32.const 1))"
        ))
        .unwrap();
        for bytes in [valid, invalid] {
            let sequential =
                check_with(&bytes, &Policy::default(), WasmFeatures::WASM3, usize::MAX);
            let parallel = check_with(&bytes, &Policy::default(), WasmFeatures::WASM3, 0);
            assert_eq!(sequential, parallel);
        }
    }

    #[test]
    fn contract_sections_are_collected() {
        let wat = format!(
            r#"(module {ABI} (@custom "caxton.contract" "{{\"accepts\":[\"a\"],\"emits\":[\"b\"]}}"))"#
        );
        let bytes = wat::parse_str(&wat).unwrap();
        let (findings, facts) = check(&bytes, &Policy::default(), WasmFeatures::WASM3);
        assert!(findings.is_empty());
        assert_eq!(facts.contract_sections.len(), 1);
        assert_eq!(
            facts.contract_sections[0].1,
            br#"{"accepts":["a"],"emits":["b"]}"#
        );
    }
}
