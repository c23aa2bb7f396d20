//! The sample agents committed in `caxton-cli/samples/` are what their source in
//! `examples/agents/` builds, speak exactly the Caxton agent ABI v1, and behave as their
//! source says.
//!
//! - Always: each file is a valid core module that exports exactly the ABI, imports from
//!   `caxton` only what its agent uses, carries a `caxton.contract` section whose JSON
//!   parses, and answers messages (run under wasmtime with a small host of the imports).
//! - Always: `caxton-cli/samples/processor_contract_tests.json`, which the `caxton` command
//!   embeds, is the copy `build.sh` makes of `examples/agents/processor/contract_tests.json`.
//! - When the `wasm32-unknown-unknown` target is installed and the toolchain is the one in
//!   `caxton-cli/samples/rustc-version.txt`: `build.sh` rebuilds the agents into a scratch
//!   target folder and the bytes must equal the committed files. Otherwise the test prints
//!   why it skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};
use wasmparser::types::EntityType;
use wasmparser::{Parser, Payload, Validator};
use wasmtime::{
    Caller, Config, Engine, Instance, Linker, Memory, Module, OptLevel, Store, TypedFunc,
};

/// Every committed agent, with the imports its code uses and its contract.
struct Expected {
    name: &'static str,
    imports: &'static [&'static str],
    accepts: &'static [&'static str],
    emits: &'static [&'static str],
}

const AGENTS: [Expected; 5] = [
    Expected {
        name: "processor_v1",
        imports: &[],
        accepts: &["order"],
        emits: &["receipt", "error"],
    },
    Expected {
        name: "processor_v2",
        imports: &["log"],
        accepts: &["order"],
        emits: &["receipt", "error"],
    },
    Expected {
        name: "processor_v3",
        imports: &[],
        accepts: &["order"],
        emits: &["receipt", "error"],
    },
    Expected {
        name: "chat_v1",
        imports: &["config", "log", "now_ms"],
        accepts: &["say", "end"],
        emits: &["reply", "error"],
    },
    Expected {
        name: "chat_v2",
        imports: &["config", "log", "now_ms"],
        accepts: &["say", "end"],
        emits: &["reply", "error"],
    },
];

fn agents_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agents")
}

/// Where `build.sh` writes the modules: the `caxton` command's package embeds them.
fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../caxton-cli/samples")
}

fn committed(name: &str) -> Vec<u8> {
    let path = samples_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// What the module says about itself: imports and exports with their function signatures
/// (`"(i32, i32) -> i64"`; non-functions by their kind), and its custom sections.
#[derive(Debug, Default)]
struct Shape {
    imports: BTreeMap<(String, String), String>,
    exports: BTreeMap<String, String>,
    custom_sections: Vec<(String, Vec<u8>)>,
}

fn shape(bytes: &[u8]) -> Shape {
    let types = Validator::new()
        .validate_all(bytes)
        .expect("the module validates");
    let describe = |entity: EntityType| match entity {
        EntityType::Func(id) | EntityType::FuncExact(id) => {
            let func = types[id].unwrap_func();
            let list = |types: &[wasmparser::ValType]| {
                types
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("({}) -> {}", list(func.params()), list(func.results()))
        }
        EntityType::Memory(_) => "memory".into(),
        EntityType::Table(_) => "table".into(),
        EntityType::Global(_) => "global".into(),
        EntityType::Tag(_) => "tag".into(),
    };
    let mut shape = Shape::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.expect("the module parses") {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.unwrap();
                    let entity = types.as_ref().entity_type_from_import(&import).unwrap();
                    shape
                        .imports
                        .insert((import.module.into(), import.name.into()), describe(entity));
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.unwrap();
                    let entity = types.as_ref().entity_type_from_export(&export).unwrap();
                    shape.exports.insert(export.name.into(), describe(entity));
                }
            }
            Payload::CustomSection(reader) => {
                shape
                    .custom_sections
                    .push((reader.name().into(), reader.data().to_vec()));
            }
            _ => {}
        }
    }
    shape
}

#[test]
fn committed_agents_are_distinct_wasm_modules() {
    let mut seen = BTreeSet::new();
    for agent in &AGENTS {
        let bytes = committed(agent.name);
        assert_eq!(
            &bytes[..8],
            b"\0asm\x01\0\0\0",
            "{} is not a core wasm module",
            agent.name
        );
        assert!(seen.insert(bytes), "{} equals another agent", agent.name);
    }
}

#[test]
fn the_embedded_contract_tests_are_the_copy_of_the_agents_own() {
    // One source, `processor/contract_tests.json`; `build.sh` copies it next to the modules.
    let source = std::fs::read(agents_dir().join("processor/contract_tests.json")).unwrap();
    let copy = std::fs::read(samples_dir().join("processor_contract_tests.json")).unwrap();
    assert!(
        source == copy,
        "caxton-cli/samples/processor_contract_tests.json differs from \
         examples/agents/processor/contract_tests.json: run examples/agents/build.sh"
    );
}

#[test]
fn committed_agents_export_exactly_the_abi() {
    let abi: BTreeMap<String, String> = [
        ("memory", "memory"),
        ("caxton_alloc", "(i32) -> i32"),
        ("caxton_handle", "(i32, i32) -> i64"),
        ("caxton_init", "() -> i32"),
    ]
    .into_iter()
    .map(|(name, signature)| (name.into(), signature.into()))
    .collect();
    for agent in &AGENTS {
        assert_eq!(shape(&committed(agent.name)).exports, abi, "{}", agent.name);
    }
}

#[test]
fn committed_agents_import_only_what_they_use_from_caxton() {
    let signatures = BTreeMap::from([
        ("log", "(i32, i32, i32) -> "),
        ("config", "(i32, i32, i32, i32) -> i32"),
        ("now_ms", "() -> i64"),
    ]);
    for agent in &AGENTS {
        let expected: BTreeMap<(String, String), String> = agent
            .imports
            .iter()
            .map(|name| {
                (
                    ("caxton".to_owned(), (*name).to_owned()),
                    signatures[name].to_owned(),
                )
            })
            .collect();
        let imports = shape(&committed(agent.name)).imports;
        assert_eq!(imports, expected, "{}", agent.name);
    }
}

#[test]
fn committed_agents_carry_their_contract() {
    for agent in &AGENTS {
        let sections = shape(&committed(agent.name)).custom_sections;
        let contracts: Vec<&[u8]> = sections
            .iter()
            .filter(|(name, _)| name == "caxton.contract")
            .map(|(_, data)| data.as_slice())
            .collect();
        assert_eq!(
            contracts.len(),
            1,
            "{}: one caxton.contract section",
            agent.name
        );
        let contract: Value = serde_json::from_slice(contracts[0])
            .unwrap_or_else(|error| panic!("{}: contract is not JSON: {error}", agent.name));
        assert_eq!(
            contract,
            json!({"accepts": agent.accepts, "emits": agent.emits}),
            "{}",
            agent.name
        );
        // Stripped: no names, no debug info, no toolchain paths to make builds differ.
        let others: Vec<&str> = sections
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| *name != "caxton.contract")
            .collect();
        assert!(
            others.is_empty(),
            "{}: extra custom sections {others:?}",
            agent.name
        );
    }
}

// ---------------------------------------------------------------------------------------
// Running the committed modules.

/// What the host side of the imports holds for one instance.
#[derive(Debug, Default)]
struct HostState {
    config: BTreeMap<String, String>,
    logs: Vec<(i32, String)>,
    now_ms: i64,
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        // These tests check behaviour, not speed: the quickest compile wins.
        let mut config = Config::new();
        config.cranelift_opt_level(OptLevel::None);
        Engine::new(&config).expect("the engine starts")
    })
}

/// The committed module `name`, compiled once for all tests.
fn module(name: &'static str) -> Module {
    static MODULES: OnceLock<Mutex<BTreeMap<&'static str, Module>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    modules
        .entry(name)
        .or_insert_with(|| Module::new(engine(), committed(name)).expect("the module compiles"))
        .clone()
}

fn memory_of(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("agent exports no memory"))
}

fn linker() -> Linker<HostState> {
    let mut linker = Linker::new(engine());
    linker
        .func_wrap(
            "caxton",
            "log",
            |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
                let memory = memory_of(&mut caller)?;
                let mut line = vec![0; len as u32 as usize];
                memory.read(&caller, ptr as u32 as usize, &mut line)?;
                let line = String::from_utf8_lossy(&line).into_owned();
                caller.data_mut().logs.push((level, line));
                wasmtime::Result::<()>::Ok(())
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "caxton",
            "config",
            |mut caller: Caller<'_, HostState>,
             key_ptr: i32,
             key_len: i32,
             out_ptr: i32,
             out_cap: i32| {
                let memory = memory_of(&mut caller)?;
                let mut key = vec![0; key_len as u32 as usize];
                memory.read(&caller, key_ptr as u32 as usize, &mut key)?;
                let key = String::from_utf8(key)?;
                let Some(value) = caller.data().config.get(&key).cloned() else {
                    return Ok(-1);
                };
                if value.len() <= out_cap as u32 as usize {
                    memory.write(&mut caller, out_ptr as u32 as usize, value.as_bytes())?;
                }
                wasmtime::Result::<i32>::Ok(value.len() as i32)
            },
        )
        .unwrap();
    linker
        .func_wrap("caxton", "now_ms", |caller: Caller<'_, HostState>| {
            caller.data().now_ms
        })
        .unwrap();
    linker
}

/// One running instance of an agent: one session.
struct Session {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i64>,
}

impl Session {
    fn start(module: &Module, host: HostState) -> Self {
        let mut store = Store::new(engine(), host);
        let instance: Instance = linker().instantiate(&mut store, module).unwrap();
        let init = instance
            .get_typed_func::<(), i32>(&mut store, "caxton_init")
            .unwrap();
        assert_eq!(
            init.call(&mut store, ()).unwrap(),
            0,
            "caxton_init says ready"
        );
        Self {
            memory: instance.get_memory(&mut store, "memory").unwrap(),
            alloc: instance.get_typed_func(&mut store, "caxton_alloc").unwrap(),
            handle: instance
                .get_typed_func(&mut store, "caxton_handle")
                .unwrap(),
            store,
        }
    }

    /// Sends a message as a Caxton host does and returns the reply's bytes.
    fn send_raw(&mut self, message: &[u8]) -> Vec<u8> {
        let len = i32::try_from(message.len()).unwrap();
        let ptr = self.alloc.call(&mut self.store, len).unwrap();
        assert_ne!(ptr, 0, "caxton_alloc gave a buffer");
        self.memory
            .write(&mut self.store, ptr as u32 as usize, message)
            .unwrap();
        let packed = self.handle.call(&mut self.store, (ptr, len)).unwrap();
        self.reply_at(packed)
    }

    fn reply_at(&self, packed: i64) -> Vec<u8> {
        let (ptr, len) = ((packed as u64 >> 32) as usize, packed as u32 as usize);
        let data = self.memory.data(&self.store);
        assert!(ptr + len <= data.len(), "reply lies inside linear memory");
        data[ptr..ptr + len].to_vec()
    }

    fn send(&mut self, message: &Value) -> Value {
        let reply = self.send_raw(message.to_string().as_bytes());
        serde_json::from_slice(&reply).expect("the reply is JSON")
    }
}

fn order(coupon: Option<&str>) -> Value {
    let mut order = json!({
        "kind": "order",
        "id": "o-17",
        "items": [{"sku": "A1", "qty": 2, "price_cents": 1250}],
    });
    if let Some(coupon) = coupon {
        order["coupon"] = json!(coupon);
    }
    order
}

#[test]
fn processor_releases_answer_as_documented() {
    let example = order(Some("SAVE10")).to_string();
    let plain = order(None).to_string();
    let mut v1 = Session::start(&module("processor_v1"), HostState::default());
    let mut v2 = Session::start(&module("processor_v2"), HostState::default());
    let mut v3 = Session::start(&module("processor_v3"), HostState::default());

    let receipt = v1.send_raw(example.as_bytes());
    assert_eq!(
        String::from_utf8(receipt.clone()).unwrap(),
        r#"{"kind":"receipt","id":"o-17","total_cents":2250,"items":1,"discount_cents":250}"#
    );

    // v2: the coupon regression, and nothing else changed.
    let refused: Value = serde_json::from_slice(&v2.send_raw(example.as_bytes())).unwrap();
    assert_eq!(refused["kind"], "error");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains(r#"invalid type: string "SAVE10", expected struct Coupon"#),
        "{refused}"
    );
    assert_eq!(v2.send_raw(plain.as_bytes()), v1.send_raw(plain.as_bytes()));
    assert_eq!(
        v2.store.data().logs.len(),
        1,
        "v2 logs an audit line per priced order"
    );

    // v3: equal after normalisation, not byte for byte.
    let shadow = v3.send_raw(example.as_bytes());
    assert_ne!(shadow, receipt);
    assert_eq!(
        serde_json::from_slice::<Value>(&shadow).unwrap(),
        serde_json::from_slice::<Value>(&receipt).unwrap()
    );

    for session in [&mut v1, &mut v2, &mut v3] {
        let error = session.send(&json!({"kind": "order", "id": "o", "items": []}));
        assert_eq!(
            error,
            json!({"kind": "error", "reason": "order `o` has no items"})
        );
        let garbage = session.send_raw(b"\xff not json");
        assert!(garbage.starts_with(br#"{"kind":"error""#));
    }
}

#[test]
fn an_instance_reuses_its_buffers_across_many_messages() {
    let mut session = Session::start(&module("processor_v1"), HostState::default());
    let message = order(Some("SAVE25")).to_string();
    let expected = session.send_raw(message.as_bytes());
    let pages = session.memory.size(&session.store);
    for _ in 0..2000 {
        assert_eq!(session.send_raw(message.as_bytes()), expected);
    }
    assert_eq!(
        session.memory.size(&session.store),
        pages,
        "memory did not grow"
    );
}

#[test]
fn a_region_not_from_caxton_alloc_gets_an_error_reply() {
    let mut session = Session::start(&module("processor_v1"), HostState::default());
    let packed = session.handle.call(&mut session.store, (16, 8)).unwrap();
    let reply: Value = serde_json::from_slice(&session.reply_at(packed)).unwrap();
    assert_eq!(reply["kind"], "error");
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .contains("is not inside a buffer from caxton_alloc")
    );
}

#[test]
fn chat_sessions_keep_their_state_and_show_their_release() {
    for (name, version) in [("chat_v1", "v1"), ("chat_v2", "v2")] {
        let host = HostState {
            config: BTreeMap::from([("prompt".to_owned(), "Ada\nBe brief.".to_owned())]),
            now_ms: 1_000,
            ..HostState::default()
        };
        let module = module(name);
        let mut session = Session::start(&module, host);
        let mut other = Session::start(&module, HostState::default());
        for (turn, text) in ["hi", "how are you", "tell me more"]
            .into_iter()
            .enumerate()
        {
            let reply = session.send(&json!({"kind": "say", "text": text}));
            assert_eq!(reply["kind"], "reply", "{name}: {reply}");
            assert_eq!(reply["turn"], turn + 1, "{name}");
            assert_eq!(reply["version"], version, "{name}");
            assert!(
                reply["text"].as_str().unwrap().contains("Ada"),
                "{name}: {reply}"
            );
        }
        // A second session on the same module starts from nothing, without a prompt.
        let first = other.send(&json!({"kind": "say", "text": "hello"}));
        assert_eq!(first["turn"], 1, "{name}");
        assert!(
            first["text"].as_str().unwrap().contains("Assistant"),
            "{name}"
        );

        session.store.data_mut().now_ms = 4_500;
        let end = session.send(&json!({"kind": "end"}));
        assert_eq!(end["ended"], true, "{name}");
        assert_eq!(end["turn"], 3, "{name}");
        assert_eq!(end["duration_ms"], 3_500, "{name}");
        let logs = &session.store.data().logs;
        assert_eq!(logs.len(), 4, "{name}: three turns and the end are logged");
        assert_eq!(logs[3].0, 2, "{name}: the end is logged at info");

        let error = session.send(&json!({"kind": "shout"}));
        assert_eq!(
            error["reason"], "unsupported kind `shout`: chat accepts `say` and `end`",
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Rebuilding them.

fn rustc_output(args: &[&str]) -> Option<String> {
    let output = Command::new("rustc").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Why a rebuild cannot be compared here, if it cannot.
fn reason_to_skip_rebuild() -> Option<String> {
    let libdir = rustc_output(&[
        "--print",
        "target-libdir",
        "--target",
        "wasm32-unknown-unknown",
    ]);
    let installed = libdir.is_some_and(|dir| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with("libcore-"))
        })
    });
    if !installed {
        return Some(
            "the wasm32-unknown-unknown target is not installed \
             (`rustup target add wasm32-unknown-unknown`)"
                .into(),
        );
    }
    let recorded = std::fs::read_to_string(samples_dir().join("rustc-version.txt"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let current = rustc_output(&["--version"]).unwrap_or_default();
    (recorded != current).then(|| {
        format!("the committed agents were built by `{recorded}`, this toolchain is `{current}`")
    })
}

#[test]
fn rebuilding_the_agents_reproduces_the_committed_files() {
    if let Some(reason) = reason_to_skip_rebuild() {
        println!("skipped rebuilding the sample agents: {reason}");
        return;
    }
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("caxton-agents-rebuild");
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(agents_dir().join("build.sh"))
        .arg(out.path())
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("bash runs build.sh");
    assert!(status.success(), "build.sh failed: {status}");
    for agent in &AGENTS {
        let rebuilt = std::fs::read(out.path().join(format!("{}.wasm", agent.name))).unwrap();
        assert!(
            rebuilt == committed(agent.name),
            "{}.wasm differs from its rebuild: run examples/agents/build.sh and commit the result",
            agent.name
        );
    }
    let copied = std::fs::read(out.path().join("processor_contract_tests.json")).unwrap();
    let committed_copy =
        std::fs::read(samples_dir().join("processor_contract_tests.json")).unwrap();
    assert!(
        copied == committed_copy,
        "build.sh copies the contract tests as committed"
    );
}
