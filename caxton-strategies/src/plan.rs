//! The plan of a rollout: its steps and timeline, without running anything.

use serde::Serialize;

use crate::builtin::{StrategyConfig, canary_stage_name, rainbow_stage_name};
use crate::config::Gates;
use crate::duration::HumanDuration;
use crate::shadow::ShadowAspect;

/// Time limits before the candidate sees traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanPreflight {
    /// The longest validation may take, in seconds.
    pub validate_s: f64,
    /// The longest warm-up may take, in seconds.
    pub warm_up_s: f64,
}

/// One step of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStep {
    /// The stage, as in rollout events: `canary.5_percent`, `blue_green.cleanup`.
    pub stage: String,
    /// When it starts, in seconds after the candidate is ready for traffic.
    pub starts_at_s: f64,
    /// How long it lasts at least, in seconds (holds may be extended).
    pub duration_s: f64,
    /// The candidate's share of traffic during the step, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    /// What happens, for people.
    pub description: String,
}

/// The judge's settings, as planned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanJudge {
    /// Confidence, e.g. `0.95`.
    pub confidence: f64,
    /// Tolerated regression, e.g. `0.10`.
    pub tolerance: f64,
    /// Samples needed on each side.
    pub min_samples: usize,
}

/// One gate that decides a rollout: a rollback condition or the judge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanGate {
    /// `condition` or `judge`.
    pub kind: &'static str,
    /// What it checks, for people: `error_rate > 1%`, or the judge's settings.
    pub rule: String,
    /// When it is checked: `every check interval` or `at the end of each hold`.
    pub when: String,
    /// How often it is checked, in seconds (conditions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_interval_s: Option<f64>,
    /// Requests the candidate must have handled in the step before the gate may decide.
    pub min_requests: u64,
    /// How sure a condition must be before it decides, as a fraction (conditions): it
    /// trips when the data show it holds at this confidence, shared among the step's
    /// checks, and lets a step end only when they show it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// A rollout's plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The strategy.
    pub strategy: String,
    /// Validation and warm-up limits.
    pub preflight: PlanPreflight,
    /// The timeline, from the moment the candidate is ready for traffic.
    pub steps: Vec<PlanStep>,
    /// Rollback conditions, in canonical form.
    pub rollback_on: Vec<String>,
    /// How often conditions are checked, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_interval_s: Option<f64>,
    /// Requests the candidate must handle in a step before anything is decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// How sure the conditions must be before they decide, as a fraction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The statistical judge, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<PlanJudge>,
    /// Every gate that can roll the rollout back, and nothing else: the spec's conditions
    /// and, when the spec turns it on, the judge.
    pub gates: Vec<PlanGate>,
    /// The timeline's length without extensions or pauses, in seconds.
    pub nominal_duration_s: f64,
    /// How the rollout deals with thin data, pauses and deadlines.
    pub notes: Vec<String>,
}

impl Plan {
    /// The plan of `strategy`.
    pub fn of(strategy: &StrategyConfig) -> Plan {
        let preflight = strategy.preflight();
        let mut plan = Plan {
            strategy: strategy.name().to_owned(),
            preflight: PlanPreflight {
                validate_s: preflight.validate.as_secs_f64(),
                warm_up_s: preflight.warm_up.as_secs_f64(),
            },
            steps: Vec::new(),
            rollback_on: Vec::new(),
            check_interval_s: None,
            min_requests: None,
            confidence: None,
            judge: None,
            gates: Vec::new(),
            nominal_duration_s: 0.0,
            notes: Vec::new(),
        };
        if let Some(gates) = strategy.gates() {
            // Only weighted steps and shadow runs hold for data or a judgement.
            let holds = match strategy {
                StrategyConfig::Canary(_) | StrategyConfig::Shadow(_) => true,
                StrategyConfig::Rainbow(rainbow) => rainbow.steps.is_some(),
                _ => false,
            };
            let judged = matches!(
                strategy,
                StrategyConfig::Canary(_) | StrategyConfig::Rainbow(_)
            ) && holds;
            plan.gates(gates, holds, judged);
        }
        let mut at = 0.0;
        let mut push = |plan: &mut Plan,
                        stage: &str,
                        duration: f64,
                        percentage: Option<f64>,
                        description: String| {
            plan.steps.push(PlanStep {
                stage: stage.to_owned(),
                starts_at_s: at,
                duration_s: duration,
                percentage,
                description,
            });
            at += duration;
        };
        match strategy {
            StrategyConfig::Direct(config) => {
                push(
                    &mut plan,
                    "direct.switch",
                    0.0,
                    Some(100.0),
                    "switch all traffic to the candidate".to_owned(),
                );
                push(
                    &mut plan,
                    "direct.drain",
                    config.drain_timeout.as_secs_f64(),
                    None,
                    format!(
                        "drain and retire the old version (closed after {})",
                        HumanDuration(config.drain_timeout)
                    ),
                );
            }
            StrategyConfig::BlueGreen(config) => {
                push(
                    &mut plan,
                    "blue_green.switch",
                    0.0,
                    Some(100.0),
                    "check the warm candidate, then switch all traffic at once".to_owned(),
                );
                push(
                    &mut plan,
                    "blue_green.cleanup",
                    config.cleanup.as_secs_f64(),
                    Some(100.0),
                    format!(
                        "keep the old version warm for {}; rollback is one atomic switch back",
                        HumanDuration(config.cleanup)
                    ),
                );
                push(
                    &mut plan,
                    "blue_green.drain",
                    config.gates.drain_timeout.as_secs_f64(),
                    None,
                    drain_text(&config.gates),
                );
            }
            StrategyConfig::Canary(config) => {
                let judge = config.gates.judge.map_or_else(String::new, |j| {
                    format!(
                        ", then compare latency with the baseline ({}% confidence, {}% tolerance)",
                        round(j.confidence() * 100.0),
                        round(j.tolerance() * 100.0)
                    )
                });
                for step in config.steps.steps() {
                    push(
                        &mut plan,
                        &canary_stage_name(step.weight),
                        step.hold.as_secs_f64(),
                        Some(step.weight.percent()),
                        format!(
                            "canary {} for {}{judge}",
                            step.weight,
                            HumanDuration(step.hold)
                        ),
                    );
                }
                push(
                    &mut plan,
                    "canary.full",
                    0.0,
                    Some(100.0),
                    "promote to 100%".to_owned(),
                );
                if !config.cleanup.is_zero() {
                    push(
                        &mut plan,
                        "canary.cleanup",
                        config.cleanup.as_secs_f64(),
                        Some(100.0),
                        format!(
                            "keep the old version warm for {}; rollback stays instant",
                            HumanDuration(config.cleanup)
                        ),
                    );
                }
                push(
                    &mut plan,
                    "canary.drain",
                    config.gates.drain_timeout.as_secs_f64(),
                    None,
                    drain_text(&config.gates),
                );
            }
            StrategyConfig::Shadow(settings) => {
                let aspects: Vec<&str> = settings
                    .compare
                    .iter()
                    .map(|a| match a {
                        ShadowAspect::OutputEquivalence => "output equivalence",
                        ShadowAspect::PerformanceMetrics => "performance",
                        ShadowAspect::ResourceUsage => "resource use",
                    })
                    .collect();
                push(
                    &mut plan,
                    "shadow.mirror",
                    settings.duration.as_secs_f64(),
                    Some(settings.sample.percent()),
                    format!(
                        "mirror {} of traffic for {}; the candidate never serves a reply",
                        settings.sample,
                        HumanDuration(settings.duration)
                    ),
                );
                push(
                    &mut plan,
                    "shadow.report",
                    0.0,
                    None,
                    format!(
                        "compare {} with production: promote if all pass, roll back if one fails, pause for a person otherwise",
                        aspects.join(", ")
                    ),
                );
                push(
                    &mut plan,
                    "shadow.switch",
                    0.0,
                    Some(100.0),
                    "switch all traffic to the candidate".to_owned(),
                );
                push(
                    &mut plan,
                    "shadow.drain",
                    settings.gates.drain_timeout.as_secs_f64(),
                    None,
                    drain_text(&settings.gates),
                );
            }
            StrategyConfig::Rainbow(config) => {
                for step in config.steps.iter().flat_map(|steps| steps.steps()) {
                    push(
                        &mut plan,
                        &rainbow_stage_name(step.weight),
                        step.hold.as_secs_f64(),
                        Some(step.weight.percent()),
                        format!(
                            "send {} of new sessions to the candidate for {}; sessions already pinned stay where they are",
                            step.weight,
                            HumanDuration(step.hold)
                        ),
                    );
                }
                push(
                    &mut plan,
                    "rainbow.switch",
                    0.0,
                    Some(100.0),
                    format!(
                        "send new sessions to the candidate; sessions idle for {} lose their pin",
                        HumanDuration(config.session_idle_timeout)
                    ),
                );
                push(
                    &mut plan,
                    "rainbow.drain",
                    config.forced_drain_after.as_secs_f64(),
                    None,
                    format!(
                        "old versions serve their pinned sessions until they end; what is left after {} moves to the candidate",
                        HumanDuration(config.forced_drain_after)
                    ),
                );
                plan.notes.push(format!(
                    "at most {} versions serve at once; older ones beyond that are closed at the switch",
                    config.max_live_versions
                ));
            }
        }
        plan.nominal_duration_s = at;
        plan
    }

    /// Records the gates; `judged` says whether the strategy runs the judge at the end of
    /// its holds (a shadow's judge compares only in its report, listed with its steps).
    fn gates(&mut self, gates: &Gates, holds: bool, judged: bool) {
        self.rollback_on = gates.rollback_on.iter().map(|c| c.to_string()).collect();
        self.check_interval_s = Some(gates.check_interval.as_secs_f64());
        self.min_requests = Some(gates.min_requests);
        self.confidence = Some(gates.confidence);
        self.judge = gates.judge.map(|j| PlanJudge {
            confidence: j.confidence(),
            tolerance: j.tolerance(),
            min_samples: j.min_samples(),
        });
        let every = HumanDuration(gates.check_interval);
        self.gates = gates
            .rollback_on
            .iter()
            .map(|condition| PlanGate {
                kind: "condition",
                rule: condition.to_string(),
                when: format!("every {every}"),
                check_interval_s: Some(gates.check_interval.as_secs_f64()),
                min_requests: gates.min_requests,
                confidence: Some(gates.confidence),
            })
            .collect();
        if let (true, Some(judge)) = (judged, gates.judge) {
            self.gates.push(PlanGate {
                kind: "judge",
                rule: format!(
                    "candidate latency worse than the baseline's by more than {}% (Mann-Whitney, {}% confidence, at least {} samples a side)",
                    round(judge.tolerance() * 100.0),
                    round(judge.confidence() * 100.0),
                    judge.min_samples()
                ),
                when: "at the end of each hold".to_owned(),
                check_interval_s: None,
                min_requests: gates.min_requests,
                confidence: None,
            });
        }
        if holds {
            if !gates.rollback_on.is_empty() {
                self.notes.push(format!(
                    "a step goes on only when the data show every condition within bounds at \
                     {}% confidence; a condition rolls back when they show it breached at {}% \
                     confidence, shared among the step's checks",
                    round(gates.confidence * 100.0),
                    round(gates.confidence * 100.0)
                ));
            }
            let wanting = if self.gates.iter().any(|g| g.kind == "judge") {
                "too little traffic, inconclusive evidence or an inconclusive judgement"
            } else if gates.rollback_on.is_empty() {
                "too little traffic"
            } else {
                "too little traffic or inconclusive evidence"
            };
            self.notes.push(format!(
                "{wanting} extends a hold by up to {}, then the rollout pauses for a person; \
                 a pause for want of evidence ends by itself once the evidence is in",
                HumanDuration(gates.max_extension)
            ));
        }
        self.notes.push(format!(
            "a pause with no decision for {} aborts the rollout and restores the old version",
            HumanDuration(gates.pause_timeout)
        ));
    }

    /// The plan for people: header lines, then `(offset, text)` for each step.
    pub fn human(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut header = vec![format!(
            "Plan: {} rollout, {} of traffic steps after validation (up to {}) and warm-up (up to {})",
            self.strategy,
            HumanDuration(std::time::Duration::from_secs_f64(self.nominal_duration_s)),
            HumanDuration(std::time::Duration::from_secs_f64(
                self.preflight.validate_s
            )),
            HumanDuration(std::time::Duration::from_secs_f64(self.preflight.warm_up_s)),
        )];
        if self.check_interval_s.is_some() {
            if self.gates.is_empty() {
                header.push("No gate decides: no rollback conditions, no judge".to_owned());
            } else {
                header.push("Gates that decide (nothing else rolls back):".to_owned());
                for gate in &self.gates {
                    let sure = gate.confidence.map_or_else(String::new, |c| {
                        format!(", at {}% confidence", round(c * 100.0))
                    });
                    header.push(format!(
                        "  {} {}, {} once {} requests are in{sure}",
                        gate.kind, gate.rule, gate.when, gate.min_requests
                    ));
                }
            }
        }
        let steps = self
            .steps
            .iter()
            .map(|s| {
                (
                    HumanDuration(std::time::Duration::from_secs_f64(s.starts_at_s)).to_string(),
                    s.description.clone(),
                )
            })
            .collect();
        (header, steps)
    }
}

fn drain_text(gates: &Gates) -> String {
    format!(
        "drain and retire the old version (closed after {})",
        HumanDuration(gates.drain_timeout)
    )
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RolloutSpec;

    #[test]
    fn canary_plan_has_the_timeline_of_the_spec() {
        let spec =
            RolloutSpec::from_compact(Some("5:5m,25:10m,50:10m"), Some("error_rate>1%,p99>100ms"))
                .unwrap();
        let plan = Plan::of(&spec.strategy);
        let stages: Vec<&str> = plan.steps.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            stages,
            [
                "canary.5_percent",
                "canary.25_percent",
                "canary.50_percent",
                "canary.full",
                "canary.drain"
            ]
        );
        let starts: Vec<f64> = plan.steps.iter().map(|s| s.starts_at_s).collect();
        assert_eq!(starts, [0.0, 300.0, 900.0, 1500.0, 1500.0]);
        assert_eq!(plan.nominal_duration_s, 1530.0);
        assert_eq!(plan.rollback_on, ["error_rate > 1%", "p99_latency > 100ms"]);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["steps"][1]["percentage"], 25.0);
        let (header, steps) = plan.human();
        assert!(
            header[0].contains("canary rollout, 25m30s"),
            "{}",
            header[0]
        );
        assert_eq!(steps[1].0, "5m");
    }

    #[test]
    fn the_plan_lists_every_gate_that_decides_and_the_judge_only_when_asked_for() {
        let yaml = "deployment:\n  strategy: canary\n  check_interval: 30s\n  min_requests: 50\n  rollback_on: [error_rate > 1%, p99_latency > 100ms]\n";
        let plan = Plan::of(&RolloutSpec::from_yaml(yaml).unwrap().strategy);
        let kinds: Vec<&str> = plan.gates.iter().map(|g| g.kind).collect();
        assert_eq!(kinds, ["condition", "condition"]);
        assert_eq!(plan.gates[0].rule, "error_rate > 1%");
        assert_eq!(plan.gates[1].check_interval_s, Some(30.0));
        assert!(plan.gates.iter().all(|g| g.min_requests == 50));
        assert!(plan.judge.is_none());
        let (header, _) = plan.human();
        assert!(
            header
                .iter()
                .any(|l| l.contains("error_rate > 1%, every 30s once 50 requests are in")),
            "{header:?}"
        );
        assert!(!header.iter().any(|l| l.contains("judge")), "{header:?}");

        let judged = format!("{yaml}  judge: {{ latency: 10% }}\n");
        let plan = Plan::of(&RolloutSpec::from_yaml(&judged).unwrap().strategy);
        let judge = plan.gates.last().unwrap();
        assert_eq!(judge.kind, "judge");
        assert!(judge.rule.contains("10%"), "{}", judge.rule);
        assert_eq!(judge.when, "at the end of each hold");
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["gates"].as_array().unwrap().len(), 3);
        assert_eq!(json["gates"][2]["kind"], "judge");
    }

    #[test]
    fn every_strategy_has_a_plan() {
        for yaml in [
            "deployment:\n  strategy: direct\n",
            "deployment:\n  strategy: blue-green\n",
            "deployment:\n  strategy: shadow\n  duration: 15m\n",
            "deployment:\n  strategy: rainbow\n",
        ] {
            let spec = RolloutSpec::from_yaml(yaml).unwrap();
            let plan = Plan::of(&spec.strategy);
            assert!(!plan.steps.is_empty(), "{yaml}");
            assert_eq!(plan.strategy, spec.strategy.name());
        }
        let blue_green = Plan::of(
            &RolloutSpec::from_yaml("deployment:\n  strategy: blue-green\n")
                .unwrap()
                .strategy,
        );
        assert_eq!(blue_green.steps[1].duration_s, 300.0);
        assert_eq!(blue_green.preflight.warm_up_s, 60.0);
    }

    #[test]
    fn a_rainbow_with_stages_ramps_new_sessions_before_the_switch() {
        let spec = RolloutSpec::from_yaml(
            "deployment:\n  strategy: rainbow\n  forced_drain_after: 1h\n  stages:\n    - canary: { weight: 5%, hold: 5m }\n    - canary: { weight: 25%, hold: 10m }\n    - full: 100%\n",
        )
        .unwrap();
        let plan = Plan::of(&spec.strategy);
        let stages: Vec<&str> = plan.steps.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            stages,
            [
                "rainbow.5_percent",
                "rainbow.25_percent",
                "rainbow.switch",
                "rainbow.drain"
            ]
        );
        let starts: Vec<f64> = plan.steps.iter().map(|s| s.starts_at_s).collect();
        assert_eq!(starts, [0.0, 300.0, 900.0, 900.0]);
        assert_eq!(plan.steps[0].percentage, Some(5.0));
        assert!(plan.steps[0].description.contains("5% of new sessions"));
        assert!(plan.notes.iter().any(|n| n.contains("extends a hold")));
        assert_eq!(plan.nominal_duration_s, 900.0 + 3_600.0);
    }
}
