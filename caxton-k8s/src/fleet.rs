//! The fleet spec: which agents run, on which image, with which resources, probes,
//! scaling, configuration, secrets and rollout.
//!
//! ```yaml
//! fleet:
//!   name: support
//!   namespace: agents
//!   image: registry.example.com/caxton:0.2.0
//!   registry_secret: caxton-registry
//!   agents:
//!     - name: processor
//!       module: sha256:…
//!       sessions: stateless
//!       resources: { requests: { cpu: 250m, memory: 256Mi }, limits: { cpu: "1", memory: 512Mi } }
//!       health:
//!         readiness: { period: 5s, failure_threshold: 3 }
//!         liveness: { period: 10s, failure_threshold: 3 }
//!       scaling: { min: 2, max: 10, target_cpu: 70% }
//!       config: { LOG_LEVEL: info }
//!       secrets: [ openai-api-key ]
//!       rollout: { strategy: canary, stages: […], rollback_on: […] }
//! ```
//!
//! Every field is checked where it is read, and an error names its path
//! (`fleet.agents[1].resources.limits.cpu`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use caxton_strategies::duration::serde_text;
use caxton_strategies::{RolloutSpec, SpecError};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{FleetError, Format};
use crate::quantity::Quantity;

/// The Prometheus address the Argo analysis queries when the fleet names none.
pub const DEFAULT_PROMETHEUS: &str = "http://prometheus.monitoring.svc:9090";

/// The longest object name Caxton derives from a fleet and an agent,
/// `<fleet>-<agent>-preview`, must fit a Kubernetes label (63 characters).
const LONGEST_SUFFIX: &str = "-preview";

/// A parsed, checked fleet spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// The fleet's name (a DNS-1035 label); every object name starts with it.
    pub name: String,
    /// The namespace every object goes in.
    pub namespace: String,
    /// The container image that runs `caxton serve`.
    pub image: String,
    /// The Secret holding the registry URL (key `url`) and the API token (key `token`).
    pub registry_secret: String,
    /// Where the Argo analysis reads metrics ([`DEFAULT_PROMETHEUS`] unless given).
    pub prometheus: String,
    /// The agents, in the order of the spec.
    pub agents: Vec<Agent>,
}

/// One agent of a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// The agent's name, a DNS-1123 label.
    pub name: String,
    /// The module its pods run, `sha256:` and 64 hex digits: an artifact in the registry.
    pub module: String,
    /// Whether the agent keeps sessions.
    pub sessions: Sessions,
    /// Requests and limits of each pod.
    pub resources: Resources,
    /// Probe timing.
    pub health: Health,
    /// The autoscaling policy; without one the agent runs one pod.
    pub scaling: Option<Scaling>,
    /// Configuration handed to the agent, by key.
    pub config: BTreeMap<String, String>,
    /// Names of the Kubernetes Secrets the agent may read; their values never appear.
    pub secrets: Vec<String>,
    /// The rollout spec new versions of the agent follow, if given.
    pub rollout: Option<AgentRollout>,
}

/// An agent's rollout spec: the checked spec and the object as written (the rollout
/// spec's `deployment` object, which the HTTP API takes as it is).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRollout {
    /// The checked spec.
    pub spec: RolloutSpec,
    /// The spec as written, as JSON.
    pub source: serde_json::Value,
}

/// Whether an agent keeps sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sessions {
    /// Every message stands alone (the default).
    #[default]
    Stateless,
    /// Messages of one session go to one instance.
    Sessions,
}

impl Sessions {
    /// `stateless` or `sessions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sessions::Stateless => "stateless",
            Sessions::Sessions => "sessions",
        }
    }
}

/// Requests and limits of each pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    /// CPU requested.
    pub request_cpu: Quantity,
    /// Memory requested.
    pub request_memory: Quantity,
    /// CPU limit; without one the pod may use idle CPU.
    pub limit_cpu: Option<Quantity>,
    /// Memory limit.
    pub limit_memory: Quantity,
}

/// Probe timing: how often each probe runs and how many failures in a row count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Readiness (`/readyz`): out of the Service while it fails.
    pub readiness: Probe,
    /// Liveness (`/healthz`): restarted when it fails.
    pub liveness: Probe,
    /// Startup (`/healthz`): the other probes wait for it; long enough for warm-up.
    pub startup: Probe,
}

/// One probe's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Seconds between checks.
    pub period_seconds: u32,
    /// Failures in a row before the probe counts as failed.
    pub failure_threshold: u32,
}

impl Probe {
    /// How long the probe tolerates failure: period × threshold.
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.period_seconds) * u64::from(self.failure_threshold))
    }
}

/// The autoscaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scaling {
    /// Fewest pods (at least 1).
    pub min: u32,
    /// Most pods (at least `min`).
    pub max: u32,
    /// Average CPU use, in percent of the request, the autoscaler aims at.
    pub target_cpu_percent: u32,
}

// ---------------------------------------------------------------------------------------
// The document as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    fleet: RawFleet,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    name: String,
    namespace: String,
    image: String,
    registry_secret: String,
    #[serde(default)]
    prometheus: Option<String>,
    agents: Vec<RawAgent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    module: String,
    #[serde(default)]
    sessions: Sessions,
    resources: RawResources,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    scaling: Option<RawScaling>,
    #[serde(default)]
    config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    rollout: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    requests: RawRequests,
    limits: RawLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequests {
    cpu: Quantity,
    memory: Quantity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    cpu: Option<Quantity>,
    memory: Quantity,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default)]
    readiness: Option<RawProbe>,
    #[serde(default)]
    liveness: Option<RawProbe>,
    #[serde(default)]
    startup: Option<RawProbe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(with = "serde_text")]
    period: Duration,
    failure_threshold: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaling {
    min: u32,
    max: u32,
    target_cpu: Percent,
}

/// A percentage written `70%` or `70`.
#[derive(Debug, Clone, Copy)]
struct Percent(u32);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PercentVisitor;
        impl Visitor<'_> for PercentVisitor {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole percentage from 1% to 100%, such as 70%")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Percent, E> {
                let number = text.trim().strip_suffix('%').unwrap_or(text).trim();
                match number.parse::<i64>() {
                    Ok(value) => self.visit_i64(value),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Percent, E> {
                match u32::try_from(value) {
                    Ok(percent @ 1..=100) => Ok(Percent(percent)),
                    _ => Err(E::custom(format!(
                        "{value}% is outside 1%..100%; the CPU target is a whole percentage of the request"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Percent, E> {
                self.visit_i64(i64::try_from(value).unwrap_or(i64::MAX))
            }
        }
        deserializer.deserialize_any(PercentVisitor)
    }
}

/// A configuration value: text, or a number or boolean written without quotes.
#[derive(Debug, Clone)]
struct ConfigValue(String);

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl Visitor<'_> for ValueVisitor {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, number or boolean")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue(text.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value.to_string()))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// Reading.

impl Fleet {
    /// Reads a YAML fleet spec. Errors carry the path and, where the parser knows it, the
    /// line and column.
    ///
    /// ```
    /// use caxton_k8s::Fleet;
    ///
    /// let err = Fleet::from_yaml("fleet:\n  name: support\n  namespace: agents\n  image: caxton:1\n  registry_secret: reg\n  agents:\n    - name: Processor\n      module: sha256:0000000000000000000000000000000000000000000000000000000000000000\n      resources: { requests: { cpu: 1, memory: 1Gi }, limits: { memory: 1Gi } }\n").unwrap_err();
    /// assert_eq!(err.path(), Some("fleet.agents[0].name"));
    /// ```
    pub fn from_yaml(text: &str) -> Result<Self, FleetError> {
        let mut failed_at: Option<String> = None;
        let raw = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
            let mut track = serde_path_to_error::Track::new();
            let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
            RawFile::deserialize(tracked)
                .inspect_err(|_| failed_at = Some(track.path().to_string()))
        });
        let raw = raw.map_err(|error| {
            let location = error.location();
            FleetError::Syntax {
                format: Format::Yaml,
                path: shown_path(failed_at.unwrap_or_default()),
                line: location.map(|l| l.line()).filter(|l| *l > 0),
                column: location.map(|l| l.column()).filter(|c| *c > 0),
                message: without_location(&one_line(&error.without_snippet().to_string())),
            }
        })?;
        raw.fleet.check()
    }

    /// Reads a JSON fleet spec of the same shape.
    pub fn from_json(text: &str) -> Result<Self, FleetError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw: RawFile =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
                let path = shown_path(error.path().to_string());
                let inner = error.into_inner();
                let (line, column) = (inner.line(), inner.column());
                let message = inner.to_string();
                let message = message
                    .rsplit_once(" at line ")
                    .map_or(message.clone(), |(head, _)| head.to_owned());
                FleetError::Syntax {
                    format: Format::Json,
                    path,
                    line: (line > 0).then_some(line as u64),
                    column: (column > 0).then_some(column as u64),
                    message,
                }
            })?;
        if let Err(error) = deserializer.end() {
            return Err(FleetError::Syntax {
                format: Format::Json,
                path: "(end)".to_owned(),
                line: Some(error.line() as u64),
                column: Some(error.column() as u64),
                message: "trailing characters after the fleet spec".to_owned(),
            });
        }
        raw.fleet.check()
    }

    /// Reads YAML or JSON: text starting with `{` is JSON.
    pub fn parse(text: &str) -> Result<Self, FleetError> {
        if text.trim_start().starts_with('{') {
            Fleet::from_json(text)
        } else {
            Fleet::from_yaml(text)
        }
    }

    /// The name of the agent's objects: `<fleet>-<agent>`.
    pub fn object_name(&self, agent: &Agent) -> String {
        format!("{}-{}", self.name, agent.name)
    }
}

fn shown_path(path: String) -> String {
    if path.is_empty() || path == "." {
        "(top level)".to_owned()
    } else {
        path
    }
}

/// Drops a trailing ` at line L, column C`: the location is reported apart.
fn without_location(message: &str) -> String {
    match message.rsplit_once(" at line ") {
        Some((head, tail)) if tail.contains(", column ") => head.to_owned(),
        _ => message.to_owned(),
    }
}

fn one_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

impl RawFleet {
    fn check(self) -> Result<Fleet, FleetError> {
        dns_1035_label("fleet.name", &self.name)?;
        dns_1123_label("fleet.namespace", &self.namespace)?;
        if self.image.trim().is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(FleetError::invalid(
                "fleet.image",
                format!("{:?} is not a container image reference", self.image),
            ));
        }
        dns_1123_subdomain("fleet.registry_secret", &self.registry_secret)?;
        let prometheus = match self.prometheus {
            Some(address) => {
                if !(address.starts_with("http://") || address.starts_with("https://"))
                    || address.chars().any(char::is_whitespace)
                {
                    return Err(FleetError::invalid(
                        "fleet.prometheus",
                        format!("{address:?} is not an http:// or https:// address"),
                    ));
                }
                address
            }
            None => DEFAULT_PROMETHEUS.to_owned(),
        };
        if self.agents.is_empty() {
            return Err(FleetError::invalid(
                "fleet.agents",
                "a fleet needs at least one agent",
            ));
        }
        let mut agents: Vec<Agent> = Vec::with_capacity(self.agents.len());
        for (index, raw) in self.agents.into_iter().enumerate() {
            let path = format!("fleet.agents[{index}]");
            let agent = raw.check(&path, &self.name)?;
            if let Some(first) = agents.iter().position(|a| a.name == agent.name) {
                return Err(FleetError::invalid(
                    format!("{path}.name"),
                    format!(
                        "agent `{}` appears twice (also fleet.agents[{first}]); names are unique in a fleet",
                        agent.name
                    ),
                ));
            }
            agents.push(agent);
        }
        Ok(Fleet {
            name: self.name,
            namespace: self.namespace,
            image: self.image,
            registry_secret: self.registry_secret,
            prometheus,
            agents,
        })
    }
}

impl RawAgent {
    fn check(self, path: &str, fleet: &str) -> Result<Agent, FleetError> {
        dns_1123_label(&format!("{path}.name"), &self.name)?;
        let longest = fleet.len() + 1 + self.name.len() + LONGEST_SUFFIX.len();
        if longest > 63 {
            return Err(FleetError::invalid(
                format!("{path}.name"),
                format!(
                    "`{fleet}-{}{LONGEST_SUFFIX}` would be {longest} characters; fleet and agent names together may have at most {}",
                    self.name,
                    63 - 1 - LONGEST_SUFFIX.len()
                ),
            ));
        }
        let digest_ok = self.module.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !digest_ok {
            return Err(FleetError::invalid(
                format!("{path}.module"),
                format!(
                    "{:?} is not a module digest: write `sha256:` and 64 lowercase hex digits",
                    self.module
                ),
            ));
        }
        let resources = self.resources.check(&format!("{path}.resources"))?;
        let health = self
            .health
            .check(&format!("{path}.health"), self.rollout.as_ref())?;
        let scaling = match self.scaling {
            Some(raw) => {
                if raw.min < 1 {
                    return Err(FleetError::invalid(
                        format!("{path}.scaling.min"),
                        "at least 1 pod: the autoscaler cannot scale to zero",
                    ));
                }
                if raw.min > raw.max {
                    return Err(FleetError::invalid(
                        format!("{path}.scaling.min"),
                        format!("min {} is above max {}", raw.min, raw.max),
                    ));
                }
                if raw.max > i32::MAX as u32 {
                    return Err(FleetError::invalid(
                        format!("{path}.scaling.max"),
                        format!("{} is more pods than Kubernetes counts", raw.max),
                    ));
                }
                Some(Scaling {
                    min: raw.min,
                    max: raw.max,
                    target_cpu_percent: raw.target_cpu.0,
                })
            }
            None => None,
        };
        let mut config = BTreeMap::new();
        for (key, ConfigValue(value)) in self.config {
            let key_path = format!("{path}.config.{key}");
            let valid = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(FleetError::invalid(
                    key_path,
                    format!(
                        "{key:?} is not an environment variable name (letters, digits, `_`; not starting with a digit)"
                    ),
                ));
            }
            if key.starts_with("CAXTON_") {
                return Err(FleetError::invalid(
                    key_path,
                    "keys starting with CAXTON_ are set by Caxton itself",
                ));
            }
            config.insert(key, value);
        }
        for (index, secret) in self.secrets.iter().enumerate() {
            let secret_path = format!("{path}.secrets[{index}]");
            dns_1123_subdomain(&secret_path, secret)?;
            if self.secrets[..index].contains(secret) {
                return Err(FleetError::invalid(
                    secret_path,
                    format!("secret `{secret}` is listed twice"),
                ));
            }
        }
        let rollout = match self.rollout {
            Some(source) => Some(AgentRollout {
                spec: rollout_spec(&format!("{path}.rollout"), &source)?,
                source,
            }),
            None => None,
        };
        Ok(Agent {
            name: self.name,
            module: self.module,
            sessions: self.sessions,
            resources,
            health,
            scaling,
            config,
            secrets: self.secrets,
            rollout,
        })
    }
}

/// Reads the rollout spec through `caxton-strategies`, naming errors from `path`.
fn rollout_spec(path: &str, source: &serde_json::Value) -> Result<RolloutSpec, FleetError> {
    let wrapped = serde_json::json!({ "deployment": source }).to_string();
    RolloutSpec::from_json(&wrapped).map_err(|error| {
        let inner = error
            .path()
            .map(|p| p.strip_prefix("deployment").unwrap_or(p).to_owned())
            .unwrap_or_default();
        let message = match &error {
            SpecError::Syntax { message, .. } | SpecError::Invalid { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        };
        FleetError::invalid(format!("{path}{inner}"), message)
    })
}

impl RawResources {
    fn check(self, path: &str) -> Result<Resources, FleetError> {
        let below = |what: &str, limit: &Quantity, request: &Quantity| {
            FleetError::invalid(
                format!("{path}.limits.{what}"),
                format!("the limit {limit} is below the request {request}"),
            )
        };
        if let Some(cpu) = &self.limits.cpu
            && cpu.value() < self.requests.cpu.value()
        {
            return Err(below("cpu", cpu, &self.requests.cpu));
        }
        if self.limits.memory.value() < self.requests.memory.value() {
            return Err(below("memory", &self.limits.memory, &self.requests.memory));
        }
        Ok(Resources {
            request_cpu: self.requests.cpu,
            request_memory: self.requests.memory,
            limit_cpu: self.limits.cpu,
            limit_memory: self.limits.memory,
        })
    }
}

impl RawHealth {
    fn check(self, path: &str, rollout: Option<&serde_json::Value>) -> Result<Health, FleetError> {
        let probe = |name: &str, raw: Option<RawProbe>, default: Probe| match raw {
            None => Ok(default),
            Some(raw) => {
                let at = format!("{path}.{name}");
                if raw.period.subsec_nanos() != 0 || raw.period.is_zero() {
                    return Err(FleetError::invalid(
                        format!("{at}.period"),
                        "probe periods are whole seconds, at least 1s",
                    ));
                }
                let period_seconds = u32::try_from(raw.period.as_secs())
                    .ok()
                    .filter(|s| *s <= 3_600)
                    .ok_or_else(|| {
                        FleetError::invalid(format!("{at}.period"), "at most 1h between checks")
                    })?;
                if !(1..=1_000).contains(&raw.failure_threshold) {
                    return Err(FleetError::invalid(
                        format!("{at}.failure_threshold"),
                        format!("{} is outside 1..1000", raw.failure_threshold),
                    ));
                }
                Ok(Probe {
                    period_seconds,
                    failure_threshold: raw.failure_threshold,
                })
            }
        };
        let readiness = probe(
            "readiness",
            self.readiness,
            Probe {
                period_seconds: 5,
                failure_threshold: 3,
            },
        )?;
        let liveness = probe(
            "liveness",
            self.liveness,
            Probe {
                period_seconds: 10,
                failure_threshold: 3,
            },
        )?;
        let startup = probe("startup", self.startup, default_startup(rollout))?;
        Ok(Health {
            readiness,
            liveness,
            startup,
        })
    }
}

/// A startup probe that waits as long as a rollout may take to validate and warm up a
/// version (the spec's `validate` and `warm_up` stages, 30 s and 60 s unless given),
/// checked every 5 s.
fn default_startup(rollout: Option<&serde_json::Value>) -> Probe {
    let preflight = rollout
        .and_then(|source| rollout_spec("", source).ok())
        .map(|spec| crate::preflight_of(&spec.strategy))
        .unwrap_or_default();
    let window = preflight.validate + preflight.warm_up;
    let period_seconds = 5u32;
    let failure_threshold = window
        .as_secs()
        .div_ceil(u64::from(period_seconds))
        .clamp(6, 1_000) as u32;
    Probe {
        period_seconds,
        failure_threshold,
    }
}

// ---------------------------------------------------------------------------------------
// Names.

fn dns_1123_label(path: &str, name: &str) -> Result<(), FleetError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FleetError::invalid(
            path,
            format!(
                "{name:?} is not a DNS-1123 label: at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
            ),
        ))
    }
}

fn dns_1035_label(path: &str, name: &str) -> Result<(), FleetError> {
    dns_1123_label(path, name)?;
    if name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(FleetError::invalid(
            path,
            format!("{name:?} must start with a letter: Service names are derived from it"),
        ))
    }
}

fn dns_1123_subdomain(path: &str, name: &str) -> Result<(), FleetError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|part| dns_1123_label(path, part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(FleetError::invalid(
            path,
            format!("{name:?} is not a Kubernetes object name (a DNS-1123 subdomain)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn fleet_with(agent: &str) -> String {
        format!(
            "fleet:\n  name: support\n  namespace: agents\n  image: caxton:1\n  registry_secret: reg\n  agents:\n    - name: a\n      module: {DIGEST}\n      resources: {{ requests: {{ cpu: 100m, memory: 64Mi }}, limits: {{ memory: 64Mi }} }}\n{agent}"
        )
    }

    fn error(agent: &str) -> FleetError {
        Fleet::from_yaml(&fleet_with(agent)).unwrap_err()
    }

    #[test]
    fn a_minimal_agent_gets_the_defaults() {
        let fleet = Fleet::from_yaml(&fleet_with("")).unwrap();
        let agent = &fleet.agents[0];
        assert_eq!(agent.sessions, Sessions::Stateless);
        assert_eq!(agent.scaling, None);
        assert_eq!(agent.rollout, None);
        assert_eq!(agent.health.readiness.period_seconds, 5);
        assert_eq!(agent.health.liveness.period_seconds, 10);
        // 30 s of validation and 60 s of warm-up, checked every 5 s.
        assert_eq!(agent.health.startup.window(), Duration::from_secs(90));
        assert_eq!(fleet.prometheus, DEFAULT_PROMETHEUS);
        assert_eq!(fleet.object_name(agent), "support-a");
    }

    #[test]
    fn the_startup_probe_waits_for_the_rollouts_warm_up() {
        let fleet = Fleet::from_yaml(&fleet_with(
            "      rollout: { strategy: blue-green, stages: [ { validate: 1m }, { warm_up: 5m } ] }\n",
        ))
        .unwrap();
        assert_eq!(
            fleet.agents[0].health.startup.window(),
            Duration::from_secs(360)
        );
    }

    #[test]
    fn config_values_may_be_numbers_or_booleans() {
        let fleet = Fleet::from_yaml(&fleet_with(
            "      config: { RETRIES: 3, VERBOSE: true, RATIO: 0.5, NAME: x }\n",
        ))
        .unwrap();
        let config = &fleet.agents[0].config;
        assert_eq!(config["RETRIES"], "3");
        assert_eq!(config["VERBOSE"], "true");
        assert_eq!(config["RATIO"], "0.5");
    }

    #[test]
    fn bad_fields_name_their_path() {
        for (agent, path) in [
            (
                "      config: { CAXTON_AGENT: x }\n",
                "fleet.agents[0].config.CAXTON_AGENT",
            ),
            ("      config: { 1ST: x }\n", "fleet.agents[0].config.1ST"),
            (
                "      secrets: [ Bad_Name ]\n",
                "fleet.agents[0].secrets[0]",
            ),
            ("      secrets: [ a, a ]\n", "fleet.agents[0].secrets[1]"),
            (
                "      health: { readiness: { period: 500ms, failure_threshold: 3 } }\n",
                "fleet.agents[0].health.readiness.period",
            ),
            (
                "      health: { startup: { period: 5s } }\n",
                "fleet.agents[0].health.startup",
            ),
            (
                "      scaling: { min: 1, max: 2, target_cpu: 0% }\n",
                "fleet.agents[0].scaling.target_cpu",
            ),
            ("      sessions: sticky\n", "fleet.agents[0].sessions"),
            (
                "      rollout: { strategy: canary, stages: [ { canary: { weight: 5%, hold: 5x } } ] }\n",
                "fleet.agents[0].rollout.stages[0].canary.hold",
            ),
            (
                "      rollout: { strategy: canary, rollback_on: [ \"error_rate >> 1%\" ] }\n",
                "fleet.agents[0].rollout.rollback_on[0]",
            ),
        ] {
            let err = error(agent);
            assert_eq!(err.path(), Some(path), "{agent}: {err}");
            assert!(err.to_string().starts_with(path), "{err}");
        }
    }

    #[test]
    fn a_module_must_be_a_sha256_digest() {
        let text = fleet_with("").replace(DIGEST, "sha256:ABC");
        let err = Fleet::from_yaml(&text).unwrap_err();
        assert_eq!(err.path(), Some("fleet.agents[0].module"));
    }

    #[test]
    fn fleet_level_fields_are_checked() {
        let text = fleet_with("");
        for (from, to, path) in [
            ("name: support", "name: 1support", "fleet.name"),
            ("namespace: agents", "namespace: Agents", "fleet.namespace"),
            ("image: caxton:1", "image: \"\"", "fleet.image"),
            (
                "registry_secret: reg",
                "registry_secret: reg_1",
                "fleet.registry_secret",
            ),
            (
                "registry_secret: reg",
                "registry_secret: reg\n  prometheus: prom:9090",
                "fleet.prometheus",
            ),
        ] {
            let err = Fleet::from_yaml(&text.replacen(from, to, 1)).unwrap_err();
            assert_eq!(err.path(), Some(path), "{err}");
        }
        let no_agents =
            "fleet: { name: s, namespace: n, image: i, registry_secret: r, agents: [] }";
        assert_eq!(
            Fleet::from_yaml(no_agents).unwrap_err().path(),
            Some("fleet.agents")
        );
    }

    #[test]
    fn json_reads_the_same_and_refuses_trailing_text() {
        let json = format!(
            "{{\"fleet\": {{\"name\": \"s\", \"namespace\": \"n\", \"image\": \"i\", \"registry_secret\": \"r\", \"agents\": [{{\"name\": \"a\", \"module\": \"{DIGEST}\", \"resources\": {{\"requests\": {{\"cpu\": 1, \"memory\": \"1Gi\"}}, \"limits\": {{\"memory\": \"1Gi\"}}}}}}]}}}}"
        );
        let fleet = Fleet::parse(&json).unwrap();
        assert_eq!(fleet.agents[0].resources.request_cpu.as_str(), "1");
        let err = Fleet::from_json(&format!("{json} x")).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        let err = Fleet::from_json(&json.replace("\"limits\"", "\"limitz\"")).unwrap_err();
        assert_eq!(err.path(), Some("fleet.agents[0].resources.limitz"));
    }
}
