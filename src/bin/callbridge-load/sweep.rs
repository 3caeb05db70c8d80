//! Holding many calls at once, and the `sweep` mode built on it: for each step of N
//! calls (repeated), set them up, measure a window with audio flowing (and optionally
//! one with the calls silent), then check the echoed audio and hang up.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::call::{ActiveCall, AudioStats, Dialer, Phase, SetupTimes};
use crate::gateway::{Gateway, udp_sockets};
use crate::measure::{Percentiles, Snapshot, Window, spread};

/// Calls being held, each by its own task.
pub struct Held {
    tasks: Vec<JoinHandle<anyhow::Result<ActiveCall>>>,
    phase: watch::Sender<Phase>,
    /// Setup times of the calls that came up.
    pub setups: Vec<SetupTimes>,
    /// Why calls failed so far.
    pub failures: Vec<String>,
}

impl Held {
    /// Places `n` calls, `parallel` setups in flight at a time, users `{prefix}{i}`;
    /// each call that comes up is held (audio flowing) until released.
    pub async fn place(dialer: &Dialer, prefix: &str, n: usize, parallel: usize) -> Held {
        let (phase, phase_rx) = watch::channel(Phase::Media);
        let mut held = Held {
            tasks: Vec::with_capacity(n),
            phase,
            setups: Vec::with_capacity(n),
            failures: Vec::new(),
        };
        let mut setups = std::pin::pin!(
            futures_util::stream::iter(0..n)
                .map(|i| {
                    let dialer = dialer.clone();
                    let user = format!("{prefix}{i}");
                    async move { dialer.place(&user).await }
                })
                .buffer_unordered(parallel.max(1))
        );
        while let Some(call) = setups.next().await {
            match call {
                Ok(call) => {
                    held.setups.push(call.times);
                    held.tasks.push(tokio::spawn(call.hold(phase_rx.clone())));
                }
                Err(e) => held.failures.push(format!("setup: {e:#}")),
            }
        }
        held
    }

    /// Calls up (set up and not failed since).
    pub fn up(&self) -> usize {
        self.tasks.iter().filter(|t| !t.is_finished()).count()
    }

    /// Stops the audio of every call (they stay up).
    pub fn silence(&self) {
        self.phase.send_replace(Phase::Silent);
    }

    /// Ends the hold: stops the audio, lets the echoes in flight arrive, checks what
    /// came back and hangs every call up.
    pub async fn finish(self, parallel: usize) -> (AudioStats, Vec<String>) {
        let mut failures = self.failures;
        self.phase.send_replace(Phase::Release);
        let mut calls = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            match task.await {
                Ok(Ok(call)) => calls.push(call),
                Ok(Err(e)) => failures.push(format!("held: {e:#}")),
                Err(e) => failures.push(format!("held: {e}")),
            }
        }
        for call in &calls {
            call.stop_audio();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut audio = AudioStats::default();
        for call in &calls {
            audio.add(&call.audio_stats());
        }
        let mut hangups = std::pin::pin!(
            futures_util::stream::iter(calls)
                .map(ActiveCall::hang_up)
                .buffer_unordered(parallel.max(1) * 2)
        );
        while let Some(result) = hangups.next().await {
            if let Err(e) = result {
                failures.push(format!("hangup: {e:#}"));
            }
        }
        (audio, failures)
    }
}

/// How the sweep runs.
pub struct SweepPlan {
    /// Calls held at each step.
    pub steps: Vec<usize>,
    /// Measuring window with audio.
    pub hold: Duration,
    /// Runs of each step.
    pub repeat: usize,
    /// Pause after setup (and after silencing) before measuring.
    pub settle: Duration,
    /// Also measure a window with the calls up but silent.
    pub idle: bool,
    /// Setups in flight at a time.
    pub parallel: usize,
}

/// One run of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRun {
    /// Calls asked for.
    pub calls: usize,
    /// Which repetition (0-based).
    pub run: usize,
    /// `call` sent → `answer`.
    pub setup_answer: Percentiles,
    /// `call` sent → `answered`.
    pub setup_answered: Percentiles,
    /// `call` sent → first echoed audio at the browser.
    pub first_audio: Percentiles,
    /// Gateway-added: `call` sent → INVITE at the tool's SIP echo.
    pub gateway_call_to_invite: Percentiles,
    /// Gateway-added: 200 OK sent by the SIP echo → `answered` at the browser.
    pub gateway_ok_to_answered: Percentiles,
    /// The window with audio flowing.
    pub audio: Window,
    /// The window with the calls silent, if measured.
    pub silent: Option<Window>,
    /// UDP sockets of the gateway process with the calls up, and how many of them are
    /// on the mDNS port 5353.
    pub udp_sockets: (usize, usize),
    /// Audio of all calls, summed.
    pub packets: AudioStats,
    /// Failed calls (setup, while held, hangup) and why (first few).
    pub failures: usize,
    /// The first failure reasons.
    pub failure_reasons: Vec<String>,
}

/// Runs the sweep; prints each run as it ends.
pub async fn sweep(
    gw: &Gateway,
    dialer: &Dialer,
    plan: &SweepPlan,
    hz: f64,
    idle_rss_kib: u64,
) -> anyhow::Result<Vec<StepRun>> {
    let mut runs = Vec::new();
    for &calls in &plan.steps {
        for run in 0..plan.repeat {
            let held = Held::place(dialer, &format!("s{calls}r{run}u"), calls, plan.parallel).await;
            tokio::time::sleep(plan.settle).await;
            let up = held.up();
            let s0 = Snapshot::take(gw, hz)?;
            tokio::time::sleep(plan.hold).await;
            let audio = s0.window(&Snapshot::take(gw, hz)?, up, idle_rss_kib);
            let udp_sockets = udp_sockets(gw.pid).unwrap_or_default();
            let silent = if plan.idle {
                held.silence();
                tokio::time::sleep(plan.settle).await;
                let up = held.up();
                let s0 = Snapshot::take(gw, hz)?;
                tokio::time::sleep(plan.hold).await;
                Some(s0.window(&Snapshot::take(gw, hz)?, up, idle_rss_kib))
            } else {
                None
            };
            let setups = held.setups.clone();
            let (packets, failures) = held.finish(plan.parallel).await;
            let step = StepRun {
                calls,
                run,
                setup_answer: Percentiles::of(setups.iter().map(|t| t.answer)),
                setup_answered: Percentiles::of(setups.iter().map(|t| t.answered)),
                first_audio: Percentiles::of(setups.iter().map(|t| t.first_audio)),
                gateway_call_to_invite: Percentiles::of(setups.iter().filter_map(|t| t.to_invite)),
                gateway_ok_to_answered: Percentiles::of(
                    setups.iter().filter_map(|t| t.ok_to_answered),
                ),
                audio,
                silent,
                udp_sockets,
                packets,
                failures: failures.len(),
                failure_reasons: failures.into_iter().take(5).collect(),
            };
            eprintln!(
                "sweep {calls} calls run {run}: gateway {:.3} % per call, {:.1} wake-ups/s per call, {:.0} KiB per call, answered p50 {:.1} ms, {} failures",
                step.audio.gateway_cpu_pct_per_call,
                step.audio.wakeups_per_call_sec,
                step.audio.rss_kib_per_call,
                step.setup_answered.p50_ms,
                step.failures
            );
            runs.push(step);
            // Let the gateway finish tearing the calls down before the next run.
            tokio::time::sleep(plan.settle).await;
        }
    }
    Ok(runs)
}

/// The sweep as a markdown table: one row per step, "median (min–max)" over its runs.
pub fn sweep_table(runs: &[StepRun]) -> String {
    let mut out = String::from(
        "| calls | runs | gateway CPU per call (% of a core) | machine CPU per call (% of a core) | tool CPU (% of a core, all calls) | RSS per call (KiB) | wake-ups per call per s | idle wake-ups per call per s | `answered` p50 / p99 (ms) | gateway-added p50: `call` → INVITE / 200 → `answered` (ms) | first audio p50 / p99 (ms) | per call: sent / echoed / lost / late | gateway UDP sockets (on 5353) | failures |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut steps: Vec<usize> = runs.iter().map(|r| r.calls).collect();
    steps.dedup();
    for calls in steps {
        let of: Vec<&StepRun> = runs.iter().filter(|r| r.calls == calls).collect();
        let col = |f: &dyn Fn(&StepRun) -> f64, d: usize| {
            spread(&of.iter().map(|r| f(r)).collect::<Vec<_>>(), d)
        };
        let per_call = |x: u64, r: &StepRun| x as f64 / r.audio.calls.max(1) as f64;
        let idle = if of.iter().any(|r| r.silent.is_some()) {
            col(
                &|r| {
                    r.silent
                        .as_ref()
                        .map_or(f64::NAN, |w| w.wakeups_per_call_sec)
                },
                1,
            )
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "| {calls} | {} | {} | {} | {} | {} | {} | {idle} | {} / {} | {} / {} | {} / {} | {} / {} / {} / {} | {} ({}) | {} |\n",
            of.len(),
            col(&|r| r.audio.gateway_cpu_pct_per_call, 3),
            col(&|r| r.audio.machine_cpu_pct_per_call, 3),
            col(&|r| r.audio.tool_cpu_pct, 0),
            col(&|r| r.audio.rss_kib_per_call, 0),
            col(&|r| r.audio.wakeups_per_call_sec, 1),
            col(&|r| r.setup_answered.p50_ms, 1),
            col(&|r| r.setup_answered.p99_ms, 1),
            col(&|r| r.gateway_call_to_invite.p50_ms, 1),
            col(&|r| r.gateway_ok_to_answered.p50_ms, 1),
            col(&|r| r.first_audio.p50_ms, 0),
            col(&|r| r.first_audio.p99_ms, 0),
            col(&|r| per_call(r.packets.sent, r), 0),
            col(&|r| per_call(r.packets.echoed, r), 0),
            col(&|r| per_call(r.packets.lost, r), 1),
            col(&|r| per_call(r.packets.late, r), 1),
            col(&|r| r.udp_sockets.0 as f64, 0),
            col(&|r| r.udp_sockets.1 as f64, 0),
            of.iter().map(|r| r.failures).sum::<usize>(),
        ));
    }
    out.push_str(
        "\nGateway CPU by thread name, % of a core (last run of each step, audio window):\n\n",
    );
    for calls in runs
        .iter()
        .map(|r| r.calls)
        .collect::<std::collections::BTreeSet<_>>()
    {
        if let Some(last) = runs.iter().rev().find(|r| r.calls == calls) {
            let top: Vec<String> = last
                .audio
                .gateway_threads
                .iter()
                .take(6)
                .map(|(name, pct)| format!("{name} {pct:.1}"))
                .collect();
            out.push_str(&format!("- {calls} calls: {}\n", top.join(", ")));
        }
    }
    out
}
