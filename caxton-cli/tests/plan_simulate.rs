//! `caxton plan` and `caxton simulate`, run as a user would: the built binary, its exit
//! codes, its standard output and its one-line errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SPEC: &str = "
deployment:
  strategy: canary
  stages:
    - validate: 30s
    - canary: { weight: 5%, hold: 5m }
    - canary: { weight: 25%, hold: 10m }
    - canary: { weight: 50%, hold: 10m }
    - full: 100%
  rollback_on:
    - error_rate > 1%
    - p99_latency > 100ms
";

fn caxton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caxton"))
        .args(args)
        .output()
        .expect("the caxton binary runs")
}

fn spec_file(text: &str, extension: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(extension)
        .tempfile()
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn assert_could_not_run(output: &Output, mentions: &[&str]) {
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(output));
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    for text in mentions {
        assert!(err.contains(text), "{err:?} does not mention {text:?}");
    }
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {}",
        stdout(output)
    );
}

#[test]
fn plan_prints_the_timeline_of_a_yaml_spec() {
    let spec = spec_file(SPEC, ".yaml");
    let output = caxton(&["plan", spec.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("→ Plan: canary rollout, 25m30s"), "{text}");
    // Every gate that decides is listed with its interval and data threshold; the spec
    // names no judge, so none is listed.
    assert!(
        text.contains("condition error_rate > 1%, every 1m once 100 requests are in"),
        "{text}"
    );
    assert!(
        text.contains("condition p99_latency > 100ms, every 1m once 100 requests are in"),
        "{text}"
    );
    assert!(!text.contains("judge"), "{text}");
    assert!(text.contains("     5m  canary 25% for 10m\n"), "{text}");
    assert!(text.contains("    25m  promote to 100%"), "{text}");
}

#[test]
fn plan_shows_the_judge_when_the_spec_turns_it_on() {
    let spec = spec_file(&format!("{SPEC}  judge: {{ latency: 10% }}\n"), ".yaml");
    let output = caxton(&["plan", spec.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("judge candidate latency worse than the baseline's by more than 10%"),
        "{text}"
    );
    let output = caxton(&["plan", spec.path().to_str().unwrap(), "--json"]);
    let plan = &json_lines(&output)[0];
    let kinds: Vec<&str> = plan["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["condition", "condition", "judge"]);
    assert_eq!(plan["gates"][0]["check_interval_s"], 60.0);
    assert_eq!(plan["gates"][2]["min_requests"], 100);
}

#[test]
fn plan_json_is_one_object_with_the_steps() {
    let spec = spec_file(
        &SPEC.replace("canary\n", "canary\n  check_interval: 30s\n"),
        ".yml",
    );
    let output = caxton(&["plan", spec.path().to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    let plan = &lines[0];
    assert_eq!(plan["strategy"], "canary");
    assert_eq!(plan["check_interval_s"], 30.0);
    let stages: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages[..3],
        ["canary.5_percent", "canary.25_percent", "canary.50_percent"]
    );
    assert_eq!(plan["steps"][2]["starts_at_s"], 900.0);
    assert_eq!(plan["nominal_duration_s"], 1530.0);
}

#[test]
fn plan_reads_json_specs_and_the_compact_flags() {
    let json = spec_file(r#"{"deployment": {"strategy": "blue-green"}}"#, ".json");
    let output = caxton(&["plan", json.path().to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(json_lines(&output)[0]["strategy"], "blue-green");
    let output = caxton(&[
        "plan",
        "--canary-stages",
        "10:1m,50:2m",
        "--rollback-on",
        "error_rate>2%",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = &json_lines(&output)[0];
    assert_eq!(plan["steps"][1]["percentage"], 50.0);
    assert_eq!(plan["rollback_on"][0], "error_rate > 2%");
}

#[test]
fn plan_of_a_wrong_spec_exits_2_naming_the_place() {
    let spec = spec_file(
        &SPEC.replace(
            "hold: 10m }\n    - canary: { weight: 50%",
            "hold: 10q }\n    - canary: { weight: 50%",
        ),
        ".yaml",
    );
    let output = caxton(&["plan", spec.path().to_str().unwrap()]);
    assert_could_not_run(
        &output,
        &[
            "deployment.stages[2].canary.hold",
            "line 7",
            "unknown unit \"q\"",
        ],
    );
    let spec = spec_file(
        "deployment:\n  strategy: canary\n  rollback_on: [error_rate > 1%%]\n",
        ".yaml",
    );
    let output = caxton(&["plan", spec.path().to_str().unwrap()]);
    assert_could_not_run(&output, &["deployment.rollback_on[0]", "byte 15"]);
}

#[test]
fn plan_needs_a_spec_it_can_read() {
    assert_could_not_run(&caxton(&["plan"]), &["no rollout spec"]);
    assert_could_not_run(
        &caxton(&["plan", "/nonexistent/spec.yaml"]),
        &["cannot read /nonexistent/spec.yaml"],
    );
    assert_could_not_run(
        &caxton(&["plan", "--rollback-on", "error_rate>>1%"]),
        &["--rollback-on", "byte 11"],
    );
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    assert_could_not_run(&caxton(&["simulate", "--frobnicate"]), &["--frobnicate"]);
    assert_could_not_run(&caxton(&["launch"]), &["launch"]);
    let help = caxton(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("simulate"));
}

#[test]
fn simulate_promotes_a_healthy_candidate_with_exit_0_and_json_events() {
    let spec = spec_file(SPEC, ".yaml");
    let output = caxton(&[
        "simulate",
        spec.path().to_str().unwrap(),
        "--baseline",
        "error_rate=0.2%,p99=40ms,rps=50",
        "--candidate",
        "error_rate=0.2%,p99=40ms",
        "--seed",
        "4",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let events = json_lines(&output);
    for event in &events {
        assert!(event["at_s"].is_number(), "{event}");
        assert!(event["event"].is_string(), "{event}");
    }
    let last = events.last().unwrap();
    assert_eq!(last["event"], "finished");
    assert_eq!(last["outcome"], "promoted");
    assert!(last.get("reason").is_none());
    // 5 + 10 + 10 minutes, and one more at 5 %: 250 latency samples cannot bound a 99th
    // percentile from above at 95 % confidence (299 can).
    assert_eq!(last["at_s"], 1560.0);
    let percentages: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "stage_started")
        .map(|e| e["percentage"].as_f64().unwrap())
        .collect();
    assert_eq!(percentages, [5.0, 25.0, 50.0]);
    assert!(
        events
            .iter()
            .all(|e| e["deployment_id"] == "candidate" && e["agent_id"] == "simulated-agent")
    );
}

#[test]
fn simulate_rolls_back_a_failing_candidate_with_exit_1() {
    let spec = spec_file(SPEC, ".yaml");
    let output = caxton(&[
        "simulate",
        spec.path().to_str().unwrap(),
        "--baseline",
        "error_rate=0.2%,p99=40ms,rps=50",
        "--candidate",
        "error_rate=4%,p99=40ms",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let events = json_lines(&output);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "finished");
    assert_eq!(last["outcome"], "rolled_back");
    assert!(
        last["reason"].as_str().unwrap().contains("error_rate"),
        "{last}"
    );
    assert!(events.iter().any(|e| e["event"] == "rolled_back"));
}

#[test]
fn simulate_prints_a_timeline_for_people() {
    let output = caxton(&[
        "simulate",
        "--canary-stages",
        "5:5m,25:10m,50:10m",
        "--rollback-on",
        "error_rate>1%,p99>100ms",
        "--baseline",
        "error_rate=0.2%,p99=40ms,rps=50",
        "--candidate",
        "error_rate=0.2%,p99=40ms",
        "--seed",
        "4",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("0s  ✓ Canary 5% started"), "{text}");
    assert!(text.contains("0s  → Monitoring for 5 minutes..."), "{text}");
    assert!(
        text.contains("5m  → Holding canary 5 percent 1m longer: not yet shown within the gates"),
        "{text}"
    );
    assert!(text.contains("6m  ✓ Error rate: "), "{text}");
    assert!(text.contains("6m  ✓ Canary 25% started"), "{text}");
    assert!(
        text.contains("26m  ✓ Finished: promoted after 26m"),
        "{text}"
    );
}

#[test]
fn simulate_is_reproducible_for_a_seed() {
    let args = [
        "simulate",
        "--canary-stages",
        "5:5m,25:10m",
        "--rollback-on",
        "error_rate>1%",
        "--baseline",
        "error_rate=0.5%,p99=40ms,rps=20",
        "--candidate",
        "error_rate=0.8%,p99=50ms",
        "--seed",
        "42",
        "--json",
    ];
    let first = caxton(&args);
    let second = caxton(&args);
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(first.status.code(), second.status.code());
}

#[test]
fn simulate_with_bad_metrics_exits_2_naming_the_flag_and_position() {
    let output = caxton(&[
        "simulate",
        "--rollback-on",
        "error_rate>1%",
        "--baseline",
        "error_rate=0.2%,p99=40",
        "--candidate",
        "error_rate=0.2%",
    ]);
    assert_could_not_run(&output, &["--baseline", "byte 20", "`ms`"]);
    let output = caxton(&[
        "simulate",
        "--rollback-on",
        "error_rate>1%",
        "--baseline",
        "rps=5",
    ]);
    assert_could_not_run(&output, &["--candidate"]);
}

/// `u64::MAX` seconds, written as a bare number.
const HUGE: &str = "18446744073709551615";

#[test]
fn plan_of_a_spec_with_an_endless_hold_exits_2_naming_the_path() {
    let spec = spec_file(
        &format!(
            "deployment:\n  strategy: canary\n  stages:\n    - canary: {{ weight: 5%, hold: {HUGE} }}\n"
        ),
        ".yaml",
    );
    let output = caxton(&["plan", spec.path().to_str().unwrap()]);
    assert_could_not_run(&output, &["deployment.stages[0].canary.hold", "365d"]);
}

#[test]
fn simulate_of_a_spec_with_an_endless_interval_exits_2_naming_the_path() {
    let spec = spec_file(
        &format!("deployment:\n  strategy: canary\n  check_interval: {HUGE}\n"),
        ".yaml",
    );
    for command in ["plan", "simulate"] {
        let output = caxton(
            &[
                command,
                spec.path().to_str().unwrap(),
                "--baseline",
                "error_rate=0.2%,p99=40ms,rps=50",
                "--candidate",
                "error_rate=0.2%,p99=40ms",
            ][..if command == "plan" { 2 } else { 6 }],
        );
        assert_could_not_run(&output, &["deployment.check_interval", "365d"]);
    }
}

#[test]
fn simulate_of_a_spec_too_long_to_simulate_exits_2_at_once_naming_the_fields() {
    // Checked every millisecond for 100 days: billions of checks, hours of work.
    let spec = spec_file(
        "deployment:\n  strategy: canary\n  stages:\n    - canary: { weight: 5%, hold: 100d }\n  \
         check_interval: 1ms\n",
        ".yaml",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_caxton"))
        .args([
            "simulate",
            spec.path().to_str().unwrap(),
            "--baseline",
            "error_rate=0.2%,p99=40ms,rps=50",
            "--candidate",
            "error_rate=0.2%,p99=40ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("caxton simulate still ran after 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert_could_not_run(&output, &["check_interval", "hold", "100000"]);
}

#[test]
fn a_spec_over_the_size_limit_exits_2_naming_the_path_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1024 * 1024 + 1)
        .unwrap();
    let output = caxton(&["plan", path.to_str().unwrap()]);
    assert_could_not_run(&output, &["huge.yaml", "1048576 bytes"]);
    // Standard input is read no further than the limit either.
    let mut child = Command::new(env!("CARGO_BIN_EXE_caxton"))
        .args(["plan", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // Ends with a broken pipe once caxton stops reading; that is the point.
        let _ = stdin.write_all(&vec![b'#'; 2 * 1024 * 1024]);
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_could_not_run(&output, &["standard input", "1048576 bytes"]);
}

/// `caxton simulate SPEC --runs N --json` for this candidate against the healthy baseline.
fn simulate_runs(candidate: &str, runs: &str, extra: &[&str]) -> Output {
    let spec = spec_file(SPEC, ".yaml");
    let mut args = vec![
        "simulate",
        spec.path().to_str().unwrap(),
        "--baseline",
        "error_rate=0.2%,p99=40ms,rps=50",
        "--candidate",
        candidate,
        "--runs",
        runs,
    ];
    args.extend_from_slice(extra);
    caxton(&args)
}

/// The shares of a `--runs --json` summary, after checking its shape.
fn batch_summary(output: &Output, runs: u64) -> Value {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    let lines = json_lines(output);
    assert_eq!(lines.len(), 1, "one JSON object: {lines:?}");
    let summary = lines[0].clone();
    let keys: Vec<&str> = summary
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "runs",
        "promoted",
        "rolled_back",
        "aborted",
        "median_decision_s",
        "p90_decision_s",
    ] {
        assert!(keys.contains(&key), "{key} missing from {summary}");
    }
    assert_eq!(summary["runs"], runs);
    let mut counts = 0;
    let mut shares = 0.0;
    for outcome in ["promoted", "rolled_back", "aborted"] {
        let o = &summary[outcome];
        let share = o["share"].as_f64().unwrap();
        let [lo, hi] = [
            o["ci95"][0].as_f64().unwrap(),
            o["ci95"][1].as_f64().unwrap(),
        ];
        assert!(0.0 <= lo && lo <= share && share <= hi && hi <= 1.0, "{o}");
        counts += o["count"].as_u64().unwrap();
        shares += share;
    }
    assert_eq!(counts, runs);
    assert!((shares - 1.0).abs() < 1e-9, "shares sum to {shares}");
    let (median, p90) = (
        summary["median_decision_s"].as_f64().unwrap(),
        summary["p90_decision_s"].as_f64().unwrap(),
    );
    assert!(0.0 <= median && median <= p90, "{summary}");
    summary
}

#[test]
fn simulate_runs_an_identical_candidate_and_mostly_promotes_it() {
    let output = simulate_runs("error_rate=0.2%,p99=40ms", "60", &["--json"]);
    let summary = batch_summary(&output, 60);
    assert!(
        summary["promoted"]["share"].as_f64().unwrap() > 0.8,
        "{summary}"
    );
    // A promotion goes through every step: 5 + 10 + 10 minutes, and one more at 5 % for
    // a 99th-percentile bound.
    assert_eq!(summary["median_decision_s"], 1560.0);
}

#[test]
fn simulate_runs_a_three_percent_error_candidate_and_rolls_it_back() {
    let output = simulate_runs(
        "error_rate=3%,p99=40ms",
        "60",
        &["--json", "--seed", "1000"],
    );
    let summary = batch_summary(&output, 60);
    assert_eq!(summary["rolled_back"]["count"], 60, "{summary}");
    // Caught in the first step (its 5-minute hold and up to 10 minutes of extension),
    // long before the 26 minutes of a promotion.
    assert!(
        summary["p90_decision_s"].as_f64().unwrap() <= 900.0,
        "{summary}"
    );
}

#[test]
fn simulate_runs_is_reproducible_and_reads_for_people() {
    let json = |seed: &str| {
        stdout(&simulate_runs(
            "error_rate=0.3%,p99=45ms",
            "20",
            &["--json", "--seed", seed],
        ))
    };
    assert_eq!(json("7"), json("7"));
    let text = simulate_runs("error_rate=0.3%,p99=45ms", "20", &["--seed", "7"]);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    let text = stdout(&text);
    assert!(text.contains("(seeds 7..=26)"), "{text}");
    assert!(text.contains("promoted"), "{text}");
    assert!(text.contains("95% CI"), "{text}");
    assert!(text.contains("time to a decision: median"), "{text}");
}

#[test]
fn simulate_with_a_bad_runs_exits_2_naming_the_flag() {
    for bad in ["0", "10001", "-3", "many"] {
        let output = simulate_runs("error_rate=0.2%,p99=40ms", bad, &["--json"]);
        assert_could_not_run(&output, &["--runs"]);
    }
}
