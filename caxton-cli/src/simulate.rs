//! `caxton simulate SPEC --baseline METRICS --candidate METRICS [--seed N] [--json]`:
//! runs the rollout in virtual time against synthetic metrics and prints its timeline.
//! With `--runs N` it runs N seeds (`--seed`, `--seed` + 1, …) instead and prints the
//! share promoted, rolled back and aborted (paused with no decision), each with a 95 %
//! Wilson interval, and the median and 90th percentile time to the decision: a what-if of
//! the spec over many rollouts. It exits 0 once the batch has run, whatever the shares.
//! A spec whose rollout could take more condition checks than the simulator runs
//! ([`MAX_SIMULATED_CHECKS`](caxton_strategies::sim::MAX_SIMULATED_CHECKS), say a 100-day
//! hold checked every millisecond) is refused at once, exit 2, naming the fields to change.

use std::sync::Arc;
use std::time::Duration;

use caxton_strategies::duration::HumanDuration;
use caxton_strategies::event::{Mark as EventMark, RolloutEvent};
use caxton_strategies::sim::{BatchSummary, MAX_RUNS, OutcomeShare, Simulation, SyntheticProfile};
use caxton_strategies::{EventSink, Outcome};
use clap::Args;

use crate::output::{CommandResult, Failure, Mark, Printer, Verdict};
use crate::plan::SpecArgs;

/// Arguments of `caxton simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// How the production version behaves, e.g. "error_rate=0.2%,p99=40ms,rps=50".
    #[arg(long, value_name = "METRICS")]
    baseline: String,
    /// How the new version behaves, e.g. "error_rate=0.2%,p99=45ms".
    #[arg(long, value_name = "METRICS")]
    candidate: String,
    /// Seed of the synthetic metrics; the same seed gives the same timeline. With --runs,
    /// the first seed of the batch.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Run this many seeds (1 to 10000) and print the shares of each outcome instead of
    /// one timeline.
    // A negative count is taken as the flag's value, so the refusal names --runs.
    #[arg(
        long,
        value_name = "N",
        allow_hyphen_values = true,
        value_parser = clap::value_parser!(u64).range(1..=MAX_RUNS)
    )]
    runs: Option<u64>,
    /// Print one JSON event per line, the last one `finished`; with --runs, one JSON
    /// object with the shares.
    #[arg(long)]
    json: bool,
}

/// Prints each event as it happens.
struct Timeline {
    printer: Printer,
    json: bool,
}

impl EventSink for Timeline {
    fn emit(&self, event: &RolloutEvent) {
        if self.json {
            self.printer.json(event);
            return;
        }
        // Never panics on a time no duration holds (specs are bounded; this is the last guard).
        let at = Duration::try_from_secs_f64(event.at_s.max(0.0)).unwrap_or(Duration::MAX);
        let at = HumanDuration(at).to_string();
        for line in event.human_lines() {
            let mark = match line.mark {
                EventMark::Done => Mark::Done,
                EventMark::Failed => Mark::Failed,
                EventMark::Progress => Mark::Progress,
            };
            self.printer.mark(&format!("{at:>8}  "), mark, &line.text);
        }
    }
}

fn profile(flag: &str, text: &str) -> Result<SyntheticProfile, Failure> {
    text.parse()
        .map_err(|e| Failure::new(format!("{flag}: {e}")))
}

/// Runs the simulation: exit 0 when promoted, 1 when rolled back or aborted.
pub(crate) fn run(args: SimulateArgs) -> CommandResult {
    let spec = args.spec.load()?;
    let baseline = profile("--baseline", &args.baseline)?;
    let candidate = profile("--candidate", &args.candidate)?;
    let strategy = spec.strategy.name().to_owned();
    // A spec the simulator refuses (too many checks to run) is refused before any output.
    let simulation = Simulation::new(spec, baseline, candidate).seed(args.seed);
    simulation.check().map_err(Failure::new)?;
    if let Some(runs) = args.runs {
        let summary = simulation.run_many(runs).map_err(Failure::new)?;
        let printer = Printer::new();
        if args.json {
            printer.json(&summary);
        } else {
            print_summary(&printer, &args, &strategy, &summary);
        }
        printer.finish()?;
        return Ok(Verdict::Positive);
    }
    let timeline = Arc::new(Timeline {
        printer: Printer::new(),
        json: args.json,
    });
    if !args.json {
        timeline.printer.progress(&format!(
            "Simulating {} from {} in virtual time (seed {}): baseline {}; candidate {}",
            strategy,
            args.spec.describe(),
            args.seed,
            args.baseline,
            args.candidate
        ));
    }
    let report = simulation
        .run_blocking(Some(timeline.clone()))
        .map_err(Failure::new)?;
    timeline.printer.finish()?;
    Ok(match report.outcome {
        Outcome::Promoted => Verdict::Positive,
        Outcome::RolledBack { .. } | Outcome::Aborted { .. } => Verdict::Negative,
    })
}

/// The batch's shares and decision times, for people.
fn print_summary(printer: &Printer, args: &SimulateArgs, strategy: &str, summary: &BatchSummary) {
    let last_seed = args.seed.wrapping_add(summary.runs - 1);
    printer.progress(&format!(
        "Simulated {} {} rollouts from {} (seeds {}..={}): baseline {}; candidate {}",
        summary.runs,
        strategy,
        args.spec.describe(),
        args.seed,
        last_seed,
        args.baseline,
        args.candidate
    ));
    let share = |name: &str, outcome: &OutcomeShare| {
        format!(
            "{name:<12} {:>5} of {} ({:.1}%, 95% CI {:.1}%–{:.1}%)",
            outcome.count,
            summary.runs,
            outcome.share * 100.0,
            outcome.ci95[0] * 100.0,
            outcome.ci95[1] * 100.0
        )
    };
    printer.mark("  ", Mark::Done, &share("promoted", &summary.promoted));
    printer.mark(
        "  ",
        Mark::Failed,
        &share("rolled back", &summary.rolled_back),
    );
    printer.mark("  ", Mark::Failed, &share("aborted", &summary.aborted));
    let time = |seconds: f64| {
        HumanDuration(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
    };
    printer.line(&format!(
        "  time to a decision: median {}, 90th percentile {}",
        time(summary.median_decision_s),
        time(summary.p90_decision_s)
    ));
}
