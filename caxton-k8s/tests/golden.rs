//! The manifests of the example fleet (`examples/fleet/support.yaml`) against the golden
//! files in `tests/golden/`. After an intended change, regenerate them with
//! `CAXTON_BLESS=1 cargo test -p caxton-k8s --test golden` and review the diff.

use std::path::{Path, PathBuf};

use caxton_k8s::{Fleet, Target};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(target: Target, json: bool) {
    let spec = std::fs::read_to_string(repository().join("examples/fleet/support.yaml"))
        .expect("the example fleet");
    let fleet = Fleet::from_yaml(&spec).expect("the example fleet is valid");
    let objects = caxton_k8s::manifests(&fleet, target).expect("manifests");
    let (text, extension) = if json {
        (caxton_k8s::to_json(&objects).expect("json") + "\n", "json")
    } else {
        (caxton_k8s::to_yaml(&objects).expect("yaml"), "yaml")
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("support.{target}.{extension}"));
    if std::env::var_os("CAXTON_BLESS").is_some() {
        std::fs::write(&golden, &text).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run CAXTON_BLESS=1 cargo test -p caxton-k8s --test golden",
            golden.display()
        )
    });
    if text != expected {
        let line = text
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map_or(text.lines().count().min(expected.lines().count()), |n| n);
        panic!(
            "{} differs from the output at line {}:\n  golden: {:?}\n  output: {:?}\n\
             If the change is intended: CAXTON_BLESS=1 cargo test -p caxton-k8s --test golden",
            golden.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("(end)"),
            text.lines().nth(line).unwrap_or("(end)"),
        );
    }
}

#[test]
fn kubernetes_yaml_matches_the_golden_file() {
    check(Target::Kubernetes, false);
}

#[test]
fn argo_yaml_matches_the_golden_file() {
    check(Target::Argo, false);
}

#[test]
fn kubernetes_json_matches_the_golden_file() {
    check(Target::Kubernetes, true);
}

#[test]
fn the_same_spec_as_json_gives_the_same_manifests() {
    let yaml = std::fs::read_to_string(repository().join("examples/fleet/support.yaml")).unwrap();
    let from_yaml = Fleet::from_yaml(&yaml).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let from_json = Fleet::from_json(&value.to_string()).unwrap();
    for target in [Target::Kubernetes, Target::Argo] {
        assert_eq!(
            caxton_k8s::to_yaml(&caxton_k8s::manifests(&from_yaml, target).unwrap()).unwrap(),
            caxton_k8s::to_yaml(&caxton_k8s::manifests(&from_json, target).unwrap()).unwrap(),
        );
    }
}
