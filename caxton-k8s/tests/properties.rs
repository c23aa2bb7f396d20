//! Any valid fleet spec yields manifests that parse back into their types, in YAML and
//! in JSON alike, whose selectors all pick the pods of their agent's workload, with only
//! labels that never change.

use std::collections::{BTreeMap, BTreeSet};

use caxton_k8s::argo::{AnalysisTemplate, Rollout};
use caxton_k8s::{Fleet, Target};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use proptest::prelude::*;
use serde_json::{Value, json};

fn resources() -> impl Strategy<Value = Value> {
    (
        1u32..4_000,
        prop::option::of(0u32..4_000),
        16u32..4_096,
        0u32..4_096,
    )
        .prop_map(|(cpu, cpu_extra, memory, memory_extra)| {
            let mut limits = json!({ "memory": format!("{}Mi", memory + memory_extra) });
            if let Some(extra) = cpu_extra {
                limits["cpu"] = json!(format!("{}m", cpu + extra));
            }
            json!({
                "requests": { "cpu": format!("{cpu}m"), "memory": format!("{memory}Mi") },
                "limits": limits,
            })
        })
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..50).prop_map(|p| format!("error_rate > {p}%")),
        (1u32..5_000).prop_map(|ms| format!("p99_latency > {ms}ms")),
        (1u32..5_000).prop_map(|ms| format!("p50 >= {ms}ms")),
        (1u32..5_000).prop_map(|ms| format!("mean_latency > {ms}ms")),
        (11u32..40).prop_map(|f| format!("error_rate > baseline * {}", f as f64 / 10.0)),
    ]
}

/// Increasing whole-percent weights below 100, with holds.
fn canary_stages() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::btree_set(1u32..100, 1..5).prop_flat_map(|weights| {
        let n = weights.len();
        prop::collection::vec(0u32..3_600, n).prop_map(move |holds| {
            let mut stages: Vec<Value> = weights
                .iter()
                .zip(holds)
                .map(|(w, h)| json!({ "canary": { "weight": format!("{w}%"), "hold": format!("{h}s") } }))
                .collect();
            stages.push(json!({ "full": "100%" }));
            stages
        })
    })
}

fn rollout() -> impl Strategy<Value = Option<Value>> {
    let gates = || prop::collection::vec(condition(), 0..4);
    prop_oneof![
        Just(None),
        Just(Some(json!({ "strategy": "direct" }))),
        (canary_stages(), gates()).prop_map(|(stages, rollback_on)| Some(json!({
            "strategy": "canary", "stages": stages, "rollback_on": rollback_on,
        }))),
        (1u32..3_600, gates()).prop_map(|(cleanup, rollback_on)| Some(json!({
            "strategy": "blue-green",
            "stages": [{ "validate": "30s" }, { "switch": "instant" }, { "cleanup": format!("{cleanup}s") }],
            "rollback_on": rollback_on,
        }))),
        (1u32..7_200, gates()).prop_map(|(duration, rollback_on)| Some(json!({
            "strategy": "shadow", "duration": format!("{duration}s"), "rollback_on": rollback_on,
        }))),
        (prop::option::of(canary_stages()), gates()).prop_map(|(stages, rollback_on)| {
            let mut spec = json!({ "strategy": "rainbow", "rollback_on": rollback_on });
            if let Some(stages) = stages {
                spec["stages"] = json!(stages);
            }
            Some(spec)
        }),
    ]
}

fn agent(index: usize) -> impl Strategy<Value = Value> {
    (
        "[a-z][a-z0-9]{0,8}",
        "[0-9a-f]{64}",
        any::<bool>(),
        resources(),
        prop::option::of((1u32..5, 0u32..10, 1u32..=100)),
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,8}", "[ -~]{0,20}", 0..4),
        prop::collection::btree_set("[a-z][a-z0-9-]{0,8}[a-z0-9]", 0..3),
        rollout(),
        prop::option::of((1u32..30, 1u32..10)),
    )
        .prop_map(
            move |(name, hex, sessions, resources, scaling, config, secrets, rollout, probe)| {
                let config: BTreeMap<String, String> = config
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("CAXTON_"))
                    .collect();
                let mut agent = json!({
                    "name": format!("{name}{index}"),
                    "module": format!("sha256:{hex}"),
                    "sessions": if sessions { "sessions" } else { "stateless" },
                    "resources": resources,
                    "config": config,
                    "secrets": secrets.into_iter().collect::<Vec<_>>(),
                });
                if let Some((min, extra, target)) = scaling {
                    agent["scaling"] =
                        json!({ "min": min, "max": min + extra, "target_cpu": format!("{target}%") });
                }
                if let Some((period, threshold)) = probe {
                    agent["health"] = json!({
                        "readiness": { "period": format!("{period}s"), "failure_threshold": threshold },
                        "liveness": { "period": period * 2, "failure_threshold": threshold },
                    });
                }
                if let Some(rollout) = rollout {
                    agent["rollout"] = rollout;
                }
                agent
            },
        )
}

fn fleet() -> impl Strategy<Value = Value> {
    (1usize..4).prop_flat_map(|n| {
        (
            "[a-z][a-z0-9]{0,10}",
            "[a-z][a-z0-9-]{0,10}[a-z0-9]",
            (0..n).map(agent).collect::<Vec<_>>(),
        )
            .prop_map(|(name, namespace, agents)| {
                json!({ "fleet": {
                    "name": name,
                    "namespace": namespace,
                    "image": "registry.example.com/caxton:0.2.0",
                    "registry_secret": "caxton-registry",
                    "agents": agents,
                }})
            })
    })
}

fn subset(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

const STABLE: [&str; 2] = ["app.kubernetes.io/name", "app.kubernetes.io/instance"];

fn stable_only(selector: &BTreeMap<String, String>) {
    let keys: BTreeSet<&str> = selector.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(STABLE), "selector {selector:?}");
}

/// The workload (Deployment or Rollout) of each agent instance: its pod labels, selector
/// and whether it has a fixed replica count.
struct Workload {
    kind: &'static str,
    pod_labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    replicas: Option<i32>,
}

fn check_documents(fleet: &Fleet, target: Target, documents: &[Value]) {
    let mut workloads: BTreeMap<String, Workload> = BTreeMap::new();
    for doc in documents {
        match doc["kind"].as_str().unwrap() {
            "Deployment" => {
                let d: Deployment = serde_json::from_value(doc.clone()).unwrap();
                let template = d.spec.template.metadata.unwrap();
                workloads.insert(
                    d.metadata.name.unwrap(),
                    Workload {
                        kind: "Deployment",
                        pod_labels: template.labels.unwrap(),
                        selector: d.spec.selector.match_labels.unwrap(),
                        replicas: d.spec.replicas,
                    },
                );
            }
            "Rollout" => {
                let r: Rollout = serde_json::from_value(doc.clone()).unwrap();
                let template = r.spec.template.metadata.unwrap();
                workloads.insert(
                    r.metadata.name.unwrap(),
                    Workload {
                        kind: "Rollout",
                        pod_labels: template.labels.unwrap(),
                        selector: r.spec.selector.match_labels.unwrap(),
                        replicas: r.spec.replicas,
                    },
                );
            }
            _ => {}
        }
    }
    assert_eq!(workloads.len(), fleet.agents.len());
    for w in workloads.values() {
        assert_eq!(
            w.kind,
            if target == Target::Argo {
                "Rollout"
            } else {
                "Deployment"
            }
        );
        stable_only(&w.selector);
        assert!(subset(&w.selector, &w.pod_labels));
    }
    // The workload an object belongs to: the one named by its instance label.
    let owner = |doc: &Value| -> &Workload {
        let instance = doc["metadata"]["labels"]["app.kubernetes.io/instance"]
            .as_str()
            .unwrap();
        &workloads[instance]
    };
    let mut autoscaled = BTreeSet::new();
    for doc in documents {
        match doc["kind"].as_str().unwrap() {
            "Service" => {
                let s: Service = serde_json::from_value(doc.clone()).unwrap();
                let selector = s.spec.unwrap().selector.unwrap();
                stable_only(&selector);
                assert!(subset(&selector, &owner(doc).pod_labels));
            }
            "PodDisruptionBudget" => {
                let p: PodDisruptionBudget = serde_json::from_value(doc.clone()).unwrap();
                let selector = p.spec.unwrap().selector.unwrap().match_labels.unwrap();
                assert_eq!(selector, owner(doc).selector);
            }
            "HorizontalPodAutoscaler" => {
                let h: HorizontalPodAutoscaler = serde_json::from_value(doc.clone()).unwrap();
                let target_ref = h.spec.scale_target_ref;
                assert_eq!(target_ref.kind, owner(doc).kind);
                assert!(workloads.contains_key(&target_ref.name));
                assert!(h.spec.min_replicas.unwrap() <= h.spec.max_replicas);
                autoscaled.insert(target_ref.name);
            }
            "ConfigMap" => {
                let c: ConfigMap = serde_json::from_value(doc.clone()).unwrap();
                assert!(c.data.unwrap().contains_key("CAXTON_AGENT"));
            }
            "AnalysisTemplate" => {
                let a: AnalysisTemplate = serde_json::from_value(doc.clone()).unwrap();
                assert!(!a.spec.metrics.is_empty());
            }
            "Deployment" | "Rollout" => {}
            other => panic!("unexpected kind {other}"),
        }
    }
    // An autoscaled workload has no replica count; the others have one.
    for (name, w) in &workloads {
        assert_eq!(w.replicas.is_none(), autoscaled.contains(name), "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_valid_fleet_gives_manifests_that_parse_back_with_consistent_selectors(spec in fleet()) {
        let fleet = Fleet::from_json(&spec.to_string()).expect("a valid spec is accepted");
        for target in [Target::Kubernetes, Target::Argo] {
            let shadow = fleet.agents.iter().position(|a| {
                a.rollout.as_ref().is_some_and(|r| r.spec.strategy.name() == "shadow")
            });
            let objects = match (caxton_k8s::manifests(&fleet, target), shadow) {
                (Ok(objects), None) => objects,
                (Ok(objects), Some(_)) if target == Target::Kubernetes => objects,
                // Argo Rollouts has no shadow traffic: refused, naming the first such agent.
                (Err(error), Some(index)) if target == Target::Argo => {
                    let path = format!("fleet.agents[{index}].rollout.strategy");
                    prop_assert_eq!(error.path(), Some(path.as_str()));
                    continue;
                }
                (result, _) => panic!("{target}: unexpected {result:?}"),
            };
            let yaml = caxton_k8s::to_yaml(&objects).unwrap();
            let from_yaml: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("the YAML parses back");
            let from_json: Vec<Value> =
                serde_json::from_str(&caxton_k8s::to_json(&objects).unwrap()).unwrap();
            prop_assert_eq!(&from_yaml, &from_json);
            prop_assert_eq!(from_yaml.len(), objects.len());
            check_documents(&fleet, target, &from_yaml);
        }
    }
}
