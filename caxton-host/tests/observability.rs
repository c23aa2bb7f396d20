//! One trace per rollout, metric labels as documented, structured rollout events. The
//! rollout runs on the host's own thread, so this binary installs its subscriber and
//! recorder globally and holds a single test.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use caxton_host::{DeployRequest, SessionMode};
use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::span::Attributes;
use tracing::{Id, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone)]
struct SpanRecord {
    id: u64,
    name: String,
    parent: Option<u64>,
    deployment: Option<String>,
}

/// Records every span with its parent.
struct Tree(Arc<Mutex<Vec<SpanRecord>>>);

struct DeploymentField(Option<String>);

impl tracing::field::Visit for DeploymentField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "deployment_id" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Tree {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent().map(|p| p.id().into_u64()));
        let mut field = DeploymentField(None);
        attrs.record(&mut field);
        self.0.lock().unwrap().push(SpanRecord {
            id: id.into_u64(),
            name: attrs.metadata().name().to_owned(),
            parent,
            deployment: field.0,
        });
    }
}

#[test]
fn a_rollout_is_one_trace_and_its_metrics_carry_the_documented_labels() {
    let spans = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Tree(Arc::clone(&spans))),
    )
    .unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();

    let host = host();
    let agent = agent("orders");
    let v1 = first_version(
        &host,
        &agent,
        json_agent("receipt", "1"),
        SessionMode::Stateless,
    );
    let traffic = Traffic::start(&host, &agent, JSON_MESSAGE);
    let canary = spec(
        r#"{"deployment": {"strategy": "canary",
            "stages": [{"canary": {"weight": "50%", "hold": "2s"}}, {"full": "100%"}],
            "rollback_on": ["error_rate > 5%"], "check_interval": "250ms", "min_requests": 10,
            "judge": "off"}}"#,
    );
    let v2 = deploy_and_wait(
        &host,
        DeployRequest::builder(agent.clone(), json_agent("error", "2"))
            .label("v2")
            .rollout(canary)
            .build(),
    );
    traffic.stop();

    // The trace of v2's rollout: one root, everything else below it.
    let recorded: Vec<SpanRecord> = spans.lock().unwrap().clone();
    let spans = &recorded;
    let by_id: BTreeMap<u64, &SpanRecord> = spans.iter().map(|s| (s.id, s)).collect();
    let root_of = |span: &SpanRecord| -> u64 {
        let mut id = span.id;
        let mut parent = span.parent;
        while let Some(up) = parent.and_then(|p| by_id.get(&p)) {
            id = up.id;
            parent = up.parent;
        }
        id
    };
    // Every span of v2's rollout (they name its deployment) hangs off one root.
    let ours: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.deployment.as_deref() == Some(v2.deployment.id.as_str()))
        .collect();
    assert!(!ours.is_empty(), "{spans:#?}");
    let root_ids: std::collections::BTreeSet<u64> = ours.iter().map(|s| root_of(s)).collect();
    assert_eq!(root_ids.len(), 1, "one trace per rollout: {spans:#?}");
    let root = by_id[root_ids.iter().next().unwrap()];
    assert_eq!(
        root.name, "deployment.create",
        "the root is deployment.create"
    );
    assert!(
        spans
            .iter()
            .all(|s| !(s.name.starts_with("validation.") && s.parent.is_none())),
        "no validation span is a root: {spans:#?}"
    );
    let tree: Vec<&SpanRecord> = spans.iter().filter(|s| root_of(s) == root.id).collect();
    let names: Vec<&str> = tree.iter().map(|s| s.name.as_str()).collect();
    for child in [
        "validation.static",
        "validation.sandbox",
        "validation.contracts",
        "validation.resources",
        "canary.50_percent",
        "deployment.finalize",
    ] {
        let span = tree
            .iter()
            .find(|s| s.name == child)
            .unwrap_or_else(|| panic!("no {child} under deployment.create: {names:?}"));
        assert_eq!(
            span.parent,
            Some(root.id),
            "{child} is a child of deployment.create"
        );
    }
    // v1's rollout is a trace of its own.
    let v1_roots: std::collections::BTreeSet<u64> = spans
        .iter()
        .filter(|s| s.deployment.as_deref() == Some(v1.deployment.id.as_str()))
        .map(root_of)
        .collect();
    assert!(
        !v1_roots.contains(&root.id),
        "v1's rollout is not in v2's trace"
    );

    // Metrics: status and version labels as documented.
    let mut durations = Vec::new();
    let mut active = Vec::new();
    let mut messages = 0u64;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: BTreeMap<String, String> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        match (key.name(), value) {
            ("caxton_deployment_duration_seconds", DebugValue::Histogram(_)) => {
                durations.push(labels)
            }
            ("caxton_agent_version_active", DebugValue::Gauge(v)) => active.push((labels, v.0)),
            ("caxton_agent_messages_total", DebugValue::Counter(n)) => messages += n,
            _ => {}
        }
    }
    let statuses: Vec<&str> = durations.iter().map(|l| l["status"].as_str()).collect();
    assert!(statuses.contains(&"success"), "{statuses:?}");
    assert!(statuses.contains(&"rolled_back"), "{statuses:?}");
    assert!(
        active
            .iter()
            .any(|(l, v)| l["version"] == "v1" && *v == 1.0),
        "{active:?}"
    );
    assert!(
        active
            .iter()
            .any(|(l, v)| l["version"] == "v2" && *v == 0.0),
        "{active:?}"
    );
    assert!(messages > 0);

    // Rollout events as JSON carry what operators filter on.
    let events = host.recent_events(&agent);
    let json = serde_json::to_value(events.last().unwrap()).unwrap();
    for field in ["timestamp", "event", "agent_id", "deployment_id", "version"] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
}
