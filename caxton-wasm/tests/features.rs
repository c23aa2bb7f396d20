//! The WebAssembly features agents may use: WebAssembly 3.0 without GC and exceptions, whose
//! objects would live in a GC heap that no memory limit or statistic counts.

mod common;

use caxton_core::{AgentError, AgentRuntime};
use caxton_wasm::{CompileError, WasmRuntime};
use common::*;

/// A module that keeps the agent ABI but allocates a GC struct for every message.
const GC_AGENT: &str = r#"(module
  (type $point (struct (field i32)))
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "caxton_handle") (param $ptr i32) (param $len i32) (result i64)
    (drop (struct.new $point (local.get $len)))
    (i64.const 0)))"#;

/// A module that throws and catches an exception for every message.
const EXCEPTIONS_AGENT: &str = r#"(module
  (tag $oops (param i32))
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "caxton_handle") (param $ptr i32) (param $len i32) (result i64)
    (block $caught (result i32)
      (try_table (catch $oops $caught)
        (throw $oops (local.get $len)))
      (unreachable))
    (drop)
    (i64.const 0)))"#;

fn refusal(wat: &str) -> String {
    let module = wat::parse_str(wat).unwrap();
    match engine().compile(&module) {
        Ok(_) => panic!("the module compiled"),
        Err(err) => {
            assert!(
                matches!(err, CompileError::UnsupportedFeature { .. }),
                "{err:?}"
            );
            err.to_string()
        }
    }
}

#[test]
fn a_module_with_a_gc_struct_type_is_refused_with_a_clear_message() {
    let message = refusal(GC_AGENT);
    assert!(
        message.contains("garbage collection") && message.contains("linear memory"),
        "{message}"
    );
}

#[test]
fn loading_a_gc_agent_is_a_compile_error_that_says_why() {
    let runtime = WasmRuntime::new(engine());
    let module = wat::parse_str(GC_AGENT).unwrap();
    let err = runtime.load(spec("gc", "gc-v1", module)).unwrap_err();
    assert!(
        matches!(&err, AgentError::Compile { message, .. } if message.contains("garbage collection")),
        "{err:?}"
    );
}

#[test]
fn a_module_using_exceptions_is_refused_with_a_clear_message() {
    let message = refusal(EXCEPTIONS_AGENT);
    assert!(message.contains("exception"), "{message}");
}

#[test]
fn the_agent_feature_set_leaves_out_gc_and_exceptions() {
    use wasmtime::WasmFeatures;
    let features = caxton_wasm::AGENT_WASM_FEATURES;
    for left_out in [
        WasmFeatures::GC,
        WasmFeatures::GC_TYPES,
        WasmFeatures::EXCEPTIONS,
    ] {
        assert!(!features.contains(left_out), "{left_out:?}");
    }
    // The rest of WebAssembly 3.0 stays.
    for kept in [
        WasmFeatures::TAIL_CALL,
        WasmFeatures::MEMORY64,
        WasmFeatures::MULTI_MEMORY,
        WasmFeatures::RELAXED_SIMD,
        WasmFeatures::FUNCTION_REFERENCES,
    ] {
        assert!(features.contains(kept), "{kept:?}");
    }
}
