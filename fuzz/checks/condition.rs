//! Condition expressions, one (`FromStr`) and as the compact comma list. A refused one is a
//! `ConditionError` whose position lies within the input; an accepted one displays in a
//! form that parses back to the same metric, comparison and display, and can be checked
//! against windows without panicking.

use caxton_core::{MetricWindow, Timestamp};
use caxton_strategies::condition::Condition;

fn windows() -> [MetricWindow; 3] {
    let (start, end) = (Timestamp::from_millis(0), Timestamp::from_millis(60_000));
    let empty = MetricWindow::empty(start, end);
    let mut busy = MetricWindow::empty(start, end);
    busy.requests = 500;
    busy.errors = 7;
    busy.sessions = 40;
    busy.cost = 12.5;
    busy.latency_ms = (1..=50).map(|i| f64::from(i) * 3.0).collect();
    busy.custom.insert("tokens".to_owned(), vec![1.0, 2e6, 3.5]);
    let mut odd = busy.clone();
    odd.errors = odd.requests;
    odd.latency_ms = vec![0.0, f64::MAX, 1e-300];
    [empty, busy, odd]
}

fn check_one(condition: &Condition) {
    let shown = condition.to_string();
    let again: Condition = shown
        .parse()
        .unwrap_or_else(|e| panic!("{shown:?} does not parse back: {e}"));
    assert_eq!(again.metric, condition.metric, "{shown}");
    assert_eq!(again.comparison, condition.comparison, "{shown}");
    assert_eq!(again.is_relative(), condition.is_relative(), "{shown}");
    assert_eq!(again.to_string(), shown, "display is not a fixpoint");
    let windows = windows();
    for candidate in &windows {
        for baseline in [None, Some(&windows[1])] {
            let _ = condition.check(candidate, baseline).describe_evidence(0.95);
        }
    }
}

pub(crate) fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<Condition>() {
        Ok(condition) => check_one(&condition),
        Err(error) => {
            assert!(error.position() <= text.len(), "{error}");
            let _ = error.to_string();
        }
    }
    match Condition::parse_list(text) {
        Ok(list) => list.iter().for_each(check_one),
        Err(error) => {
            assert!(error.position() <= text.len(), "{error}");
            let _ = error.to_string();
        }
    }
}
