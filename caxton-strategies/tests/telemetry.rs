//! The spans and metrics listed under Observability in `docs/architecture.md`.

use std::sync::{Arc, Mutex};

use caxton_strategies::RolloutSpec;
use caxton_strategies::sim::Simulation;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::span::Attributes;
use tracing::{Id, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Records the name of every span opened.
struct SpanNames(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for SpanNames {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        self.0
            .lock()
            .unwrap()
            .push(attrs.metadata().name().to_owned());
    }
}

fn labels(key: &metrics::Key) -> Vec<(String, String)> {
    key.labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

#[test]
fn a_rolled_back_canary_emits_the_documented_spans_and_metrics() {
    let spec =
        RolloutSpec::from_compact(Some("5:5m,25:10m,50:10m"), Some("error_rate>1%")).unwrap();
    // Healthy enough to pass the 5% step, failing at 25%: two stage spans.
    let simulation = Simulation::new(
        spec,
        "error_rate=0.1%,p99=40ms,rps=50".parse().unwrap(),
        "error_rate=1.3%,p99=40ms".parse().unwrap(),
    )
    .seed(3);
    let names = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(SpanNames(names.clone()));
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let report = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || simulation.run_blocking(None).unwrap())
    });
    assert_eq!(
        report.outcome.as_str(),
        "rolled_back",
        "{:?}",
        report.outcome
    );

    let names = names.lock().unwrap().clone();
    for expected in [
        "deployment.create",
        "canary.5_percent",
        "deployment.finalize",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no span {expected} in {names:?}"
        );
    }

    let mut duration = None;
    let mut rollbacks = None;
    let mut active = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        match (key.name(), value) {
            ("caxton_deployment_duration_seconds", DebugValue::Histogram(values)) => {
                duration = Some((
                    labels(key),
                    values.iter().map(|v| v.0).collect::<Vec<f64>>(),
                ));
            }
            ("caxton_deployment_rollback_total", DebugValue::Counter(count)) => {
                rollbacks = Some((labels(key), count));
            }
            ("caxton_agent_version_active", DebugValue::Gauge(value)) => {
                active.push((labels(key), value.0));
            }
            _ => {}
        }
    }
    let (duration_labels, values) = duration.expect("a duration was recorded");
    assert!(duration_labels.contains(&("strategy".into(), "canary".into())));
    assert!(duration_labels.contains(&("status".into(), "rolled_back".into())));
    assert_eq!(values, [report.duration().as_secs_f64()]);
    assert_eq!(
        rollbacks,
        Some((vec![("reason".into(), "condition".into())], 1))
    );
    // Two versions were active; after the rollback only the baseline is.
    assert_eq!(active.len(), 2, "{active:?}");
    assert_eq!(active.iter().filter(|(_, v)| *v == 1.0).count(), 1);
    assert!(active.iter().all(|(labels, _)| {
        labels
            .iter()
            .any(|(k, v)| k == "agent" && v == "simulated-agent")
    }));
}
