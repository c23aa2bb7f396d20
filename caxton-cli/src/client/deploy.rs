//! `caxton deploy agent MODULE …`: upload the module, create the deployment, follow its
//! rollout through the event stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caxton_strategies::config::CanarySteps;
use caxton_strategies::duration::HumanDuration;
use caxton_strategies::{Condition, RolloutSpec};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::events::{self, Ending, EventReader};
use super::http::{Client, ConnectArgs, Method, Payload, segment};
use super::progress::Progress;
use crate::output::{CommandResult, Failure, MAX_TEXT_BYTES, Mark, Printer, Verdict, read_text};

/// The largest module uploaded: 256 MiB.
const MAX_MODULE_BYTES: u64 = 256 * 1024 * 1024;

/// How often a deployment is asked for when the event stream is gone.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// What `deploy` deploys.
#[derive(Debug, Subcommand)]
pub(crate) enum DeployTarget {
    /// Deploy a new version of an agent from its WebAssembly module.
    Agent(Box<DeployArgs>),
}

/// Arguments of `caxton deploy agent`.
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// The agent's WebAssembly module.
    #[arg(value_name = "MODULE")]
    pub(crate) module: PathBuf,
    /// The agent to deploy to (default: the module's file name without extension).
    #[arg(long, value_name = "AGENT")]
    pub(crate) name: Option<String>,
    /// A label for the deployment, e.g. v2.
    #[arg(long, value_name = "LABEL")]
    pub(crate) label: Option<String>,
    /// The rollout strategy with its default settings: direct, blue-green, canary, shadow
    /// or rainbow.
    #[arg(long, value_name = "STRATEGY", conflicts_with = "spec")]
    pub(crate) strategy: Option<String>,
    /// A rollout spec, YAML or JSON (`deployment:` document).
    #[arg(long, value_name = "FILE")]
    pub(crate) spec: Option<PathBuf>,
    /// Canary steps as `weight:hold,…`, e.g. "5:5m,25:10m,50:10m".
    #[arg(long, value_name = "STEPS")]
    pub(crate) canary_stages: Option<String>,
    /// Rollback conditions as `condition,…`, e.g. "error_rate>1%,p99>100ms".
    #[arg(long, value_name = "CONDITIONS")]
    pub(crate) rollback_on: Option<String>,
    /// The model as PROVIDER/NAME/REVISION.
    #[arg(long, value_name = "P/N/R")]
    pub(crate) model: Option<String>,
    /// A file holding the agent's prompt.
    #[arg(long, value_name = "FILE")]
    pub(crate) prompt_file: Option<PathBuf>,
    /// A file holding the agent's tool definitions, JSON or YAML.
    #[arg(long, value_name = "FILE")]
    pub(crate) tools_file: Option<PathBuf>,
    /// A configuration value granted to the agent, KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub(crate) config: Vec<String>,
    /// A secret granted to the agent, by name (repeatable).
    #[arg(long = "secret", value_name = "NAME")]
    pub(crate) secrets: Vec<String>,
    /// Conversations are sessions pinned to the deployment that started them.
    #[arg(long)]
    pub(crate) sessions: bool,
    /// The source commit, kept in the deployment's metadata.
    #[arg(long, value_name = "COMMIT")]
    pub(crate) commit: Option<String>,
    /// Who deploys it, kept in the deployment's metadata.
    #[arg(long, value_name = "NAME")]
    pub(crate) author: Option<String>,
    /// A metadata label, KEY=VALUE (repeatable; keys starting with `caxton.` are the host's).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub(crate) meta: Vec<String>,
    /// Follow the rollout to its end: exit 0 promoted, 1 rolled back, failed or aborted.
    #[arg(long)]
    pub(crate) wait: bool,
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// The agent a module deploys to by default: its file name without extension.
pub(crate) fn agent_name(args: &DeployArgs) -> Result<String, Failure> {
    if let Some(name) = &args.name {
        if name.trim().is_empty() {
            return Err(Failure::new("--name: the agent's name is empty"));
        }
        return Ok(name.clone());
    }
    args.module
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Failure::new(format!(
                "{}: no agent name in the file name; give --name",
                args.module.display()
            ))
        })
}

/// `provider/name/revision` as the API's model object; the name may itself hold `/`.
pub(crate) fn parse_model(text: &str) -> Result<Value, Failure> {
    let bad = || {
        Failure::new(format!(
            "--model {text:?}: expected PROVIDER/NAME/REVISION, e.g. anthropic/claude-sonnet/2026-01-01"
        ))
    };
    let (provider, rest) = text.split_once('/').ok_or_else(bad)?;
    let (name, revision) = rest.rsplit_once('/').ok_or_else(bad)?;
    if [provider, name, revision]
        .iter()
        .any(|p| p.trim().is_empty())
    {
        return Err(bad());
    }
    Ok(json!({"provider": provider, "name": name, "revision": revision}))
}

/// `KEY=VALUE` pairs as the API's config object; a key given twice is refused.
pub(crate) fn parse_config(pairs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    parse_pairs("--config", pairs)
}

/// `KEY=VALUE` pairs of the flag `flag`; an empty key, spaces in it or a key given twice
/// are refused.
fn parse_pairs(flag: &str, pairs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut map = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::new(format!("{flag} {pair:?}: expected KEY=VALUE")));
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Failure::new(format!(
                "{flag} {pair:?}: the key is empty or holds spaces"
            )));
        }
        if map.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(Failure::new(format!("{flag}: {key} is given twice")));
        }
    }
    Ok(map)
}

/// The rollout object of the create request: `{"strategy": S}`, the spec file's
/// `deployment` object, either with the compact flags applied, or `None` to let the
/// server choose. Checked locally with [`RolloutSpec`] so a wrong field fails here.
pub(crate) fn rollout(
    strategy: Option<&str>,
    spec: Option<(&Path, &str)>,
    canary_stages: Option<&str>,
    rollback_on: Option<&str>,
) -> Result<Option<Value>, Failure> {
    let mut deployment = match (strategy, spec) {
        (Some(_), Some(_)) => {
            return Err(Failure::new("give --strategy or --spec, not both"));
        }
        (Some(strategy), None) => json!({ "strategy": strategy }),
        (None, Some((path, text))) => spec_object(path, text)?,
        (None, None) if canary_stages.is_some() || rollback_on.is_some() => {
            json!({"strategy": "canary"})
        }
        (None, None) => return Ok(None),
    };
    let shown = match spec {
        Some((path, _)) => path.display().to_string(),
        None => "--strategy".to_owned(),
    };
    // The object as given first, so its own errors name its own fields; then the flags
    // against its strategy (stages for a canary or rainbow, conditions for a strategy
    // with gates), in the flags' own words.
    check(&deployment, &shown)?
        .with_compact(canary_stages, rollback_on)
        .map_err(Failure::new)?;
    if let Some(text) = canary_stages {
        let steps = CanarySteps::parse_compact(text)
            .map_err(|e| Failure::new(format!("--canary-stages: {e}")))?;
        set_canary_stages(&mut deployment, &steps);
    }
    if let Some(text) = rollback_on {
        let conditions =
            Condition::parse_list(text).map_err(|e| Failure::new(format!("--rollback-on: {e}")))?;
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|c| Value::String(c.to_string()))
            .collect();
        if let Some(object) = deployment.as_object_mut() {
            object.insert("rollback_on".to_owned(), Value::Array(conditions));
        }
    }
    // What is sent is a valid spec too.
    check(&deployment, &shown)?;
    Ok(Some(deployment))
}

/// Checks a `deployment` object with the rollout spec parser.
fn check(deployment: &Value, shown: &str) -> Result<RolloutSpec, Failure> {
    RolloutSpec::from_json(&json!({ "deployment": deployment }).to_string())
        .map_err(|e| Failure::new(format!("{shown}: {e}")))
}

/// The spec file's `deployment` object as JSON, after the file parsed as a spec.
fn spec_object(path: &Path, text: &str) -> Result<Value, Failure> {
    let shown = path.display();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let json_text = match extension.as_deref() {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    let parsed = if json_text {
        RolloutSpec::from_json(text)
    } else {
        RolloutSpec::from_yaml(text)
    };
    parsed.map_err(|e| Failure::new(format!("{shown}: {e}")))?;
    let document: Value = if json_text {
        serde_json::from_str(text).map_err(|e| Failure::new(format!("{shown}: {e}")))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| Failure::new(format!("{shown}: {e}")))?
    };
    match document.get("deployment") {
        Some(object @ Value::Object(_)) => Ok(object.clone()),
        _ => Err(Failure::new(format!(
            "{shown}: no `deployment` object at the top level"
        ))),
    }
}

/// Replaces the `canary` and `full` stages with `steps` then `full: 100%`, where the first
/// of them stood (after `validate` and `warm_up` stages otherwise).
fn set_canary_stages(deployment: &mut Value, steps: &CanarySteps) {
    let Some(object) = deployment.as_object_mut() else {
        return;
    };
    let mut ramp: Vec<Value> = steps
        .steps()
        .iter()
        .map(|step| {
            json!({"canary": {"weight": step.weight.to_string(), "hold": HumanDuration(step.hold).to_string()}})
        })
        .collect();
    ramp.push(json!({"full": "100%"}));
    let is_ramp = |stage: &Value| {
        stage
            .as_object()
            .is_some_and(|s| s.contains_key("canary") || s.contains_key("full"))
    };
    let old = match object.remove("stages") {
        Some(Value::Array(stages)) => stages,
        _ => Vec::new(),
    };
    let at = old.iter().position(is_ramp).unwrap_or(old.len());
    let mut stages: Vec<Value> = old[..at].iter().filter(|s| !is_ramp(s)).cloned().collect();
    stages.extend(ramp);
    stages.extend(old[at..].iter().filter(|s| !is_ramp(s)).cloned());
    object.insert("stages".to_owned(), Value::Array(stages));
}

/// Reads a tools file: JSON, or YAML turned into the same JSON.
fn read_tools(path: &Path) -> Result<Value, Failure> {
    let text = read_text(path, MAX_TEXT_BYTES)?;
    let shown = path.display();
    match serde_json::from_str::<Value>(&text) {
        Ok(value) => Ok(value),
        Err(json_error) if text.trim_start().starts_with(['{', '[']) => {
            Err(Failure::new(format!("{shown}: {json_error}")))
        }
        Err(_) => serde_saphyr::from_str::<Value>(&text)
            .map_err(|e| Failure::new(format!("{shown}: not JSON or YAML: {e}"))),
    }
}

/// The create request's body, from everything but the module.
pub(crate) fn request_body(args: &DeployArgs, digest: &str) -> Result<Value, Failure> {
    let mut body = Map::new();
    body.insert("module".to_owned(), Value::String(digest.to_owned()));
    if let Some(label) = &args.label {
        body.insert("label".to_owned(), Value::String(label.clone()));
    }
    if let Some(model) = &args.model {
        body.insert("model".to_owned(), parse_model(model)?);
    }
    if let Some(path) = &args.prompt_file {
        body.insert(
            "prompt".to_owned(),
            Value::String(read_text(path, MAX_TEXT_BYTES)?),
        );
    }
    if let Some(path) = &args.tools_file {
        body.insert("tools".to_owned(), read_tools(path)?);
    }
    if !args.config.is_empty() {
        let config = parse_config(&args.config)?;
        body.insert("config".to_owned(), json!(config));
    }
    if !args.secrets.is_empty() {
        if let Some(bad) = args.secrets.iter().find(|s| s.trim().is_empty()) {
            return Err(Failure::new(format!(
                "--secret {bad:?}: a secret needs a name"
            )));
        }
        body.insert("secrets".to_owned(), json!(args.secrets));
    }
    if args.sessions {
        body.insert("sessions".to_owned(), Value::String("sessions".to_owned()));
    }
    if args.commit.is_some() || args.author.is_some() || !args.meta.is_empty() {
        let mut metadata = Map::new();
        if let Some(commit) = &args.commit {
            metadata.insert("commit".to_owned(), Value::String(commit.clone()));
        }
        if let Some(author) = &args.author {
            metadata.insert("author".to_owned(), Value::String(author.clone()));
        }
        if !args.meta.is_empty() {
            metadata.insert(
                "labels".to_owned(),
                json!(parse_pairs("--meta", &args.meta)?),
            );
        }
        body.insert("metadata".to_owned(), Value::Object(metadata));
    }
    let spec_text = match &args.spec {
        Some(path) => Some(read_text(path, MAX_TEXT_BYTES)?),
        None => None,
    };
    let rollout = rollout(
        args.strategy.as_deref(),
        args.spec.as_deref().zip(spec_text.as_deref()),
        args.canary_stages.as_deref(),
        args.rollback_on.as_deref(),
    )?;
    if let Some(rollout) = rollout {
        body.insert("rollout".to_owned(), rollout);
    }
    Ok(Value::Object(body))
}

/// Reads the module, refusing what is not a file or is too large.
fn read_module(path: &Path) -> Result<Vec<u8>, Failure> {
    let shown = path.display();
    let cannot = |e: std::io::Error| Failure::new(format!("cannot read {shown}: {e}"));
    let metadata = std::fs::metadata(path).map_err(cannot)?;
    if metadata.len() > MAX_MODULE_BYTES {
        return Err(Failure::new(format!(
            "{shown}: larger than {MAX_MODULE_BYTES} bytes"
        )));
    }
    std::fs::read(path).map_err(cannot)
}

/// `12 KiB`, `1.5 MiB`, `800 B`.
pub(crate) fn size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{} KiB", (bytes as f64 / 1024.0).round() as u64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// `sha256:0123456789ab…`.
pub(crate) fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) if hex.len() > 12 => format!("{algorithm}:{}…", &hex[..12]),
        _ => digest.to_owned(),
    }
}

/// Runs `caxton deploy agent`.
pub(crate) fn run(args: DeployArgs) -> CommandResult {
    let agent = agent_name(&args)?;
    // Everything local first: a bad flag fails before anything is sent.
    request_body(&args, "sha256:")?;
    let module = read_module(&args.module)?;
    let client = Client::connect(&args.connect)?;
    let printer = Printer::new();
    let progress = Progress::start(!args.connect.json, "Uploading the module");

    let started = Instant::now();
    let uploaded = client.expect(Method::Put, "/v1/artifacts", Payload::Bytes(&module))?;
    let uploaded: Value = uploaded.json()?;
    let digest = uploaded
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::new("the server's upload answer has no digest"))?
        .to_owned();
    if !args.connect.json {
        progress.mark(
            &printer,
            Mark::Done,
            &format!(
                "Module uploaded {} ({}, {})",
                short_digest(&digest),
                size(module.len() as u64),
                events::seconds(started.elapsed().as_secs_f64())
            ),
        );
    }

    let body = request_body(&args, &digest)?;
    progress.message("Creating the deployment");
    let agent_path = format!("/v1/agents/{}", segment(&agent));
    let created = client.expect(
        Method::Post,
        &format!("{agent_path}/deployments"),
        Payload::Json(&body),
    )?;
    if args.connect.json {
        printer.line(&created.json_line());
    }
    let deployment: Value = created.json()?;
    let id = deployment
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::new("the server's create answer has no id"))?
        .to_owned();

    progress.message("Waiting for the rollout");
    let follow = Follow {
        client: &client,
        printer: &printer,
        progress: &progress,
        agent: &agent,
        id: &id,
        wait: args.wait,
        json: args.connect.json,
    };
    let verdict = follow.run(&format!("{agent_path}/events"))?;
    progress.finish();
    printer.finish()?;
    Ok(verdict)
}

/// Following one deployment's rollout.
struct Follow<'a> {
    client: &'a Client,
    printer: &'a Printer,
    progress: &'a Progress,
    agent: &'a str,
    id: &'a str,
    wait: bool,
    json: bool,
}

impl Follow<'_> {
    fn run(&self, events_path: &str) -> CommandResult {
        // A stream that cannot be opened is not the end: the deployment can be asked for.
        if let Ok(stream) = self.client.stream(events_path) {
            let mut reader = EventReader::new(stream, self.id);
            let mut previous_at = None;
            let mut announced = false;
            while let Some(item) = reader.next_event() {
                if self.json {
                    self.printer.line(&item.raw);
                } else {
                    for (mark, text) in events::lines(&item.event, previous_at) {
                        self.progress.mark(self.printer, mark, &text);
                    }
                }
                previous_at = Some(item.event.at_s);
                if let Some(ending) = events::ending(&item.event) {
                    return Ok(self.ended(&ending));
                }
                if events::is_stage_start(&item.event) && !announced {
                    self.announce();
                    announced = true;
                    if !self.wait {
                        return Ok(Verdict::Positive);
                    }
                }
            }
        }
        self.poll()
    }

    fn announce(&self) {
        if self.json {
            return;
        }
        self.progress.mark(
            self.printer,
            Mark::Progress,
            &format!("Deployment ID: {}", self.id),
        );
        if !self.wait {
            self.progress.mark(
                self.printer,
                Mark::Progress,
                &format!("Follow with: caxton status {} --watch", self.agent),
            );
        }
    }

    fn ended(&self, ending: &Ending) -> Verdict {
        match ending {
            Ending::Promoted => {
                if !self.json {
                    self.progress.mark(
                        self.printer,
                        Mark::Done,
                        &format!("{} is production", self.id),
                    );
                }
                Verdict::Positive
            }
            Ending::NotPromoted { outcome, reason } => {
                if !self.json {
                    let reason = reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    self.progress.mark(
                        self.printer,
                        Mark::Failed,
                        &format!(
                            "{} not deployed ({}){reason}",
                            self.id,
                            outcome.replace('_', " ")
                        ),
                    );
                }
                Verdict::Negative
            }
        }
    }

    /// Asks for the deployment every second until its state settles the question.
    fn poll(&self) -> CommandResult {
        let path = format!("/v1/deployments/{}", segment(self.id));
        loop {
            let (answer, deployment) = self.client.get_json(&path)?;
            let state = deployment
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("");
            let production = deployment
                .get("is_production")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let settled = match state {
                "failed" | "rolled_back" | "retired" => Some(Verdict::Negative),
                "draining" if !production => Some(Verdict::Negative),
                _ if production => Some(Verdict::Positive),
                "deploying" | "running" if !self.wait => Some(Verdict::Positive),
                _ => None,
            };
            if let Some(verdict) = settled {
                if self.json {
                    self.printer.line(&answer.json_line());
                } else {
                    let mark = if verdict == Verdict::Positive {
                        Mark::Done
                    } else {
                        Mark::Failed
                    };
                    let role = if production { ", production" } else { "" };
                    self.progress.mark(
                        self.printer,
                        mark,
                        &format!("{} is {}{role}", self.id, state.replace('_', " ")),
                    );
                    if verdict == Verdict::Positive && !production {
                        self.announce();
                    }
                }
                return Ok(verdict);
            }
            std::thread::sleep(POLL_EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        target: DeployTarget,
    }

    fn args(line: &[&str]) -> DeployArgs {
        let mut all = vec!["deploy", "agent"];
        all.extend_from_slice(line);
        match Cli::try_parse_from(all).unwrap().target {
            DeployTarget::Agent(args) => *args,
        }
    }

    #[test]
    fn models_are_provider_name_revision() {
        assert_eq!(
            parse_model("anthropic/claude-sonnet/2026-01-01").unwrap(),
            json!({"provider": "anthropic", "name": "claude-sonnet", "revision": "2026-01-01"})
        );
        assert_eq!(
            parse_model("hf/meta-llama/Llama-3/main").unwrap()["name"],
            "meta-llama/Llama-3"
        );
        for bad in ["anthropic", "a/b", "a//c", "/b/c", "a/b/"] {
            let err = parse_model(bad).unwrap_err();
            assert!(
                err.reason().contains("PROVIDER/NAME/REVISION"),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn config_pairs_are_checked() {
        let config = parse_config(&["region=eu".to_owned(), "url=a=b".to_owned()]).unwrap();
        assert_eq!(config["region"], "eu");
        assert_eq!(config["url"], "a=b");
        assert!(
            parse_config(&["novalue".to_owned()])
                .unwrap_err()
                .reason()
                .contains("KEY=VALUE")
        );
        assert!(parse_config(&["=x".to_owned()]).is_err());
        let meta = parse_pairs("--meta", &["ticket".to_owned()]).unwrap_err();
        assert!(meta.reason().starts_with("--meta"), "{}", meta.reason());
        let twice = parse_config(&["a=1".to_owned(), "a=2".to_owned()]).unwrap_err();
        assert!(twice.reason().contains("twice"), "{twice:?}");
    }

    #[test]
    fn a_bare_strategy_is_sent_as_is() {
        for strategy in ["direct", "blue-green", "canary", "shadow", "rainbow"] {
            assert_eq!(
                rollout(Some(strategy), None, None, None).unwrap(),
                Some(json!({"strategy": strategy}))
            );
        }
        let err = rollout(Some("yolo"), None, None, None).unwrap_err();
        assert!(err.reason().contains("--strategy"), "{err:?}");
        assert_eq!(rollout(None, None, None, None).unwrap(), None);
    }

    #[test]
    fn a_yaml_spec_becomes_its_deployment_object() {
        let yaml = "deployment:\n  strategy: canary\n  stages:\n    - validate: 30s\n    - canary: { weight: 5%, hold: 5m }\n    - full: 100%\n  rollback_on:\n    - error_rate > 1%\n";
        let got = rollout(None, Some((Path::new("spec.yaml"), yaml)), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            json!({"strategy": "canary", "stages": [{"validate": "30s"}, {"canary": {"weight": "5%", "hold": "5m"}}, {"full": "100%"}], "rollback_on": ["error_rate > 1%"]})
        );
    }

    #[test]
    fn a_wrong_spec_names_the_file_and_the_field() {
        let yaml =
            "deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 5%, hold: 5x }\n";
        let err = rollout(None, Some((Path::new("bad.yaml"), yaml)), None, None).unwrap_err();
        assert!(err.reason().starts_with("bad.yaml: "), "{err:?}");
        assert!(
            err.reason().contains("deployment.stages[0].canary.hold"),
            "{err:?}"
        );
        let err = rollout(
            None,
            Some((Path::new("x.json"), r#"{"strategy": "canary"}"#)),
            None,
            None,
        )
        .unwrap_err();
        assert!(err.reason().starts_with("x.json: "), "{err:?}");
    }

    #[test]
    fn compact_flags_replace_the_ramp_and_the_conditions() {
        let yaml = "deployment:\n  strategy: canary\n  stages:\n    - validate: 30s\n    - canary: { weight: 5%, hold: 5m }\n    - full: 100%\n  rollback_on:\n    - error_rate > 1%\n";
        let got = rollout(
            None,
            Some((Path::new("spec.yaml"), yaml)),
            Some("10:1m,50:90s"),
            Some("p99>100ms"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got["stages"],
            json!([{"validate": "30s"}, {"canary": {"weight": "10%", "hold": "1m"}}, {"canary": {"weight": "50%", "hold": "1m30s"}}, {"full": "100%"}])
        );
        assert_eq!(got["rollback_on"].as_array().unwrap().len(), 1);
        check(&got, "t").unwrap();
        let alone = rollout(None, None, Some("5:5m"), None).unwrap().unwrap();
        assert_eq!(alone["strategy"], "canary");
        check(&alone, "t").unwrap();
        let err = rollout(Some("direct"), None, Some("5:5m"), None).unwrap_err();
        assert!(err.reason().contains("--canary-stages"), "{err:?}");
        let err = rollout(None, None, Some("5:5x"), None).unwrap_err();
        assert!(err.reason().starts_with("--canary-stages"), "{err:?}");
    }

    #[test]
    fn the_request_body_carries_every_flag() {
        let dir = tempfile::tempdir().unwrap();
        let prompt = dir.path().join("prompt.txt");
        std::fs::write(&prompt, "You process orders.\n").unwrap();
        let tools = dir.path().join("tools.yaml");
        std::fs::write(&tools, "- name: lookup\n  description: find an order\n").unwrap();
        let prompt = prompt.to_str().unwrap();
        let tools = tools.to_str().unwrap();
        let args = args(&[
            "processor.wasm",
            "--label",
            "v2",
            "--strategy",
            "canary",
            "--model",
            "p/n/r",
            "--prompt-file",
            prompt,
            "--tools-file",
            tools,
            "--config",
            "a=1",
            "--secret",
            "KEY",
            "--sessions",
            "--commit",
            "7f8d9e1",
            "--author",
            "ops",
            "--meta",
            "ticket=REL-42",
        ]);
        assert_eq!(agent_name(&args).unwrap(), "processor");
        let body = request_body(&args, "sha256:ab").unwrap();
        assert_eq!(
            body,
            json!({
                "module": "sha256:ab", "label": "v2",
                "model": {"provider": "p", "name": "n", "revision": "r"},
                "prompt": "You process orders.\n",
                "tools": [{"name": "lookup", "description": "find an order"}],
                "config": {"a": "1"}, "secrets": ["KEY"], "sessions": "sessions",
                "metadata": {"commit": "7f8d9e1", "author": "ops", "labels": {"ticket": "REL-42"}},
                "rollout": {"strategy": "canary"}
            })
        );
    }

    #[test]
    fn sizes_and_digests_read_well() {
        assert_eq!(size(800), "800 B");
        assert_eq!(size(12 * 1024 + 100), "12 KiB");
        assert_eq!(size(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab…"
        );
        assert_eq!(short_digest("sha256:ab"), "sha256:ab");
    }
}
