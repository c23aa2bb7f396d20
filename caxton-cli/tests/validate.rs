//! `caxton validate`, run as a user would: exit 0 accepted, 1 rejected, 2 could not run
//! with a one-line reason; `--json` prints the validation report as JSON.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn caxton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caxton"))
        .args(args)
        .output()
        .expect("the caxton binary runs")
}

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn file_with(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

fn assert_could_not_run(output: &Output, mentions: &[&str]) {
    assert_eq!(
        output.status.code(),
        Some(2),
        "stdout: {} stderr: {}",
        stdout(output),
        stderr(output)
    );
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    for text in mentions {
        assert!(err.contains(text), "{err:?} does not mention {text:?}");
    }
}

fn json_report(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

const ECHO_WAT: &str = r#"(module
  (memory (export "memory") 2)
  (func (export "caxton_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "caxton_handle") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.extend_i32_u (local.get 1)))))"#;

#[test]
fn an_accepted_module_prints_a_line_per_stage_and_exits_0() {
    let output = caxton(&[
        "validate",
        &repo("caxton-cli/samples/processor_v1.wasm"),
        "--contract-tests",
        &repo("caxton-cli/samples/processor_contract_tests.json"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    for stage in [
        "✓ static (",
        "✓ sandbox (",
        "✓ contracts (",
        "✓ resources (",
        "✓ Validation passed (",
    ] {
        assert!(text.contains(stage), "{stage} missing in:\n{text}");
    }
    assert!(text.contains("profile: fuel/message"));
}

#[test]
fn json_output_follows_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let wat = file_with(&dir, "echo.wat", ECHO_WAT.as_bytes());
    let output = caxton(&["validate", &wat, "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json_report(&output);
    assert_eq!(report["module"], wat.as_str());
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(report["accepted"], true);
    assert!(report["duration_ms"].is_number());
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["static", "sandbox", "contracts", "resources"]);
    for stage in report["stages"].as_array().unwrap() {
        assert_eq!(stage["status"], "passed");
        assert!(stage["duration_ms"].is_number() && stage["findings"].is_array());
    }
    for key in [
        "fuel_per_message_p50",
        "fuel_per_message_p99",
        "peak_memory_bytes",
        "instantiate_us_p50",
        "handle_us_p50",
        "handle_us_p99",
    ] {
        assert!(report["profile"][key].is_number(), "{key}");
    }
}

#[test]
fn a_rejected_module_exits_1_with_its_findings() {
    let output = caxton(&[
        "validate",
        &repo("caxton-cli/samples/processor_v2.wasm"),
        "--previous",
        &repo("caxton-cli/samples/processor_v1.wasm"),
        "--contract-tests",
        &repo("caxton-cli/samples/processor_contract_tests.json"),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json_report(&output);
    assert_eq!(report["accepted"], false);
    assert_eq!(report["stages"][2]["status"], "failed");
    assert_eq!(report["stages"][3]["status"], "skipped");
    assert_eq!(report["profile"], Value::Null);
    let codes: Vec<&str> = report["stages"][2]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"unexpected_kind"), "{codes:?}");
}

#[test]
fn bad_modules_are_rejected_with_a_clear_finding() {
    let dir = tempfile::tempdir().unwrap();
    let good = wat::parse_str(ECHO_WAT).unwrap();
    // A module over the policy's `max_module_bytes` is not read at all: see
    // `a_module_over_the_size_limit_exits_2_naming_the_path_and_the_limit`.
    for (name, bytes, code) in [
        ("empty.wasm", Vec::new(), "empty_module"),
        ("text.wasm", b"hello world".to_vec(), "not_wasm"),
        (
            "truncated.wasm",
            good[..good.len() - 5].to_vec(),
            "invalid_wasm",
        ),
    ] {
        let path = file_with(&dir, name, &bytes);
        let output = caxton(&["validate", path.as_str()]);
        assert_eq!(output.status.code(), Some(1), "{name}: {}", stderr(&output));
        let text = stdout(&output);
        assert!(text.contains(&format!("[{code}]")), "{name}: {text}");
        assert!(text.contains("✗ static"), "{name}: {text}");
        assert!(text.contains("- sandbox skipped"));
    }
}

#[test]
fn unreadable_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = file_with(&dir, "echo.wat", ECHO_WAT.as_bytes());
    let bad_wat = file_with(
        &dir,
        "bad.wat",
        b"(module\n  (func (result i32)\n    i32.konst 1))",
    );
    assert_could_not_run(
        &caxton(&["validate", &bad_wat]),
        &["bad.wat:3:5", "unknown operator"],
    );
    let folder = dir.path().display().to_string();
    assert_could_not_run(&caxton(&["validate", &folder]), &["is a directory"]);
    assert_could_not_run(
        &caxton(&["validate", "/no/such/agent.wasm"]),
        &["/no/such/agent.wasm", "no such file"],
    );
    let policy = file_with(&dir, "policy.json", br#"{"sandbox": {"fuel": 1}}"#);
    assert_could_not_run(
        &caxton(&["validate", &good, "--policy", &policy]),
        &["policy.json", "fuel"],
    );
    let vectors = file_with(&dir, "tests.json", br#"[{"name": "x", "input": {}}]"#);
    assert_could_not_run(
        &caxton(&["validate", &good, "--contract-tests", &vectors]),
        &["tests.json", "expect"],
    );
    assert_could_not_run(
        &caxton(&["validate", &good, "--previous", "/no/such/previous.wasm"]),
        &["previous.wasm"],
    );
    assert_could_not_run(&caxton(&["validate"]), &["MODULE"]);
}

/// A file of `len` zero bytes that takes no disk space.
fn sparse_file(dir: &tempfile::TempDir, name: &str, len: u64) -> String {
    let path = dir.path().join(name);
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    path.display().to_string()
}

#[test]
fn a_module_over_the_size_limit_exits_2_naming_the_path_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let policy = file_with(&dir, "small.json", br#"{"max_module_bytes": 1024}"#);
    // A binary over the policy's limit is refused before it is read, not as a finding.
    let mut binary = b"\0asm\x01\0\0\0".to_vec();
    binary.resize(2_000, 0);
    let big = file_with(&dir, "big.wasm", &binary);
    assert_could_not_run(
        &caxton(&["validate", &big, "--policy", &policy]),
        &["big.wasm", "1024 bytes"],
    );
    let small = file_with(&dir, "echo.wat", ECHO_WAT.as_bytes());
    assert_could_not_run(
        &caxton(&["validate", &small, "--previous", &big, "--policy", &policy]),
        &["big.wasm", "1024 bytes"],
    );
    // Text may be four times the binary limit: a valid module padded past that is refused.
    let padded = format!("{ECHO_WAT}\n;; {}\n", "x".repeat(4_096));
    let wat = file_with(&dir, "padded.wat", padded.as_bytes());
    assert_could_not_run(
        &caxton(&["validate", &wat, "--policy", &policy]),
        &["padded.wat", "4096 bytes"],
    );
    // Without a policy, the default limit (32 MiB) holds.
    let huge = sparse_file(&dir, "huge.wasm", 32 * 1024 * 1024 + 1);
    assert_could_not_run(
        &caxton(&["validate", &huge]),
        &["huge.wasm", "33554432 bytes"],
    );
}

#[test]
fn contract_tests_and_policies_over_the_size_limit_exit_2_naming_the_path_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let good = file_with(&dir, "echo.wat", ECHO_WAT.as_bytes());
    let vectors = sparse_file(&dir, "vectors.json", 16 * 1024 * 1024 + 1);
    assert_could_not_run(
        &caxton(&["validate", &good, "--contract-tests", &vectors]),
        &["vectors.json", "16777216 bytes"],
    );
    let policy = sparse_file(&dir, "policy.yaml", 1024 * 1024 + 1);
    assert_could_not_run(
        &caxton(&["validate", &good, "--policy", &policy]),
        &["policy.yaml", "1048576 bytes"],
    );
}
