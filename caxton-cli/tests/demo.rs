//! `caxton demo --fast --json`, run as a user would: the built binary, its exit code and
//! its JSON lines. The acts' outcomes are read back from the events: the canary of
//! processor v2 is rolled back by the error-rate gate with no order lost, the chat sessions
//! opened on v1 stay on v1 through the rainbow deploy, and no shadow reply reaches a
//! caller while the shadow's copies are all mirrored and compared.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The demo's events; it runs once for every test here.
fn demo() -> &'static [Value] {
    static EVENTS: OnceLock<Vec<Value>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let output = Command::new(env!("CARGO_BIN_EXE_caxton"))
            .args(["demo", "--fast", "--json"])
            .output()
            .expect("the caxton binary runs");
        let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(0),
            "the demo exits 0 when it ran as designed; stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    })
}

/// The demo's own step `event` of act `act`; exactly one.
fn step(act: u64, event: &str) -> &'static Value {
    let found: Vec<&Value> = demo()
        .iter()
        .filter(|e| e["act"] == act && e["event"] == event && e.get("agent_id").is_none())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one `{event}` step in act {act}: {found:#?}"
    );
    found[0]
}

/// The rollout events of act `act` about `deployment`.
fn rollout(act: u64, deployment: &str) -> Vec<&'static Value> {
    demo()
        .iter()
        .filter(|e| e["act"] == act && e["deployment_id"] == deployment)
        .collect()
}

/// How the rollout of `deployment` in act `act` finished.
fn finished(act: u64, deployment: &str) -> &'static Value {
    let events = rollout(act, deployment);
    let finished: Vec<_> = events.iter().filter(|e| e["event"] == "finished").collect();
    assert_eq!(finished.len(), 1, "{deployment} finished once: {events:#?}");
    finished[0]
}

#[test]
fn every_event_is_one_json_object_with_its_act_and_time_and_the_last_says_completed() {
    let events = demo();
    for event in events {
        assert!(
            event["event"].is_string() && event["at_s"].is_number() && event["act"].is_u64(),
            "{event}"
        );
    }
    let last = events.last().expect("some events");
    assert_eq!(last["event"], "finished");
    assert_eq!(last["outcome"], "completed", "{last}");
    assert!(last.get("problems").is_none(), "{last}");
    for act in 1..=4 {
        step(act, "act_started");
    }
}

#[test]
fn act_1_validates_processor_v1_in_four_stages_and_promotes_it() {
    let validated = step(1, "validated");
    assert_eq!(validated["deployment"], "processor-v1");
    assert_eq!(validated["accepted"], true);
    let stages: Vec<&str> = validated["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["static", "sandbox", "contracts", "resources"]);
    assert_eq!(finished(1, "processor-v1")["outcome"], "promoted");
}

#[test]
fn act_2_the_error_rate_gate_rolls_the_canary_back_and_no_order_is_lost() {
    let canary = finished(2, "processor-v2");
    assert_eq!(canary["outcome"], "rolled_back");
    assert!(
        canary["reason"]
            .as_str()
            .is_some_and(|r| r.contains("error_rate")),
        "{canary}"
    );
    let rolled_back = rollout(2, "processor-v2")
        .into_iter()
        .find(|e| e["event"] == "rolled_back")
        .expect("a rolled_back event");
    assert_eq!(rolled_back["kind"], "condition", "{rolled_back}");

    let stopped = step(2, "traffic_stopped");
    let tally = &stopped["tally"];
    assert_eq!(stopped["lost"], 0);
    let sent = tally["sent"].as_u64().unwrap();
    assert!(sent > 100, "{tally}");
    let accounted = ["replied", "agent_failures", "route_failures"]
        .iter()
        .map(|k| tally[*k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(sent, accounted, "{tally}");
    let v2 = &tally["by_deployment"]["processor-v2"];
    assert!(
        v2["app_errors"].as_u64().unwrap() > 0,
        "v2's regression showed: {v2}"
    );

    let cut_over = step(2, "cut_over");
    assert_eq!(cut_over["routed_to_candidate_after"], 0);
    assert!(
        cut_over["took_us"].as_f64().is_some_and(|us| us < 1_000.0),
        "{cut_over}"
    );
}

#[test]
fn act_3_sessions_opened_on_chat_v1_stay_on_it_while_new_ones_go_to_v2() {
    assert_eq!(finished(3, "chat-v1")["outcome"], "promoted");
    assert_eq!(finished(3, "chat-v2")["outcome"], "promoted");
    let checked = step(3, "sessions_checked");
    assert_eq!(checked["sessions"], 8, "{checked}");
    assert_eq!(checked["switched"], 0, "{checked}");
    assert_eq!(checked["opened_before_rollout"], 4, "{checked}");
    assert_eq!(checked["stayed_on_first_version"], 4, "{checked}");
    assert_eq!(checked["by_deployment"]["chat-v1"], 4, "{checked}");
    assert_eq!(checked["by_deployment"]["chat-v2"], 4, "{checked}");
    // The rainbow's steps, as live sessions moved; v1 retired because its sessions ended,
    // not by the forced drain.
    let rainbow: Vec<&Value> = demo()
        .iter()
        .filter(|e| e["act"] == 3 && e["event"] == "rainbow")
        .collect();
    let phases: Vec<&str> = rainbow
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["v1 serving", "both serving", "v1 draining", "v1 retired"]
    );
    assert_eq!(rainbow[1]["sessions"]["chat-v1"], 4, "{}", rainbow[1]);
    let retired: Vec<_> = rollout(3, "chat-v2")
        .into_iter()
        .filter(|e| e["event"] == "retired")
        .collect();
    assert_eq!(retired.len(), 1, "{retired:#?}");
    assert_eq!(retired[0]["target_id"], "chat-v1");
    assert_eq!(retired[0]["forced"], false, "{}", retired[0]);
}

#[test]
fn act_4_no_shadow_reply_reaches_a_caller_and_every_copy_is_compared() {
    let compared = step(4, "shadow_compared");
    let n = |k: &str| {
        compared[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {compared}"))
    };
    assert!(n("mirrored") > 0, "{compared}");
    assert!(n("compared") > 0, "{compared}");
    assert_eq!(
        n("compared") + n("failed") + n("dropped"),
        n("mirrored"),
        "{compared}"
    );
    assert_eq!(n("equivalent"), n("compared"), "{compared}");
    assert_eq!(n("failed"), 0, "{compared}");
    assert_eq!(n("reached_callers"), 0, "{compared}");
    assert_eq!(step(4, "traffic_stopped")["lost"], 0);
    assert!(
        rollout(4, "processor-v3")
            .iter()
            .any(|e| e["event"] == "shadow_report"),
        "the shadow's report is among the events"
    );
}
