//! The versioned tuple: code, model, prompt and tools, each with a content identity.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest. Displays and serializes as `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a `sha256:<hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestParseError {
    /// The `sha256:` prefix was missing.
    #[error("digest {value:?} does not start with \"sha256:\"")]
    MissingPrefix {
        /// The rejected text.
        value: String,
    },
    /// The part after the prefix was not 64 hexadecimal digits.
    #[error("digest {value:?} must have 64 hexadecimal digits after \"sha256:\"")]
    BadHex {
        /// The rejected text.
        value: String,
    },
}

impl Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits: enough for people to tell versions apart.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part =
            s.strip_prefix("sha256:")
                .ok_or_else(|| DigestParseError::MissingPrefix {
                    value: s.to_owned(),
                })?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| DigestParseError::BadHex {
            value: s.to_owned(),
        })?;
        Ok(Digest(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Feeds length-prefixed fields to a hasher, so `("ab", "c")` and `("a", "bc")` differ.
fn hash_field(hasher: &mut Sha256, field: &[u8]) {
    hasher.update((field.len() as u64).to_le_bytes());
    hasher.update(field);
}

/// The code layer: the agent's WebAssembly module, identified by the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeLayer {
    /// SHA-256 of the module bytes.
    pub digest: Digest,
    /// A name for people, such as a git tag. Not part of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl CodeLayer {
    /// The code layer of a module.
    pub fn from_module(module_bytes: &[u8]) -> Self {
        CodeLayer {
            digest: Digest::of(module_bytes),
            label: None,
        }
    }

    /// Adds a label for people.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

/// The model layer: which model the agent talks to, as provider, name and revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLayer {
    /// Who serves the model, e.g. `anthropic`.
    pub provider: String,
    /// The model's name, e.g. `claude-sonnet`.
    pub name: String,
    /// The pinned revision or snapshot date.
    pub revision: String,
    /// A name for people. Not part of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl ModelLayer {
    /// A model layer from its three identity parts.
    pub fn new(
        provider: impl Into<String>,
        name: impl Into<String>,
        revision: impl Into<String>,
    ) -> Self {
        ModelLayer {
            provider: provider.into(),
            name: name.into(),
            revision: revision.into(),
            label: None,
        }
    }

    /// Adds a label for people.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// `provider/name@revision`, the form agents read through `caxton.config`.
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.provider, self.name, self.revision)
    }

    fn same_identity(&self, other: &Self) -> bool {
        self.provider == other.provider
            && self.name == other.name
            && self.revision == other.revision
    }
}

/// One few-shot example of a prompt layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptExample {
    /// What the user said.
    pub input: String,
    /// What the agent should answer.
    pub output: String,
}

/// The prompt layer: the system prompt and few-shot examples, identified by their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptLayer {
    /// SHA-256 over the prompt text and the examples, each length-prefixed, in order.
    pub digest: Digest,
    /// A name for people. Not part of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl PromptLayer {
    /// The prompt layer of a system prompt and its examples. Order of examples matters.
    pub fn from_prompt(system_prompt: &str, examples: &[PromptExample]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"caxton.prompt.v1");
        hash_field(&mut hasher, system_prompt.as_bytes());
        hasher.update((examples.len() as u64).to_le_bytes());
        for example in examples {
            hash_field(&mut hasher, example.input.as_bytes());
            hash_field(&mut hasher, example.output.as_bytes());
        }
        PromptLayer {
            digest: Digest(hasher.finalize().into()),
            label: None,
        }
    }

    /// Adds a label for people.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

/// The tools layer: the tool definitions, identified by the SHA-256 of their canonical JSON.
///
/// Canonical JSON sorts object keys and drops insignificant whitespace, so two definitions
/// that differ only in key order or layout have the same identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsLayer {
    /// SHA-256 of the canonical JSON of the definitions.
    pub digest: Digest,
    /// A name for people. Not part of the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl ToolsLayer {
    /// The tools layer of parsed tool definitions.
    pub fn from_definitions(definitions: &serde_json::Value) -> Self {
        let canonical = canonical_json(definitions);
        ToolsLayer {
            digest: Digest::of(canonical.as_bytes()),
            label: None,
        }
    }

    /// The tools layer of tool definitions given as JSON text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        Ok(Self::from_definitions(&value))
    }

    /// Adds a label for people.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

/// JSON with object keys sorted by their UTF-8 bytes and no whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    // Serializing a string to JSON cannot fail.
                    out.push_str(&serde_json::Value::String((*key).clone()).to_string());
                    out.push(':');
                    write(&map[*key], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// One of the four independently versioned layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The WebAssembly module.
    Code,
    /// The model the agent uses.
    Model,
    /// The system prompt and examples.
    Prompt,
    /// The tool definitions.
    Tools,
}

impl Layer {
    /// All layers, in their canonical order.
    pub const ALL: [Layer; 4] = [Layer::Code, Layer::Model, Layer::Prompt, Layer::Tools];

    /// The layer's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Code => "code",
            Layer::Model => "model",
            Layer::Prompt => "prompt",
            Layer::Tools => "tools",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version: the tuple of its four layers. A change to any layer is a new version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionTuple {
    /// The code layer.
    pub code: CodeLayer,
    /// The model layer.
    pub model: ModelLayer,
    /// The prompt layer.
    pub prompt: PromptLayer,
    /// The tools layer.
    pub tools: ToolsLayer,
}

impl VersionTuple {
    /// A tuple from its four layers.
    pub fn new(code: CodeLayer, model: ModelLayer, prompt: PromptLayer, tools: ToolsLayer) -> Self {
        VersionTuple {
            code,
            model,
            prompt,
            tools,
        }
    }

    /// A stable fingerprint of the whole tuple's identity; labels are left out.
    ///
    /// It is the SHA-256 of a versioned, length-prefixed encoding of the four identities,
    /// so it stays the same across releases of this crate and across machines.
    pub fn fingerprint(&self) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(b"caxton.version.v1");
        hasher.update(self.code.digest.as_bytes());
        hash_field(&mut hasher, self.model.provider.as_bytes());
        hash_field(&mut hasher, self.model.name.as_bytes());
        hash_field(&mut hasher, self.model.revision.as_bytes());
        hasher.update(self.prompt.digest.as_bytes());
        hasher.update(self.tools.digest.as_bytes());
        Digest(hasher.finalize().into())
    }

    /// Whether two tuples have the same identity (labels aside).
    pub fn same_identity(&self, other: &VersionTuple) -> bool {
        self.diff(other).is_empty()
    }

    /// The layers whose identity differs between `self` and `next`.
    pub fn diff(&self, next: &VersionTuple) -> VersionDiff {
        let mut changed = Vec::new();
        if self.code.digest != next.code.digest {
            changed.push(Layer::Code);
        }
        if !self.model.same_identity(&next.model) {
            changed.push(Layer::Model);
        }
        if self.prompt.digest != next.prompt.digest {
            changed.push(Layer::Prompt);
        }
        if self.tools.digest != next.tools.digest {
            changed.push(Layer::Tools);
        }
        VersionDiff { changed }
    }
}

/// The layers that changed between two versions, in canonical order.
///
/// Serializes as the list of layer names, e.g. `["model", "tools"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "Vec<Layer>", into = "Vec<Layer>")]
pub struct VersionDiff {
    changed: Vec<Layer>,
}

impl VersionDiff {
    /// A diff naming exactly `layers` (order and repeats do not matter).
    pub fn of_layers(layers: impl IntoIterator<Item = Layer>) -> Self {
        let mut changed: Vec<Layer> = layers.into_iter().collect();
        changed.sort();
        changed.dedup();
        VersionDiff { changed }
    }

    /// The changed layers in canonical order.
    pub fn changed(&self) -> &[Layer] {
        &self.changed
    }

    /// Whether `layer` changed.
    pub fn contains(&self, layer: Layer) -> bool {
        self.changed.contains(&layer)
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }
}

impl From<Vec<Layer>> for VersionDiff {
    fn from(layers: Vec<Layer>) -> Self {
        VersionDiff::of_layers(layers)
    }
}

impl From<VersionDiff> for Vec<Layer> {
    fn from(diff: VersionDiff) -> Self {
        diff.changed
    }
}

impl fmt::Display for VersionDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed.is_empty() {
            return f.write_str("no layer changed");
        }
        for (i, layer) in self.changed.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(layer.as_str())?;
        }
        Ok(())
    }
}

/// How risky a change is to roll out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutRisk {
    /// Nothing changed: there is nothing to roll out.
    None,
    /// Deterministic and testable, such as a code-only fix.
    Low,
    /// Behaviour may shift unpredictably, such as a new model, prompt or tool set.
    High,
}

/// The rollout a risk calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutRecommendation {
    /// Nothing to roll out.
    NoRollout,
    /// A direct or blue-green switch is acceptable.
    DirectOrBlueGreen,
    /// Move traffic progressively: canary, shadow first, or rainbow for sessions.
    Progressive,
}

/// A policy's verdict on a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskAssessment {
    /// How risky the change is.
    pub risk: RolloutRisk,
    /// The rollout the policy recommends.
    pub recommendation: RolloutRecommendation,
    /// The layers that changed.
    pub changed: VersionDiff,
    /// Why, in one sentence for people.
    pub reason: String,
}

/// Classifies a change by the layers it touches. Hosts replace the default with their own.
pub trait RiskPolicy: Send + Sync {
    /// The verdict on `diff`.
    fn assess(&self, diff: &VersionDiff) -> RiskAssessment;
}

/// The default policy (see `docs/architecture.md`): a change to model, prompt or tools is
/// high risk and calls for a progressive rollout; a code-only change is low risk.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRiskPolicy;

impl RiskPolicy for DefaultRiskPolicy {
    fn assess(&self, diff: &VersionDiff) -> RiskAssessment {
        let behavioural: Vec<Layer> = diff
            .changed()
            .iter()
            .copied()
            .filter(|layer| *layer != Layer::Code)
            .collect();
        let (risk, recommendation, reason) = if diff.is_empty() {
            (
                RolloutRisk::None,
                RolloutRecommendation::NoRollout,
                "no layer changed".to_owned(),
            )
        } else if behavioural.is_empty() {
            (
                RolloutRisk::Low,
                RolloutRecommendation::DirectOrBlueGreen,
                "only the code layer changed: deterministic and testable".to_owned(),
            )
        } else {
            let names: Vec<&str> = behavioural.iter().map(|l| l.as_str()).collect();
            (
                RolloutRisk::High,
                RolloutRecommendation::Progressive,
                format!(
                    "the {} layer{} changed: behaviour may shift unpredictably",
                    names.join(" and "),
                    if names.len() > 1 { "s" } else { "" }
                ),
            )
        };
        RiskAssessment {
            risk,
            recommendation,
            changed: diff.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tuple() -> VersionTuple {
        VersionTuple::new(
            CodeLayer::from_module(b"\0asm\x01\0\0\0"),
            ModelLayer::new("anthropic", "claude-sonnet", "2026-01-01"),
            PromptLayer::from_prompt("You are helpful.", &[]),
            ToolsLayer::from_definitions(
                &json!([{"name": "search", "parameters": {"q": "string"}}]),
            ),
        )
    }

    #[test]
    fn digest_displays_parses_and_rejects() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(matches!(
            "ba78".parse::<Digest>(),
            Err(DigestParseError::MissingPrefix { .. })
        ));
        assert!(matches!(
            "sha256:zz".parse::<Digest>(),
            Err(DigestParseError::BadHex { .. })
        ));
        assert_eq!(d.short(), "ba7816bf8f01");
    }

    #[test]
    fn canonically_equal_tool_json_has_the_same_digest() {
        let a = ToolsLayer::from_json(r#"{"b": 1, "a": [1, 2, {"y": true, "x": null}]}"#).unwrap();
        let b = ToolsLayer::from_json("{\"a\":[1,2,{\"x\":null,\"y\":true}],\n \"b\":1}").unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": {"d": "x", "c": [true]}})),
            r#"{"a":{"c":[true],"d":"x"},"b":1}"#
        );
    }

    #[test]
    fn any_real_tool_change_gives_another_digest() {
        let base = ToolsLayer::from_json(r#"{"a": [1, 2], "b": "x"}"#).unwrap();
        for changed in [
            r#"{"a": [2, 1], "b": "x"}"#,
            r#"{"a": [1, 2], "b": "y"}"#,
            r#"{"a": [1, 2], "b": "x", "c": null}"#,
            r#"{"a": [1, 2]}"#,
            r#"{"A": [1, 2], "b": "x"}"#,
        ] {
            assert_ne!(
                ToolsLayer::from_json(changed).unwrap().digest,
                base.digest,
                "{changed}"
            );
        }
    }

    #[test]
    fn prompt_identity_covers_text_and_examples_without_ambiguity() {
        let ex = |i: &str, o: &str| PromptExample {
            input: i.into(),
            output: o.into(),
        };
        let a = PromptLayer::from_prompt("p", &[ex("ab", "c")]);
        let b = PromptLayer::from_prompt("p", &[ex("a", "bc")]);
        let c = PromptLayer::from_prompt("p", &[]);
        let d = PromptLayer::from_prompt("p", &[ex("ab", "c")]);
        assert_ne!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
        assert_eq!(a.digest, d.digest);
    }

    #[test]
    fn labels_are_not_identity() {
        let a = tuple();
        let mut b = tuple();
        b.code = b.code.clone().with_label("v1.2.0");
        b.model = b.model.clone().with_label("sonnet");
        assert!(a.same_identity(&b));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.diff(&b).is_empty());
    }

    #[test]
    fn diff_names_each_changed_layer_and_fingerprint_follows() {
        let a = tuple();
        let mut b = tuple();
        b.model.revision = "2026-06-01".into();
        b.tools = ToolsLayer::from_definitions(&json!([]));
        let diff = a.diff(&b);
        assert_eq!(diff.changed(), &[Layer::Model, Layer::Tools]);
        assert_eq!(diff.to_string(), "model, tools");
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = tuple();
        c.code = CodeLayer::from_module(b"other");
        assert_eq!(a.diff(&c).changed(), &[Layer::Code]);
    }

    #[test]
    fn default_risk_policy_follows_the_changed_layers() {
        let policy = DefaultRiskPolicy;
        let none = policy.assess(&VersionDiff::default());
        assert_eq!(none.risk, RolloutRisk::None);
        let code = policy.assess(&VersionDiff::of_layers([Layer::Code]));
        assert_eq!(code.risk, RolloutRisk::Low);
        assert_eq!(
            code.recommendation,
            RolloutRecommendation::DirectOrBlueGreen
        );
        for layer in [Layer::Model, Layer::Prompt, Layer::Tools] {
            let verdict = policy.assess(&VersionDiff::of_layers([Layer::Code, layer]));
            assert_eq!(verdict.risk, RolloutRisk::High, "{layer}");
            assert_eq!(verdict.recommendation, RolloutRecommendation::Progressive);
            assert!(verdict.reason.contains(layer.as_str()));
        }
    }

    #[test]
    fn serde_round_trips() {
        let t = tuple();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<VersionTuple>(&json).unwrap(), t);
        let verdict = DefaultRiskPolicy.assess(&VersionDiff::of_layers([Layer::Prompt]));
        let json = serde_json::to_value(&verdict).unwrap();
        assert_eq!(json["risk"], "high");
        assert_eq!(json["recommendation"], "progressive");
        assert_eq!(json["changed"], json!(["prompt"]));
        assert_eq!(
            serde_json::from_value::<RiskAssessment>(json).unwrap(),
            verdict
        );
        assert_eq!(
            serde_json::to_string(&RolloutRisk::None).unwrap(),
            "\"none\""
        );
        assert_eq!(serde_json::to_string(&Layer::Tools).unwrap(), "\"tools\"");
    }
}
