//! The sample agents, embedded: the modules built from `examples/agents/` and committed in
//! `caxton-cli/samples/`, with the version tuple and configuration each runs with.

use std::collections::BTreeMap;
use std::sync::Arc;

use caxton_core::{CodeLayer, ModelLayer, PromptLayer, ToolsLayer, VersionTuple};

/// One release of a sample agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleAgent {
    /// The agent's name, e.g. `processor`.
    pub name: &'static str,
    /// The release, e.g. `v2`.
    pub release: &'static str,
    /// The WebAssembly module.
    pub wasm: &'static [u8],
    /// The system prompt (the prompt layer), which the agent reads through `caxton.config`.
    pub prompt: &'static str,
    /// The tool definitions (the tools layer), as JSON.
    pub tools: &'static str,
    /// Whether the agent keeps state per session (one instance per session).
    pub stateful: bool,
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
        stateful: false,
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
        stateful: true,
    }
}

/// `processor` v1: prices orders; the release in production.
pub const PROCESSOR_V1: SampleAgent = processor(
    "v1",
    include_bytes!("../../caxton-cli/samples/processor_v1.wasm"),
);

/// `processor` v2: a coupon refactor that fails every order carrying a plain coupon code.
pub const PROCESSOR_V2: SampleAgent = processor(
    "v2",
    include_bytes!("../../caxton-cli/samples/processor_v2.wasm"),
);

/// `processor` v3: the same answers as v1 after JSON normalisation, other bytes.
pub const PROCESSOR_V3: SampleAgent = processor(
    "v3",
    include_bytes!("../../caxton-cli/samples/processor_v3.wasm"),
);

/// `chat` v1: keeps conversation state per session.
pub const CHAT_V1: SampleAgent = chat(
    "v1",
    include_bytes!("../../caxton-cli/samples/chat_v1.wasm"),
);

/// `chat` v2: answers in a visibly different style (`"version":"v2"`).
pub const CHAT_V2: SampleAgent = chat(
    "v2",
    include_bytes!("../../caxton-cli/samples/chat_v2.wasm"),
);

/// The contract test vectors of `processor` (a JSON array; see `caxton validate`).
pub const PROCESSOR_CONTRACT_TESTS: &str = include_str!("../agents/processor/contract_tests.json");

impl SampleAgent {
    /// The module bytes, shared.
    pub fn module(&self) -> Arc<[u8]> {
        Arc::from(self.wasm)
    }

    /// The version tuple: the module's digest, the model (these sample agents call no
    /// model, so the layer names the rules engine they are), the prompt and the tools.
    pub fn version(&self) -> VersionTuple {
        let tools = ToolsLayer::from_json(self.tools)
            .unwrap_or_else(|_| ToolsLayer::from_definitions(&serde_json::Value::Null));
        VersionTuple::new(
            CodeLayer::from_module(self.wasm).with_label(format!("{} {}", self.name, self.release)),
            ModelLayer::new("caxton-samples", "rules", "1"),
            PromptLayer::from_prompt(self.prompt, &[]),
            tools,
        )
    }

    /// The configuration the agent reads through `caxton.config`: its prompt and tools.
    pub fn config(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("prompt".to_owned(), self.prompt.to_owned()),
            ("tools".to_owned(), self.tools.to_owned()),
        ])
    }

    /// `processor v2`, for people.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_is_a_distinct_version() {
        let all = [PROCESSOR_V1, PROCESSOR_V2, PROCESSOR_V3, CHAT_V1, CHAT_V2];
        for (i, a) in all.iter().enumerate() {
            assert!(a.wasm.starts_with(b"\0asm"), "{}", a.label());
            for b in &all[i + 1..] {
                assert_ne!(
                    a.version().fingerprint(),
                    b.version().fingerprint(),
                    "{} vs {}",
                    a.label(),
                    b.label()
                );
            }
        }
        assert_eq!(
            PROCESSOR_V1
                .version()
                .diff(&PROCESSOR_V2.version())
                .changed(),
            &[caxton_core::Layer::Code]
        );
    }

    #[test]
    fn contract_tests_parse() {
        let tests: serde_json::Value = serde_json::from_str(PROCESSOR_CONTRACT_TESTS).unwrap();
        assert!(tests.as_array().is_some_and(|t| t.len() >= 3));
    }
}
