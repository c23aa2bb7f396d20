//! The sample agents, embedded: the modules built from `examples/agents/` by its `build.sh`
//! and committed in `caxton-cli/samples/`, with the prompt, tools and session mode each
//! runs with, and the contract tests of `processor`.

use std::sync::Arc;

use caxton_core::{AgentId, DeploymentId, IdError, ModelLayer};
use caxton_host::{DeployRequest, DeployRequestBuilder, ModuleSource, SessionMode};
use caxton_validate::ContractTest;

/// One release of a sample agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SampleAgent {
    /// The agent's name, e.g. `processor`.
    pub(crate) name: &'static str,
    /// The release, e.g. `v2`.
    pub(crate) release: &'static str,
    /// The WebAssembly module.
    pub(crate) wasm: &'static [u8],
    /// The system prompt (the prompt layer), which the agent reads as config key `prompt`.
    pub(crate) prompt: &'static str,
    /// The tool definitions (the tools layer) as JSON, which it reads as config key `tools`.
    pub(crate) tools: &'static str,
    /// Whether the agent keeps state per session (one instance per session).
    pub(crate) sessions: SessionMode,
}

const PROCESSOR_PROMPT: &str = "Order desk\nPrice orders exactly; never invent discounts.";
const PROCESSOR_TOOLS: &str = r#"[{"name": "price_order", "description": "Prices an order and applies a coupon", "parameters": {"type": "object", "required": ["id", "items"]}}]"#;
const CHAT_PROMPT: &str = "Ada\nYou are Ada, a patient assistant who remembers the conversation.";
const CHAT_TOOLS: &str = "[]";

/// A release of `processor`: stateless, the order desk's prompt and tools.
const fn processor(release: &'static str, wasm: &'static [u8]) -> SampleAgent {
    SampleAgent {
        name: "processor",
        release,
        wasm,
        prompt: PROCESSOR_PROMPT,
        tools: PROCESSOR_TOOLS,
        sessions: SessionMode::Stateless,
    }
}

/// A release of `chat`: keeps state per session, Ada's prompt, no tools.
const fn chat(release: &'static str, wasm: &'static [u8]) -> SampleAgent {
    SampleAgent {
        name: "chat",
        release,
        wasm,
        prompt: CHAT_PROMPT,
        tools: CHAT_TOOLS,
        sessions: SessionMode::Sessions,
    }
}

/// `processor` v1: prices orders; the release in production.
pub(crate) const PROCESSOR_V1: SampleAgent =
    processor("v1", include_bytes!("../samples/processor_v1.wasm"));

/// `processor` v2: a coupon refactor that fails every order carrying a plain coupon code.
pub(crate) const PROCESSOR_V2: SampleAgent =
    processor("v2", include_bytes!("../samples/processor_v2.wasm"));

/// `processor` v3: the same answers as v1 after JSON normalisation, other bytes.
pub(crate) const PROCESSOR_V3: SampleAgent =
    processor("v3", include_bytes!("../samples/processor_v3.wasm"));

/// `chat` v1: keeps conversation state per session.
pub(crate) const CHAT_V1: SampleAgent = chat("v1", include_bytes!("../samples/chat_v1.wasm"));

/// `chat` v2: answers in a visibly different style (`"version":"v2"`).
pub(crate) const CHAT_V2: SampleAgent = chat("v2", include_bytes!("../samples/chat_v2.wasm"));

/// The contract test vectors of `processor` (a JSON array; see `caxton validate`): the copy
/// `examples/agents/build.sh` makes of `examples/agents/processor/contract_tests.json`.
const PROCESSOR_CONTRACT_TESTS: &str = include_str!("../samples/processor_contract_tests.json");

impl SampleAgent {
    /// The agent's id.
    pub(crate) fn agent(&self) -> Result<AgentId, IdError> {
        AgentId::new(self.name)
    }

    /// The deployment id the demo gives this release: `processor-v2`.
    pub(crate) fn deployment(&self) -> Result<DeploymentId, IdError> {
        DeploymentId::new(format!("{}-{}", self.name, self.release))
    }

    /// A request to deploy this release: its module, its layers (these agents call no model,
    /// so the model layer names the rules engine they are), its session mode and the id
    /// [`deployment`](Self::deployment). The caller adds a rollout spec and contract tests.
    pub(crate) fn request(&self) -> Result<DeployRequestBuilder, IdError> {
        Ok(
            DeployRequest::builder(self.agent()?, ModuleSource::Bytes(Arc::from(self.wasm)))
                .id(self.deployment()?)
                .label(self.release)
                .model(ModelLayer::new("caxton-samples", "rules", "1"))
                .prompt(self.prompt)
                .tools_json(self.tools)
                .sessions(self.sessions),
        )
    }
}

/// The contract tests the demo deploys `processor` with: the vectors of
/// `processor_contract_tests.json` without the coupon orders. Like many real suites it
/// covers the common path only, so v2's coupon regression gets past validation and it is
/// the canary, on live traffic, that catches it. (`caxton validate --contract-tests` with
/// the whole file catches it before any traffic.)
pub(crate) fn processor_contract_tests() -> Result<Vec<ContractTest>, String> {
    let all = ContractTest::parse_all(PROCESSOR_CONTRACT_TESTS)
        .map_err(|error| format!("the embedded contract tests of processor: {error}"))?;
    Ok(all
        .into_iter()
        .filter(|test| !test.input.contains_key("coupon"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SampleAgent; 5] = [PROCESSOR_V1, PROCESSOR_V2, PROCESSOR_V3, CHAT_V1, CHAT_V2];

    #[test]
    fn every_release_is_a_distinct_module_with_its_own_id() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.wasm.starts_with(b"\0asm"), "{}", a.release);
            assert!(a.request().is_ok());
            for b in &ALL[i + 1..] {
                assert_ne!(
                    a.wasm, b.wasm,
                    "{} {} vs {} {}",
                    a.name, a.release, b.name, b.release
                );
                assert_ne!(a.deployment().unwrap(), b.deployment().unwrap());
            }
        }
    }

    #[test]
    fn tools_are_json_and_only_chat_keeps_sessions() {
        for sample in ALL {
            assert!(serde_json::from_str::<serde_json::Value>(sample.tools).is_ok());
            assert_eq!(
                sample.sessions == SessionMode::Sessions,
                sample.name == "chat"
            );
        }
    }

    #[test]
    fn the_demo_suite_leaves_out_the_coupon_orders() {
        let all = ContractTest::parse_all(PROCESSOR_CONTRACT_TESTS).unwrap();
        let suite = processor_contract_tests().unwrap();
        assert!(suite.len() >= 2, "{} vectors", suite.len());
        assert!(
            suite.len() < all.len(),
            "the file has coupon orders to leave out"
        );
        assert!(suite.iter().all(|t| !t.input.contains_key("coupon")));
    }
}
