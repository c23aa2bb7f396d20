//! Argo Rollouts objects: the [`Rollout`] of an agent and the [`AnalysisTemplate`] of its
//! rollback conditions, as serde types for the fields Caxton emits (API group
//! `argoproj.io/v1alpha1`), and the mapping from a rollout spec.
//!
//! | rollout spec | Argo Rollouts |
//! |---|---|
//! | `canary` stages `{ weight, hold }` | `setWeight` then `pause: { duration }` |
//! | `rollback_on` (canary, rainbow) | background `analysis` from the first step on |
//! | `blue-green` | `activeService`/`previewService`, `autoPromotionEnabled: true`, `scaleDownDelaySeconds` from `cleanup`, `rollback_on` as `postPromotionAnalysis` |
//! | `rainbow` with stages | a canary with the same steps |
//! | `rainbow` without stages | blue-green; old pods stay for `forced_drain_after` |
//! | `direct`, or no rollout | a canary without steps: all at once |
//! | `shadow` | refused: Argo Rollouts mirrors traffic only through a service mesh |

use std::collections::BTreeMap;
use std::time::Duration;

use caxton_strategies::StrategyConfig;
use caxton_strategies::condition::{Comparison, Condition, LatencyStat, Metric, Threshold};
use caxton_strategies::config::{CanarySteps, Gates};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::Manifest;
use crate::error::FleetError;
use crate::fleet::{Agent, Fleet};
use crate::kubernetes;

/// The API version of the Argo Rollouts objects.
pub const API_VERSION: &str = "argoproj.io/v1alpha1";

/// An Argo Rollouts `Rollout`: a Deployment whose updates follow a strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// `argoproj.io/v1alpha1`.
    pub api_version: String,
    /// `Rollout`.
    pub kind: String,
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// What runs and how it is updated.
    pub spec: RolloutSpec,
}

/// The spec of a [`Rollout`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// Pods to run; absent when an autoscaler decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Old ReplicaSets kept for rolling back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Which pods are the Rollout's (stable labels only).
    pub selector: LabelSelector,
    /// The pods.
    pub template: PodTemplateSpec,
    /// How a new template is rolled out.
    pub strategy: RolloutStrategy,
}

/// Canary or blue-green; exactly one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStrategy {
    /// Weighted steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// An atomic switch between an active and a preview Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
}

/// A canary: weighted steps, with background analysis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStrategy {
    /// The Service that selects the stable pods.
    pub stable_service: String,
    /// The Service that selects the canary pods.
    pub canary_service: String,
    /// The steps; none means all at once.
    #[serde(default)]
    pub steps: Vec<CanaryStep>,
    /// Analysis running in the background while the steps go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
}

/// One canary step: either a weight or a pause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStep {
    /// The canary's share of traffic, in whole percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_weight: Option<i32>,
    /// A hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

/// A hold of a canary step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    /// How long, e.g. `300s`; absent waits for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Analysis that runs alongside canary steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackgroundAnalysis {
    /// The templates to run.
    pub templates: Vec<TemplateRef>,
    /// Values of the templates' arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<AnalysisArg>,
    /// The step (index) the analysis starts at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_step: Option<i32>,
}

/// Analysis before or after a blue-green switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutAnalysis {
    /// The templates to run.
    pub templates: Vec<TemplateRef>,
    /// Values of the templates' arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<AnalysisArg>,
}

/// A reference to an [`AnalysisTemplate`] by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateRef {
    /// The template's name, in the Rollout's namespace.
    pub template_name: String,
}

/// A value for an analysis argument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisArg {
    /// The argument.
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A value Argo Rollouts fills in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgValueFrom>,
}

/// Where Argo Rollouts takes an argument's value from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgValueFrom {
    /// `Latest` (the new pods) or `Stable` (the pods in production): the
    /// `rollouts-pod-template-hash` label of those pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash_value: Option<String>,
}

/// A blue-green switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// The Service that takes the traffic.
    pub active_service: String,
    /// The Service that reaches the new pods before the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Switch as soon as the new pods are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// How long the old pods stay up after the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay_seconds: Option<i32>,
    /// Analysis after the switch, while the old pods are still up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<RolloutAnalysis>,
}

/// An Argo Rollouts `AnalysisTemplate`: metrics whose failure aborts a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplate {
    /// `argoproj.io/v1alpha1`.
    pub api_version: String,
    /// `AnalysisTemplate`.
    pub kind: String,
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// Arguments and metrics.
    pub spec: AnalysisTemplateSpec,
}

/// The spec of an [`AnalysisTemplate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplateSpec {
    /// Arguments the queries use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<TemplateArg>,
    /// One metric per rollback condition.
    pub metrics: Vec<AnalysisMetric>,
}

/// An argument of an [`AnalysisTemplate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateArg {
    /// The name the queries use as `{{args.NAME}}`.
    pub name: String,
    /// A default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One measured condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisMetric {
    /// Its name in the analysis run.
    pub name: String,
    /// How often it is measured, e.g. `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How many measurements are taken; absent, the metric is measured until the
    /// rollout ends (background analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    /// Failed measurements tolerated before the analysis fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<i32>,
    /// When a measurement fails, e.g. `result[0] > 0.01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Where the value comes from.
    pub provider: MetricProvider,
}

/// The source of a metric.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricProvider {
    /// A Prometheus query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetric>,
}

/// A Prometheus instant query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusMetric {
    /// The Prometheus server.
    pub address: String,
    /// The PromQL query; `result[0]` is its first value.
    pub query: String,
}

/// The Argo target's objects for the agent at `index` of the fleet.
pub(crate) fn agent_objects(
    fleet: &Fleet,
    agent: &Agent,
    index: usize,
) -> Result<Vec<Manifest>, FleetError> {
    let path = format!("fleet.agents[{index}].rollout");
    let name = fleet.object_name(agent);
    let plan = plan(agent, &path)?;
    let config = kubernetes::config_map(fleet, agent, false);
    let template = kubernetes::pod_template(fleet, agent, &config, Some(&agent.module));
    let mut out = vec![Manifest::ConfigMap(config)];
    // After a blue-green switch the analysis must end for the rollout to finish: it
    // measures through the time the old pods stay up.
    let measured_for = match plan.shape {
        Shape::BlueGreen { scale_down_delay } => Some(scale_down_delay),
        Shape::Canary(_) => None,
    };
    let analysis = match &plan.gates {
        Some(gates) if !gates.rollback_on.is_empty() => {
            let template = analysis_template(fleet, agent, gates, measured_for, &path)?;
            let relative = gates.rollback_on.iter().any(Condition::is_relative);
            out.push(Manifest::AnalysisTemplate(template));
            let mut args = vec![hash_arg("canary-hash", "Latest")];
            if relative {
                args.push(hash_arg("stable-hash", "Stable"));
            }
            Some(RolloutAnalysis {
                templates: vec![TemplateRef {
                    template_name: name.clone(),
                }],
                args,
            })
        }
        _ => None,
    };
    let strategy = match plan.shape {
        Shape::Canary(steps) => {
            let canary_service = format!("{name}-canary");
            out.push(Manifest::Service(kubernetes::service(fleet, agent, &name)));
            out.push(Manifest::Service(kubernetes::service(
                fleet,
                agent,
                &canary_service,
            )));
            let analysis = analysis
                .filter(|_| !steps.is_empty())
                .map(|a| BackgroundAnalysis {
                    templates: a.templates,
                    args: a.args,
                    // From the first hold on: the first step sets the canary's weight.
                    starting_step: Some(1),
                });
            RolloutStrategy {
                canary: Some(CanaryStrategy {
                    stable_service: name.clone(),
                    canary_service,
                    steps,
                    analysis,
                }),
                blue_green: None,
            }
        }
        Shape::BlueGreen { scale_down_delay } => {
            let preview_service = format!("{name}-preview");
            out.push(Manifest::Service(kubernetes::service(fleet, agent, &name)));
            out.push(Manifest::Service(kubernetes::service(
                fleet,
                agent,
                &preview_service,
            )));
            RolloutStrategy {
                canary: None,
                blue_green: Some(BlueGreenStrategy {
                    active_service: name.clone(),
                    preview_service: Some(preview_service),
                    auto_promotion_enabled: Some(true),
                    scale_down_delay_seconds: Some(seconds_i32(scale_down_delay)),
                    post_promotion_analysis: analysis,
                }),
            }
        }
    };
    let rollout = Rollout {
        api_version: API_VERSION.to_owned(),
        kind: "Rollout".to_owned(),
        metadata: kubernetes::metadata(fleet, agent, &name),
        spec: RolloutSpec {
            replicas: if agent.scaling.is_some() {
                None
            } else {
                Some(1)
            },
            revision_history_limit: Some(5),
            selector: kubernetes::selector(fleet, agent),
            template,
            strategy,
        },
    };
    out.push(Manifest::Rollout(Box::new(rollout)));
    if let Some(hpa) = kubernetes::autoscaler(fleet, agent, API_VERSION, "Rollout") {
        out.push(Manifest::HorizontalPodAutoscaler(hpa));
    }
    out.push(Manifest::PodDisruptionBudget(
        kubernetes::disruption_budget(fleet, agent),
    ));
    Ok(out)
}

/// What a rollout spec becomes in Argo Rollouts.
struct ArgoPlan {
    shape: Shape,
    gates: Option<Gates>,
}

enum Shape {
    Canary(Vec<CanaryStep>),
    BlueGreen { scale_down_delay: Duration },
}

fn plan(agent: &Agent, path: &str) -> Result<ArgoPlan, FleetError> {
    let Some(rollout) = &agent.rollout else {
        return Ok(ArgoPlan {
            shape: Shape::Canary(Vec::new()),
            gates: None,
        });
    };
    Ok(match &rollout.spec.strategy {
        StrategyConfig::Direct(_) => ArgoPlan {
            shape: Shape::Canary(Vec::new()),
            gates: None,
        },
        StrategyConfig::Canary(canary) => ArgoPlan {
            shape: Shape::Canary(steps(&canary.steps, &rollout.source, path)?),
            gates: Some(canary.gates.clone()),
        },
        StrategyConfig::BlueGreen(blue_green) => ArgoPlan {
            shape: Shape::BlueGreen {
                scale_down_delay: blue_green.cleanup,
            },
            gates: Some(blue_green.gates.clone()),
        },
        StrategyConfig::Rainbow(rainbow) => ArgoPlan {
            shape: match &rainbow.steps {
                Some(ramp) => Shape::Canary(steps(ramp, &rollout.source, path)?),
                None => Shape::BlueGreen {
                    scale_down_delay: rainbow.forced_drain_after,
                },
            },
            gates: Some(rainbow.gates.clone()),
        },
        StrategyConfig::Shadow(_) => {
            return Err(FleetError::unsupported(
                format!("{path}.strategy"),
                "Argo Rollouts mirrors traffic only through a service mesh; shadow rollouts run with --target kubernetes, where Caxton mirrors in-process",
            ));
        }
        other => {
            return Err(FleetError::unsupported(
                format!("{path}.strategy"),
                format!("strategy `{}` has no Argo Rollouts form", other.name()),
            ));
        }
    })
}

/// Canary steps as `setWeight` and `pause` steps. Argo Rollouts weights are whole
/// percents: a fractional one is refused, naming its stage.
fn steps(
    steps: &CanarySteps,
    source: &serde_json::Value,
    path: &str,
) -> Result<Vec<CanaryStep>, FleetError> {
    // The index of each canary stage in the spec as written, to name it in errors.
    let stage_indices: Vec<usize> = source
        .get("stages")
        .and_then(|s| s.as_array())
        .map(|stages| {
            stages
                .iter()
                .enumerate()
                .filter(|(_, s)| s.get("canary").is_some())
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (n, step) in steps.steps().iter().enumerate() {
        let bps = step.weight.bps();
        if bps % 100 != 0 {
            let at = stage_indices.get(n).map_or(format!("{path}.stages"), |i| {
                format!("{path}.stages[{i}].canary.weight")
            });
            return Err(FleetError::unsupported(
                at,
                format!(
                    "Argo Rollouts sets weights in whole percents, not {}",
                    step.weight
                ),
            ));
        }
        out.push(CanaryStep {
            set_weight: Some(i32::from(bps / 100)),
            pause: None,
        });
        if !step.hold.is_zero() {
            out.push(CanaryStep {
                set_weight: None,
                pause: Some(Pause {
                    duration: Some(format!("{}s", whole_seconds(step.hold))),
                }),
            });
        }
    }
    Ok(out)
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn seconds_i32(duration: Duration) -> i32 {
    i32::try_from(whole_seconds(duration)).unwrap_or(i32::MAX)
}

fn hash_arg(name: &str, which: &str) -> AnalysisArg {
    AnalysisArg {
        name: name.to_owned(),
        value: None,
        value_from: Some(ArgValueFrom {
            pod_template_hash_value: Some(which.to_owned()),
        }),
    }
}

/// The agent's AnalysisTemplate: one Prometheus metric per rollback condition, failing
/// when the condition holds. Queries read Caxton's message counter and latency histogram
/// of the new pods (`canary-hash`) and, for a condition relative to the baseline, of the
/// stable pods (`stable-hash`).
fn analysis_template(
    fleet: &Fleet,
    agent: &Agent,
    gates: &Gates,
    measured_for: Option<Duration>,
    path: &str,
) -> Result<AnalysisTemplate, FleetError> {
    let count = measured_for.map(|span| {
        let each = whole_seconds(gates.check_interval).max(1);
        i32::try_from(whole_seconds(span).div_ceil(each).max(1)).unwrap_or(i32::MAX)
    });
    let window = gates.check_interval.max(Duration::from_secs(60));
    let window = format!("{}s", whole_seconds(window));
    let interval = format!("{}s", whole_seconds(gates.check_interval));
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut metrics = Vec::new();
    let mut relative = false;
    for (index, condition) in gates.rollback_on.iter().enumerate() {
        let at = format!("{path}.rollback_on[{index}]");
        let selector = |hash: &str| {
            format!(
                "namespace=\"{}\",agent=\"{}\",rollouts_pod_template_hash=\"{{{{args.{hash}}}}}\"",
                fleet.namespace, agent.name
            )
        };
        let candidate = value_query(&condition.metric, &selector("canary-hash"), &window, &at)?;
        let value = match condition.threshold {
            Threshold::Absolute(_) => candidate,
            Threshold::Relative { .. } => {
                relative = true;
                let baseline =
                    value_query(&condition.metric, &selector("stable-hash"), &window, &at)?;
                format!("({candidate}) / ({baseline})")
            }
        };
        // Decide nothing until the new pods have handled `min_requests` messages; with
        // no data the query reads 0.
        let query = format!(
            "({value}) and on() (sum(increase(caxton_agent_messages_total{{{}}}[{window}])) >= {}) or on() vector(0)",
            selector("canary-hash"),
            gates.min_requests
        );
        let limit = match condition.threshold {
            Threshold::Absolute(limit) => limit,
            Threshold::Relative { factor } => factor,
        };
        let base = condition.metric.name().replace('_', "-");
        let seen = names.entry(base.clone()).or_insert(0);
        *seen += 1;
        let name = if *seen == 1 {
            base
        } else {
            format!("{base}-{seen}")
        };
        metrics.push(AnalysisMetric {
            name,
            interval: Some(interval.clone()),
            count,
            failure_limit: Some(0),
            failure_condition: Some(format!(
                "result[0] {} {}",
                symbol(condition.comparison),
                limit
            )),
            provider: MetricProvider {
                prometheus: Some(PrometheusMetric {
                    address: fleet.prometheus.clone(),
                    query,
                }),
            },
        });
    }
    let mut args = vec![TemplateArg {
        name: "canary-hash".to_owned(),
        value: None,
    }];
    if relative {
        args.push(TemplateArg {
            name: "stable-hash".to_owned(),
            value: None,
        });
    }
    Ok(AnalysisTemplate {
        api_version: API_VERSION.to_owned(),
        kind: "AnalysisTemplate".to_owned(),
        metadata: kubernetes::metadata(fleet, agent, &fleet.object_name(agent)),
        spec: AnalysisTemplateSpec { args, metrics },
    })
}

fn symbol(comparison: Comparison) -> &'static str {
    comparison.symbol()
}

/// The PromQL value of `metric` over the pods `selector` picks, in the unit the
/// condition's threshold is in (a ratio, milliseconds).
fn value_query(
    metric: &Metric,
    selector: &str,
    window: &str,
    at: &str,
) -> Result<String, FleetError> {
    Ok(match metric {
        Metric::ErrorRate => format!(
            "sum(rate(caxton_agent_messages_total{{{selector},outcome!=\"ok\"}}[{window}])) / sum(rate(caxton_agent_messages_total{{{selector}}}[{window}]))"
        ),
        Metric::Latency(LatencyStat::Mean) => format!(
            "1000 * sum(rate(caxton_agent_message_duration_seconds_sum{{{selector}}}[{window}])) / sum(rate(caxton_agent_message_duration_seconds_count{{{selector}}}[{window}]))"
        ),
        Metric::Latency(stat) => {
            let q = stat.quantile().unwrap_or(0.5);
            format!(
                "1000 * histogram_quantile({q}, sum by (le) (rate(caxton_agent_message_duration_seconds_bucket{{{selector}}}[{window}])))"
            )
        }
        other => {
            return Err(FleetError::unsupported(
                at,
                format!(
                    "`{other}` is not among the metrics Caxton exports to Prometheus (error_rate and the latencies): Argo Rollouts cannot check it; use --target kubernetes, where Caxton checks it in-process"
                ),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;

    fn objects(rollout: &str) -> Result<Vec<Manifest>, FleetError> {
        let text = format!(
            "fleet:\n  name: s\n  namespace: n\n  image: i\n  registry_secret: r\n  agents:\n    - name: a\n      module: sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\n      resources: {{ requests: {{ cpu: 1, memory: 1Gi }}, limits: {{ memory: 1Gi }} }}\n{rollout}"
        );
        crate::manifests(&Fleet::from_yaml(&text).unwrap(), Target::Argo)
    }

    fn rollout_of(objects: &[Manifest]) -> &Rollout {
        objects
            .iter()
            .find_map(|o| match o {
                Manifest::Rollout(r) => Some(&**r),
                _ => None,
            })
            .unwrap()
    }

    fn template_of(objects: &[Manifest]) -> Option<&AnalysisTemplate> {
        objects.iter().find_map(|o| match o {
            Manifest::AnalysisTemplate(t) => Some(t),
            _ => None,
        })
    }

    #[test]
    fn no_rollout_and_direct_are_a_canary_without_steps() {
        for rollout in ["", "      rollout: { strategy: direct }\n"] {
            let objects = objects(rollout).unwrap();
            let canary = rollout_of(&objects).spec.strategy.canary.clone().unwrap();
            assert!(canary.steps.is_empty());
            assert!(canary.analysis.is_none());
            assert!(template_of(&objects).is_none());
            assert_eq!(rollout_of(&objects).spec.replicas, Some(1));
        }
    }

    #[test]
    fn canary_holds_become_pauses_and_gates_a_background_analysis() {
        let objects = objects(
            "      rollout: { strategy: canary, stages: [ { canary: { weight: 10%, hold: 90s } }, { canary: { weight: 40%, hold: 0s } }, { full: 100% } ], rollback_on: [ \"p95 > 1.5s\", \"mean_latency <= 20ms\", \"p95 > 2s\" ], check_interval: 30s }\n",
        )
        .unwrap();
        let canary = rollout_of(&objects).spec.strategy.canary.clone().unwrap();
        let weights: Vec<Option<i32>> = canary.steps.iter().map(|s| s.set_weight).collect();
        assert_eq!(weights, [Some(10), None, Some(40)]);
        assert_eq!(
            canary.steps[1].pause.as_ref().unwrap().duration.as_deref(),
            Some("90s")
        );
        assert_eq!(canary.analysis.unwrap().starting_step, Some(1));
        let metrics = &template_of(&objects).unwrap().spec.metrics;
        let conditions: Vec<&str> = metrics
            .iter()
            .map(|m| m.failure_condition.as_deref().unwrap())
            .collect();
        assert_eq!(
            conditions,
            ["result[0] > 1500", "result[0] <= 20", "result[0] > 2000"]
        );
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["p95-latency", "mean-latency", "p95-latency-2"]);
        assert_eq!(metrics[0].interval.as_deref(), Some("30s"));
        assert_eq!(metrics[0].count, None);
        let query = &metrics[0].provider.prometheus.as_ref().unwrap().query;
        assert!(query.contains("histogram_quantile(0.95"), "{query}");
        assert!(
            query.contains("[60s]"),
            "a rate needs a minute of samples: {query}"
        );
    }

    #[test]
    fn blue_green_switches_at_once_and_analyses_through_the_cleanup() {
        let objects = objects(
            "      rollout: { strategy: blue-green, stages: [ { cleanup: 5m } ], rollback_on: [ \"error_rate > baseline * 2\" ] }\n",
        )
        .unwrap();
        let blue_green = rollout_of(&objects)
            .spec
            .strategy
            .blue_green
            .clone()
            .unwrap();
        assert_eq!(blue_green.active_service, "s-a");
        assert_eq!(blue_green.preview_service.as_deref(), Some("s-a-preview"));
        assert_eq!(blue_green.auto_promotion_enabled, Some(true));
        assert_eq!(blue_green.scale_down_delay_seconds, Some(300));
        let analysis = blue_green.post_promotion_analysis.unwrap();
        let args: Vec<&str> = analysis.args.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(args, ["canary-hash", "stable-hash"]);
        let metric = &template_of(&objects).unwrap().spec.metrics[0];
        assert_eq!(metric.count, Some(5));
        assert_eq!(metric.failure_condition.as_deref(), Some("result[0] > 2"));
        assert!(
            metric
                .provider
                .prometheus
                .as_ref()
                .unwrap()
                .query
                .contains("{{args.stable-hash}}")
        );
    }

    #[test]
    fn rainbow_ramps_like_a_canary_or_switches_and_drains() {
        let ramp = objects(
            "      rollout: { strategy: rainbow, stages: [ { canary: { weight: 20%, hold: 1m } }, { full: 100% } ] }\n",
        )
        .unwrap();
        assert!(rollout_of(&ramp).spec.strategy.canary.is_some());
        let switch =
            objects("      rollout: { strategy: rainbow, forced_drain_after: 2h }\n").unwrap();
        let blue_green = rollout_of(&switch)
            .spec
            .strategy
            .blue_green
            .clone()
            .unwrap();
        assert_eq!(blue_green.scale_down_delay_seconds, Some(7_200));
    }

    #[test]
    fn shadow_fractional_weights_and_unexported_metrics_are_refused() {
        let err = objects("      rollout: { strategy: shadow }\n").unwrap_err();
        assert_eq!(err.path(), Some("fleet.agents[0].rollout.strategy"));
        let err = objects(
            "      rollout: { strategy: canary, stages: [ { validate: 10s }, { canary: { weight: 12.5%, hold: 1m } } ] }\n",
        )
        .unwrap_err();
        assert_eq!(
            err.path(),
            Some("fleet.agents[0].rollout.stages[1].canary.weight")
        );
        let err = objects(
            "      rollout: { strategy: canary, rollback_on: [ \"error_rate > 1%\", \"fuel_per_message > 1e6\" ] }\n",
        )
        .unwrap_err();
        assert_eq!(err.path(), Some("fleet.agents[0].rollout.rollback_on[1]"));
    }
}
