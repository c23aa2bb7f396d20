//! `caxton manifests`, run as a user would: the built binary prints the golden manifests
//! of the example fleet, and every kind of bad input is exit 2 with one line on standard
//! error naming the path of what is wrong, and nothing on standard output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> PathBuf {
    repository().join("examples/fleet/support.yaml")
}

fn caxton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caxton"))
        .args(args)
        .output()
        .expect("the caxton binary runs")
}

fn fleet_file(text: &str, extension: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(extension)
        .tempfile()
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn prints_the_golden_manifests_for_both_targets() {
    for (flags, golden) in [
        (&[][..], "support.kubernetes.yaml"),
        (&["--target", "kubernetes"][..], "support.kubernetes.yaml"),
        (&["--target", "argo"][..], "support.argo.yaml"),
        (&["--json"][..], "support.kubernetes.json"),
    ] {
        let example = example();
        let mut args = vec!["manifests", example.to_str().unwrap()];
        args.extend_from_slice(flags);
        let output = caxton(&args);
        assert_eq!(output.status.code(), Some(0), "{flags:?}: {output:?}");
        assert!(output.stderr.is_empty(), "{flags:?}: {output:?}");
        let expected =
            std::fs::read_to_string(repository().join("caxton-k8s/tests/golden").join(golden))
                .unwrap();
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            expected,
            "{flags:?}: the output differs from caxton-k8s/tests/golden/{golden}"
        );
    }
}

#[test]
fn json_is_a_list_of_the_same_objects() {
    let example = example();
    let output = caxton(&[
        "manifests",
        example.to_str().unwrap(),
        "--target",
        "argo",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let kinds: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Rollout").count(), 3);
    assert_eq!(
        kinds.iter().filter(|k| **k == "AnalysisTemplate").count(),
        3
    );
    assert!(!kinds.contains(&"Deployment"));
}

/// The example fleet with `from` replaced by `to` (once, and it must be there).
fn edited(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(example()).unwrap();
    assert!(text.contains(from), "the example has no {from:?}");
    text.replacen(from, to, 1)
}

fn refused(text: &str, flags: &[&str], path: &str, words: &str) {
    for extension in [".yaml", ""] {
        let file = fleet_file(text, extension);
        let mut args = vec!["manifests", file.path().to_str().unwrap()];
        args.extend_from_slice(flags);
        let output = caxton(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{path}: {stderr}");
        assert!(output.stdout.is_empty(), "{path}: printed on stdout");
        assert_eq!(stderr.lines().count(), 1, "{path}: not one line: {stderr}");
        assert!(
            stderr.contains(&format!(": {path}: ")),
            "expected the path {path} in: {stderr}"
        );
        assert!(stderr.contains(words), "expected {words:?} in: {stderr}");
    }
}

const PROCESSOR_LIMITS: &str = "limits: { cpu: \"1\", memory: 512Mi }";

#[test]
fn an_unknown_field_is_refused_with_its_path() {
    refused(
        &edited(PROCESSOR_LIMITS, "limits: { cpuu: \"1\", memory: 512Mi }"),
        &[],
        "fleet.agents[0].resources.limits.cpuu",
        "unknown field `cpuu`",
    );
    refused(
        &edited("  registry_secret:", "  replicas: 3\n  registry_secret:"),
        &[],
        "fleet.replicas",
        "unknown field `replicas`",
    );
    refused(
        &edited(
            "        max_live_versions: 3",
            "        max_live_version: 3",
        ),
        &[],
        "fleet.agents[1].rollout.max_live_version",
        "unknown field",
    );
}

#[test]
fn an_unknown_strategy_is_refused() {
    refused(
        &edited("strategy: canary", "strategy: linear"),
        &[],
        "fleet.agents[0].rollout.strategy",
        "unknown variant `linear`",
    );
}

#[test]
fn negative_and_impossible_resources_are_refused() {
    refused(
        &edited("requests: { cpu: 250m", "requests: { cpu: -1"),
        &[],
        "fleet.agents[0].resources.requests.cpu",
        "negative",
    );
    refused(
        &edited(PROCESSOR_LIMITS, "limits: { cpu: \"1\", memory: -512Mi }"),
        &[],
        "fleet.agents[0].resources.limits.memory",
        "negative",
    );
    refused(
        &edited(PROCESSOR_LIMITS, "limits: { cpu: 100m, memory: 512Mi }"),
        &[],
        "fleet.agents[0].resources.limits.cpu",
        "below the request 250m",
    );
    refused(
        &edited(PROCESSOR_LIMITS, "limits: { cpu: \"1\", memory: 128Mi }"),
        &[],
        "fleet.agents[0].resources.limits.memory",
        "below the request 256Mi",
    );
    refused(
        &edited("memory: 256Mi }", "memory: lots }"),
        &[],
        "fleet.agents[0].resources.requests.memory",
        "not a Kubernetes quantity",
    );
}

#[test]
fn min_above_max_replicas_is_refused() {
    refused(
        &edited("scaling: { min: 2, max: 10", "scaling: { min: 12, max: 10"),
        &[],
        "fleet.agents[0].scaling.min",
        "above max 10",
    );
    refused(
        &edited("scaling: { min: 2, max: 10", "scaling: { min: 0, max: 10"),
        &[],
        "fleet.agents[0].scaling.min",
        "at least 1",
    );
}

#[test]
fn a_weight_outside_0_to_100_is_refused() {
    refused(
        &edited("weight: 25%, hold: 10m", "weight: 150%, hold: 10m"),
        &[],
        "fleet.agents[0].rollout.stages[2].canary.weight",
        "between 0% and 100%",
    );
    refused(
        &edited("weight: 5%, hold: 10m", "weight: -5%, hold: 10m"),
        &[],
        "fleet.agents[1].rollout.stages[0].canary.weight",
        "between 0% and 100%",
    );
}

#[test]
fn an_agent_name_that_is_not_a_dns_label_is_refused() {
    refused(
        &edited("- name: chat", "- name: Chat_Bot"),
        &[],
        "fleet.agents[1].name",
        "DNS-1123 label",
    );
    refused(
        &edited("- name: chat", "- name: -chat"),
        &[],
        "fleet.agents[1].name",
        "DNS-1123 label",
    );
    let long = "a".repeat(60);
    refused(
        &edited("- name: chat", &format!("- name: {long}")),
        &[],
        "fleet.agents[1].name",
        "characters",
    );
}

#[test]
fn two_agents_of_one_name_are_refused() {
    refused(
        &edited("- name: triage", "- name: processor"),
        &[],
        "fleet.agents[2].name",
        "agent `processor` appears twice",
    );
}

#[test]
fn what_argo_rollouts_cannot_express_is_refused_for_that_target_only() {
    let shadow = edited(
        "      rollout:\n        strategy: blue-green\n        stages:\n          - validate: 30s\n          - warm_up: 60s\n          - switch: instant\n          - cleanup: 10m\n",
        "      rollout:\n        strategy: shadow\n        duration: 1h\n",
    );
    refused(
        &shadow,
        &["--target", "argo"],
        "fleet.agents[2].rollout.strategy",
        "service mesh",
    );
    let file = fleet_file(&shadow, ".yaml");
    let output = caxton(&["manifests", file.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    refused(
        &edited("weight: 5%, hold: 5m", "weight: 5.5%, hold: 5m"),
        &["--target", "argo"],
        "fleet.agents[0].rollout.stages[1].canary.weight",
        "whole percents",
    );
}

#[test]
fn unreadable_input_and_bad_flags_are_exit_2() {
    let output = caxton(&["manifests", "/nonexistent/fleet.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let example = example();
    let output = caxton(&["manifests", example.to_str().unwrap(), "--target", "nomad"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let json = fleet_file("{\"fleet\": {\"name\": \"x\"}}", ".json");
    let output = caxton(&["manifests", json.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("fleet: missing field"));
}
