//! Metrics as a joint: per-deployment windows of observations.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, SessionId};
use crate::time::Timestamp;

/// What one deployment did during `[start, end)`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricWindow {
    /// Start of the window, inclusive.
    pub start: Timestamp,
    /// End of the window, exclusive.
    pub end: Timestamp,
    /// Messages handled.
    pub requests: u64,
    /// Messages that ended in an error: a failure of the agent or a reply of kind `error`.
    pub errors: u64,
    /// Distinct sessions seen.
    pub sessions: u64,
    /// Latency samples in milliseconds, possibly a uniform subsample of all messages.
    pub latency_ms: Vec<f64>,
    /// Total cost, in the host's currency.
    pub cost: f64,
    /// Samples of named custom metrics (e.g. `fuel`, `memory_bytes`, `tokens`).
    #[serde(default)]
    pub custom: BTreeMap<String, Vec<f64>>,
}

impl MetricWindow {
    /// An empty window.
    pub fn empty(start: Timestamp, end: Timestamp) -> Self {
        MetricWindow {
            start,
            end,
            ..MetricWindow::default()
        }
    }

    /// Errors per request, in `0..=1`; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// The `q` quantile (`0..=1`) of latency in milliseconds, by nearest rank.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.latency_ms, q)
    }

    /// Mean latency in milliseconds.
    pub fn mean_latency(&self) -> Option<f64> {
        mean(&self.latency_ms)
    }

    /// Cost per distinct session; `None` without sessions.
    pub fn cost_per_session(&self) -> Option<f64> {
        (self.sessions > 0).then(|| self.cost / self.sessions as f64)
    }

    /// Cost per request; `None` without requests.
    pub fn cost_per_request(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.cost / self.requests as f64)
    }

    /// Mean of a custom metric; `None` when it has no samples.
    pub fn custom_mean(&self, name: &str) -> Option<f64> {
        self.custom.get(name).and_then(|samples| mean(samples))
    }

    /// The `q` quantile of a custom metric, by nearest rank.
    pub fn custom_quantile(&self, name: &str, q: f64) -> Option<f64> {
        self.custom
            .get(name)
            .and_then(|samples| quantile(samples, q))
    }
}

/// The nearest-rank `q` quantile of `samples`, ignoring NaN; `None` when there are none.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let q = q.clamp(0.0, 1.0);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn mean(samples: &[f64]) -> Option<f64> {
    (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64)
}

/// Why a metrics source could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The backend could not be reached or failed.
    #[error("metrics for deployment `{deployment}` are unavailable: {message}")]
    Unavailable {
        /// The deployment asked about.
        deployment: DeploymentId,
        /// What went wrong.
        message: String,
    },
}

/// Per-deployment windows of observations. A deployment with no data yields an empty
/// window, not an error: too little traffic is something strategies decide about.
#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// What `deployment` did during `[start, end)`.
    async fn window(
        &self,
        deployment: &DeploymentId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<MetricWindow, MetricsError>;
}

/// One handled message, as a host records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// When the message finished.
    pub at: Timestamp,
    /// How long it took.
    #[serde(with = "crate::time::duration_micros")]
    pub latency: Duration,
    /// Whether it ended in an error.
    pub error: bool,
    /// The session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    /// What it cost.
    #[serde(default)]
    pub cost: f64,
    /// Custom metrics of this message. Names are usually constants, so recording one
    /// allocates no name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<(Cow<'static, str>, f64)>,
}

impl Observation {
    /// A message that succeeded.
    pub fn ok(at: Timestamp, latency: Duration) -> Self {
        Observation {
            at,
            latency,
            error: false,
            session: None,
            cost: 0.0,
            custom: Vec::new(),
        }
    }

    /// A message that failed.
    pub fn failed(at: Timestamp, latency: Duration) -> Self {
        Observation {
            error: true,
            ..Observation::ok(at, latency)
        }
    }

    /// Sets the session.
    pub fn in_session(mut self, session: SessionId) -> Self {
        self.session = Some(session);
        self
    }

    /// Sets the cost.
    pub fn with_cost(mut self, cost: f64) -> Self {
        self.cost = cost;
        self
    }

    /// Adds a custom metric.
    pub fn with_metric(mut self, name: impl Into<Cow<'static, str>>, value: f64) -> Self {
        self.custom.push((name.into(), value));
        self
    }
}

/// A [`MetricsSource`] that keeps the last observations of each deployment in memory.
///
/// Clones share the data. Each deployment keeps at most `capacity` observations; older
/// ones are dropped first.
#[derive(Debug, Clone)]
pub struct InMemoryMetrics {
    inner: Arc<Mutex<HashMap<DeploymentId, VecDeque<Observation>>>>,
    capacity: usize,
}

impl Default for InMemoryMetrics {
    fn default() -> Self {
        InMemoryMetrics::with_capacity(100_000)
    }
}

impl InMemoryMetrics {
    /// A store keeping up to 100,000 observations per deployment.
    pub fn new() -> Self {
        InMemoryMetrics::default()
    }

    /// A store keeping up to `capacity` observations per deployment.
    pub fn with_capacity(capacity: usize) -> Self {
        InMemoryMetrics {
            inner: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    fn data(&self) -> MutexGuard<'_, HashMap<DeploymentId, VecDeque<Observation>>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one handled message of `deployment`.
    pub fn record(&self, deployment: &DeploymentId, observation: Observation) {
        let mut data = self.data();
        let queue = data.entry(deployment.clone()).or_default();
        if queue.len() == self.capacity {
            queue.pop_front();
        }
        queue.push_back(observation);
    }

    /// How many observations of `deployment` are kept.
    pub fn len(&self, deployment: &DeploymentId) -> usize {
        self.data().get(deployment).map_or(0, VecDeque::len)
    }

    /// Whether no observation of `deployment` is kept.
    pub fn is_empty(&self, deployment: &DeploymentId) -> bool {
        self.len(deployment) == 0
    }

    /// The window of `deployment` over `[start, end)`, computed now.
    pub fn window_now(
        &self,
        deployment: &DeploymentId,
        start: Timestamp,
        end: Timestamp,
    ) -> MetricWindow {
        let data = self.data();
        let mut window = MetricWindow::empty(start, end);
        let Some(queue) = data.get(deployment) else {
            return window;
        };
        let mut sessions: HashSet<&SessionId> = HashSet::new();
        for obs in queue.iter().filter(|o| o.at >= start && o.at < end) {
            window.requests += 1;
            window.errors += u64::from(obs.error);
            window.latency_ms.push(obs.latency.as_secs_f64() * 1_000.0);
            window.cost += obs.cost;
            if let Some(session) = &obs.session {
                sessions.insert(session);
            }
            for (name, value) in &obs.custom {
                window
                    .custom
                    .entry(name.to_string())
                    .or_default()
                    .push(*value);
            }
        }
        window.sessions = sessions.len() as u64;
        window
    }
}

#[async_trait]
impl MetricsSource for InMemoryMetrics {
    async fn window(
        &self,
        deployment: &DeploymentId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<MetricWindow, MetricsError> {
        Ok(self.window_now(deployment, start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn nearest_rank_quantiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&samples, 0.5), Some(50.0));
        assert_eq!(quantile(&samples, 0.99), Some(99.0));
        assert_eq!(quantile(&samples, 1.0), Some(100.0));
        assert_eq!(quantile(&samples, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[f64::NAN, 3.0], 0.5), Some(3.0));
    }

    #[test]
    fn window_aggregates_only_its_range() {
        let metrics = InMemoryMetrics::new();
        let dep = DeploymentId::new("d").unwrap();
        let s1 = SessionId::new("s1").unwrap();
        metrics.record(
            &dep,
            Observation::ok(t(5), Duration::from_millis(10))
                .in_session(s1.clone())
                .with_cost(0.5),
        );
        metrics.record(
            &dep,
            Observation::failed(t(6), Duration::from_millis(30))
                .in_session(s1)
                .with_metric("fuel", 100.0),
        );
        metrics.record(&dep, Observation::ok(t(20), Duration::from_millis(99)));
        let w = futures::executor::block_on(metrics.window(&dep, t(0), t(10))).unwrap();
        assert_eq!((w.requests, w.errors, w.sessions), (2, 1, 1));
        assert_eq!(w.error_rate(), Some(0.5));
        assert_eq!(w.latency_quantile(0.99), Some(30.0));
        assert_eq!(w.cost_per_session(), Some(0.5));
        assert_eq!(w.custom_mean("fuel"), Some(100.0));
        let empty = metrics.window_now(&DeploymentId::new("other").unwrap(), t(0), t(10));
        assert_eq!(empty.requests, 0);
        assert_eq!(empty.error_rate(), None);
    }

    #[test]
    fn capacity_drops_the_oldest() {
        let metrics = InMemoryMetrics::with_capacity(2);
        let dep = DeploymentId::new("d").unwrap();
        for ms in 0..5 {
            metrics.record(&dep, Observation::ok(t(ms), Duration::from_millis(1)));
        }
        assert_eq!(metrics.len(&dep), 2);
        assert_eq!(metrics.window_now(&dep, t(0), t(3)).requests, 0);
    }

    #[test]
    fn window_and_observation_round_trip() {
        let obs = Observation::failed(t(1), Duration::from_micros(1500))
            .in_session(SessionId::new("s").unwrap())
            .with_metric("tokens", 12.0);
        let json = serde_json::to_string(&obs).unwrap();
        assert!(json.contains("\"latency\":1500"));
        assert_eq!(serde_json::from_str::<Observation>(&json).unwrap(), obs);
        let metrics = InMemoryMetrics::new();
        let dep = DeploymentId::new("d").unwrap();
        metrics.record(&dep, obs);
        let w = metrics.window_now(&dep, t(0), t(2));
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<MetricWindow>(&json).unwrap(), w);
    }
}
