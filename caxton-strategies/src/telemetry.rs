//! Spans named after rollout stages (`canary.5_percent`, `blue_green.cleanup`) and the
//! metrics listed under Observability in `docs/architecture.md`.
//!
//! `tracing` names spans with `&'static str` at compile time, but stage names come from
//! the rollout (a canary step of 12.5 % is `canary.12_5_percent`). Each distinct stage
//! name gets one callsite, made once and kept for the life of the process; their number
//! is capped so that a host inventing names without end cannot grow memory without end.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tracing::callsite::{Callsite, Identifier};
use tracing::field::FieldSet;
use tracing::metadata::Kind;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span};

/// The most stage names that get a span of their own; later ones share `rollout.stage`.
const MAX_STAGE_CALLSITES: usize = 1_024;

const FIELDS: &[&str] = &["agent_id", "deployment_id", "stage"];

struct StageCallsite {
    metadata: OnceLock<Metadata<'static>>,
}

impl Callsite for StageCallsite {
    fn set_interest(&self, _interest: Interest) {
        // Interest is asked of the dispatcher each time a span is made; nothing to cache.
    }

    fn metadata(&self) -> &Metadata<'_> {
        self.metadata
            .get()
            .expect("stage callsites are initialised before they are registered")
    }
}

fn callsite(name: &str) -> &'static StageCallsite {
    static CALLSITES: OnceLock<Mutex<HashMap<String, &'static StageCallsite>>> = OnceLock::new();
    let mut callsites = CALLSITES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(callsite) = callsites.get(name) {
        return callsite;
    }
    let name = if callsites.len() >= MAX_STAGE_CALLSITES {
        "rollout.stage"
    } else {
        name
    };
    if let Some(callsite) = callsites.get(name) {
        return callsite;
    }
    // Leaked once per distinct name (at most MAX_STAGE_CALLSITES + 1): callsites must
    // live for the rest of the process, as `tracing` keeps references to them.
    let callsite: &'static StageCallsite = Box::leak(Box::new(StageCallsite {
        metadata: OnceLock::new(),
    }));
    let static_name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let metadata = Metadata::new(
        static_name,
        "caxton_strategies::stage",
        Level::INFO,
        Some(file!()),
        Some(line!()),
        Some(module_path!()),
        FieldSet::new(FIELDS, Identifier(callsite)),
        Kind::SPAN,
    );
    let _ = callsite.metadata.set(metadata);
    tracing::callsite::register(callsite);
    callsites.insert(name.to_owned(), callsite);
    callsite
}

/// An INFO span named `stage`, child of `parent`, with the agent, deployment and stage as
/// fields.
pub(crate) fn stage_span(parent: &Span, stage: &str, agent: &str, deployment: &str) -> Span {
    let callsite = callsite(stage);
    let Some(metadata) = callsite.metadata.get() else {
        return Span::none();
    };
    if !tracing::dispatcher::get_default(|dispatch| dispatch.enabled(metadata)) {
        return Span::none();
    }
    let fields = metadata.fields();
    let (Some(agent_field), Some(deployment_field), Some(stage_field)) = (
        fields.field("agent_id"),
        fields.field("deployment_id"),
        fields.field("stage"),
    ) else {
        return Span::none();
    };
    let values: [(&tracing::field::Field, Option<&dyn tracing::Value>); 3] = [
        (&agent_field, Some(&agent)),
        (&deployment_field, Some(&deployment)),
        (&stage_field, Some(&stage)),
    ];
    Span::child_of(parent, metadata, &fields.value_set(&values))
}

/// The `status` label of a rollout's end: `success`, `rolled_back`, `aborted`, or
/// `failed` when the candidate never passed validation or warm-up.
pub(crate) fn status_of(outcome: &crate::strategy::Outcome) -> &'static str {
    use crate::strategy::{Outcome, ReasonKind};
    match outcome {
        Outcome::Promoted => "success",
        Outcome::RolledBack { reason } | Outcome::Aborted { reason }
            if matches!(reason.kind, ReasonKind::Validation | ReasonKind::WarmUp) =>
        {
            "failed"
        }
        Outcome::RolledBack { .. } => "rolled_back",
        Outcome::Aborted { .. } => "aborted",
    }
}

/// Records the end of a rollout: `caxton_deployment_duration_seconds{strategy,status}`.
pub(crate) fn record_duration(strategy: &str, status: &str, seconds: f64) {
    metrics::histogram!(
        "caxton_deployment_duration_seconds",
        "strategy" => strategy.to_owned(),
        "status" => status.to_owned()
    )
    .record(seconds);
}

/// Counts a rollback: `caxton_deployment_rollback_total{reason}`.
pub(crate) fn count_rollback(reason: &str) {
    metrics::counter!("caxton_deployment_rollback_total", "reason" => reason.to_owned())
        .increment(1);
}

/// Sets `caxton_agent_version_active{agent,version}` to 1 or 0.
pub(crate) fn set_version_active(agent: &str, version: &str, active: bool) {
    metrics::gauge!(
        "caxton_agent_version_active",
        "agent" => agent.to_owned(),
        "version" => version.to_owned()
    )
    .set(if active { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_callsite_per_stage_name() {
        let a = callsite("canary.5_percent") as *const StageCallsite;
        let b = callsite("canary.5_percent") as *const StageCallsite;
        let c = callsite("canary.25_percent") as *const StageCallsite;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            callsite("canary.25_percent").metadata().name(),
            "canary.25_percent"
        );
    }

    #[test]
    fn spans_carry_the_stage_name_when_a_subscriber_listens() {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = stage_span(&Span::none(), "canary.50_percent", "processor", "v2");
            assert_eq!(span.metadata().map(|m| m.name()), Some("canary.50_percent"));
        });
    }
}
