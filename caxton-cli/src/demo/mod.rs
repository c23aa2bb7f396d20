//! `caxton demo [--json] [--fast]`: the main job, on the embedded sample agents
//! ([`crate::samples`]) and one [`caxton_host::Host`].
//!
//! - [`acts`]: the four acts, through the host's public API;
//! - [`events`]: what the demo reports, and the forwarding of the host's rollout events;
//! - [`load`]: synthetic order traffic that accounts for every message;
//! - here: the command, and the rendering of the events for people or as JSON lines.

mod acts;
mod events;
mod load;

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caxton_strategies::EventKind;
use caxton_strategies::event::Mark as EventMark;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use self::acts::{Demo, Pace};
use self::events::{DemoEvent, DemoSink, StepKind, SummaryRow};
use crate::output::{CommandResult, Failure, Mark, Printer, Verdict};

/// Arguments of `caxton demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Print every event as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Cut holds and timeouts to a quarter (the acts and checks stay the same).
    #[arg(long)]
    fast: bool,
}

pub(crate) fn run(args: DemoArgs) -> CommandResult {
    let printer = Arc::new(Printer::new());
    let pace = if args.fast { Pace::Fast } else { Pace::Normal };
    let sink: Arc<dyn DemoSink> = if args.json {
        Arc::new(JsonLines {
            printer: printer.clone(),
        })
    } else {
        printer.line("Caxton demo: real agents (examples/agents) on one caxton-host Host: the real registry, router, runtime, validation and rollout driver.");
        Arc::new(ForPeople {
            printer: printer.clone(),
            bar: Mutex::new(None),
            started: Instant::now(),
        })
    };
    let outcome = Demo::new(pace).run(sink).map_err(Failure::new)?;
    printer.finish()?;
    Ok(if outcome.as_designed() {
        Verdict::Positive
    } else {
        Verdict::Negative
    })
}

struct JsonLines {
    printer: Arc<Printer>,
}

impl DemoSink for JsonLines {
    fn emit(&self, event: &DemoEvent) {
        self.printer.json(event);
    }
}

/// Lines for people, with a progress bar on standard error during each hold.
struct ForPeople {
    printer: Arc<Printer>,
    bar: Mutex<Option<ProgressBar>>,
    started: Instant,
}

impl ForPeople {
    fn end_bar(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }

    fn start_bar(&self, title: String, hold: Duration) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let millis = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let bar = ProgressBar::with_draw_target(Some(millis), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("  {msg} [{bar:30}] {elapsed}/{duration}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(title);
        let ticker = bar.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !ticker.is_finished() {
                ticker.set_position(
                    u64::try_from(started.elapsed().as_millis())
                        .unwrap_or(u64::MAX)
                        .min(millis),
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl DemoSink for ForPeople {
    fn emit(&self, event: &DemoEvent) {
        self.end_bar();
        let p = &self.printer;
        match event {
            DemoEvent::Rollout { event, .. } => {
                for line in event.human_lines() {
                    let mark = match line.mark {
                        EventMark::Done => Mark::Done,
                        EventMark::Failed => Mark::Failed,
                        EventMark::Progress => Mark::Progress,
                    };
                    p.mark("", mark, &line.text);
                }
                if let EventKind::StageStarted {
                    stage,
                    hold_s: Some(hold),
                    ..
                } = &event.kind
                {
                    self.start_bar(stage.clone(), Duration::from_secs_f64(*hold));
                }
            }
            DemoEvent::Step(step) => match &step.kind {
                StepKind::ActStarted { act, title } => {
                    p.line("");
                    p.line(&format!("Act {act} · {title}"));
                }
                StepKind::Validated {
                    deployment,
                    accepted,
                    stages,
                    duration_ms,
                } => {
                    let parts: Vec<String> = stages
                        .iter()
                        .map(|s| {
                            format!(
                                "{} {} {:.1} ms",
                                if s.passed { "✓" } else { "✗" },
                                s.stage,
                                s.duration_ms
                            )
                        })
                        .collect();
                    let mark = if *accepted { Mark::Done } else { Mark::Failed };
                    p.mark(
                        "",
                        mark,
                        &format!(
                            "{deployment} validated in {duration_ms:.0} ms: {}",
                            parts.join(" · ")
                        ),
                    );
                }
                StepKind::TrafficStarted {
                    agent,
                    rate,
                    coupon_share,
                } => {
                    p.mark(
                        "",
                        Mark::Progress,
                        &format!(
                            "Orders to `{agent}`: {rate}/s, {:.0}% with a coupon code",
                            coupon_share * 100.0
                        ),
                    );
                }
                StepKind::TrafficStopped { tally, lost, .. } => {
                    let by: Vec<String> = tally
                        .by_deployment
                        .iter()
                        .map(|(d, c)| {
                            format!(
                                "{d} {} ({} errors)",
                                thousands(c.replies),
                                thousands(c.app_errors)
                            )
                        })
                        .collect();
                    let mark = if *lost == 0 { Mark::Done } else { Mark::Failed };
                    p.mark(
                        "",
                        mark,
                        &format!(
                            "{} orders sent, {} answered, {} failed, {} lost: {}",
                            thousands(tally.sent),
                            thousands(tally.replied),
                            thousands(tally.agent_failures + tally.route_failures),
                            lost,
                            by.join(", ")
                        ),
                    );
                }
                StepKind::CutOver {
                    operation,
                    took_us,
                    routed_to_candidate_after,
                } => {
                    let mark = if *routed_to_candidate_after == 0 {
                        Mark::Done
                    } else {
                        Mark::Failed
                    };
                    p.mark(
                        "",
                        mark,
                        &format!(
                            "Cut-over: {took_us:.1} µs to publish the route ({operation}, one pointer store); {routed_to_candidate_after} orders routed to the canary after it"
                        ),
                    );
                }
                StepKind::Rainbow { phase, sessions } => {
                    let live: Vec<String> =
                        sessions.iter().map(|(d, n)| format!("{d}: {n}")).collect();
                    let live = if live.is_empty() {
                        "none".to_owned()
                    } else {
                        live.join(", ")
                    };
                    p.mark(
                        "",
                        Mark::Progress,
                        &format!("Rainbow, {phase}; live sessions: {live}"),
                    );
                }
                StepKind::SessionsChecked {
                    sessions,
                    switched,
                    replies,
                    opened_before_rollout,
                    stayed_on_first_version,
                    ..
                } => {
                    let mark = if *switched == 0 && stayed_on_first_version == opened_before_rollout
                    {
                        Mark::Done
                    } else {
                        Mark::Failed
                    };
                    p.mark("", mark, &format!("{sessions} sessions, {replies} replies: {switched} switched version mid-session; {stayed_on_first_version} of the {opened_before_rollout} opened on v1 answered by v1 alone"));
                }
                StepKind::ShadowCompared {
                    mirrored,
                    compared,
                    dropped,
                    exact,
                    equivalent,
                    failed,
                    discarded,
                    reached_callers,
                    production_p50_ms,
                    shadow_p50_ms,
                    production_fuel_p50,
                    shadow_fuel_p50,
                } => {
                    let mark = if equivalent == compared && *compared > 0 && *failed == 0 {
                        Mark::Done
                    } else {
                        Mark::Failed
                    };
                    p.mark(
                        "",
                        mark,
                        &format!(
                            "Output equivalence: {} of {} mirrored replies equal as JSON ({} byte for byte); {} shadow failures, {} of {} copies dropped",
                            thousands(*equivalent),
                            thousands(*compared),
                            thousands(*exact),
                            failed,
                            thousands(*dropped),
                            thousands(*mirrored)
                        ),
                    );
                    let ms = |v: &Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3} ms"));
                    let fuel =
                        |v: &Option<f64>| v.map_or("n/a".to_owned(), |v| thousands(v as u64));
                    p.mark(
                        "",
                        Mark::Done,
                        &format!(
                            "Latency p50: production {}, shadow {}",
                            ms(production_p50_ms),
                            ms(shadow_p50_ms)
                        ),
                    );
                    p.mark(
                        "",
                        Mark::Done,
                        &format!(
                            "Fuel per message p50: production {}, shadow {}",
                            fuel(production_fuel_p50),
                            fuel(shadow_fuel_p50)
                        ),
                    );
                    let mark = if *reached_callers == 0 {
                        Mark::Done
                    } else {
                        Mark::Failed
                    };
                    p.mark("", mark, &format!("{} shadow replies discarded after comparison; {reached_callers} reached a caller", thousands(*discarded)));
                }
                StepKind::Summary { rows } => {
                    p.line("");
                    p.line("Summary");
                    let width =
                        |f: &dyn Fn(&SummaryRow) -> usize| rows.iter().map(f).max().unwrap_or(0);
                    let (w1, w2) = (
                        width(&|r| r.step.chars().count()),
                        width(&|r| r.result.chars().count()),
                    );
                    for row in rows {
                        p.line(&format!(
                            "  {:<w1$}  {:<w2$}  {}",
                            row.step,
                            row.result,
                            row.detail,
                            w1 = w1,
                            w2 = w2
                        ));
                    }
                }
                StepKind::Finished { outcome, problems } => {
                    let took = self.started.elapsed().as_secs_f64();
                    if outcome == "completed" {
                        p.mark(
                            "",
                            Mark::Done,
                            &format!("Demo completed as designed ({took:.1}s)"),
                        );
                    } else {
                        p.mark(
                            "",
                            Mark::Failed,
                            &format!("Demo did not run as designed ({took:.1}s)"),
                        );
                        for problem in problems {
                            p.line(&format!("    {problem}"));
                        }
                    }
                }
            },
        }
    }
}
