//! Fleet specs: the first byte picks the format (even: YAML, odd: JSON), the rest is the
//! spec. A refused spec is a `FleetError`; an accepted one renders for plain Kubernetes
//! (always) and for Argo (or says why not), to YAML and to JSON; every object name is a
//! DNS-1123 label, and each agent's rollout, as the HTTP API will receive it from the
//! ConfigMap, reads back as the same spec.

use caxton_k8s::{Fleet, Target, manifests, to_json, to_yaml};
use caxton_strategies::RolloutSpec;

fn is_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

pub(crate) fn check(data: &[u8]) {
    let Some((&format, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parsed = if format & 1 == 0 {
        Fleet::from_yaml(text)
    } else {
        Fleet::from_json(text)
    };
    let fleet = match parsed {
        Ok(fleet) => fleet,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    for agent in &fleet.agents {
        if let Some(rollout) = &agent.rollout {
            let body = serde_json::json!({ "deployment": rollout.source }).to_string();
            let again = RolloutSpec::from_json(&body)
                .unwrap_or_else(|e| panic!("the rollout as sent does not parse: {e}\n{body}"));
            assert_eq!(again, rollout.spec, "the rollout as sent reads differently");
        }
    }
    for target in [Target::Kubernetes, Target::Argo] {
        let objects = match manifests(&fleet, target) {
            Ok(objects) => objects,
            Err(error) => {
                assert_eq!(target, Target::Argo, "plain Kubernetes refused: {error}");
                continue;
            }
        };
        for object in &objects {
            assert!(
                is_label(object.name()),
                "{} {:?}",
                object.kind(),
                object.name()
            );
        }
        to_yaml(&objects).expect("manifests render as YAML");
        let json = to_json(&objects).expect("manifests render as JSON");
        let list: serde_json::Value = serde_json::from_str(&json).expect("rendered JSON parses");
        assert_eq!(list.as_array().map(Vec::len), Some(objects.len()));
    }
}
