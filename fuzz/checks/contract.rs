//! Contract inputs: the first byte picks what the rest is (even: the bytes of a
//! `caxton.contract` custom section, odd: a contract-test file). A refused input is an
//! error message; an accepted one keeps its invariants (no empty kind; a test's message is
//! a JSON object) and round-trips through its JSON form.

use caxton_validate::contract::{Contract, ContractTest};
use serde_json::Value;

/// JSON values equal up to the last bits of floating-point numbers (the float parser need
/// not round-trip the shortest printed form exactly).
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && close(vx, vy))
        }
        _ => a == b,
    }
}

fn section(bytes: &[u8]) {
    let Ok(contract) = Contract::from_section(bytes) else {
        return;
    };
    assert!(
        contract
            .accepts
            .iter()
            .chain(&contract.emits)
            .all(|k| !k.is_empty())
    );
    let text = serde_json::to_vec(&contract).expect("a contract serializes");
    let back = Contract::from_section(&text).expect("a serialized contract parses");
    assert_eq!(back, contract);
}

fn tests(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(tests) = ContractTest::parse_all(text) else {
        return;
    };
    for test in &tests {
        let message: Value =
            serde_json::from_slice(&test.message_bytes()).expect("a message is JSON");
        assert!(message.is_object());
        assert_eq!(
            test.input_kind(),
            test.input.get("kind").and_then(Value::as_str)
        );
    }
    let once = serde_json::to_string(&tests).expect("tests serialize");
    let back = ContractTest::parse_all(&once).expect("serialized tests parse");
    let (a, b) = (
        serde_json::to_value(&tests).expect("tests serialize"),
        serde_json::to_value(&back).expect("tests serialize"),
    );
    assert!(close(&a, &b), "round trip changed the tests:\n{a}\n{b}");
}

pub(crate) fn check(data: &[u8]) {
    match data.split_first() {
        Some((&kind, rest)) if kind & 1 == 0 => section(rest),
        Some((_, rest)) => tests(rest),
        None => {}
    }
}
