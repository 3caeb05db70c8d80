//! The `cps` mode (setups per second rising until p99 `answered` passes a limit or a
//! call fails) and the `soak` mode (steady calls, a report every interval).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::call::{AudioStats, Dialer};
use crate::gateway::Gateway;
use crate::measure::{Percentiles, Snapshot, Window, loadavg};
use crate::sweep::Held;

/// How the CPS run goes.
pub struct CpsPlan {
    /// First rate, setups per second.
    pub start: usize,
    /// Added after each passing rate.
    pub step: usize,
    /// Highest rate tried.
    pub max: usize,
    /// Seconds each rate is kept up.
    pub secs: u64,
    /// How long each call is held (audio flowing) before it hangs up.
    pub call_hold: Duration,
    /// A rate passes while p99 of `call` → `answered` stays at or below this.
    pub limit: Duration,
}

/// One rate of the CPS run.
#[derive(Debug, Clone, Serialize)]
pub struct CpsRun {
    /// Setups started per second.
    pub rate: usize,
    /// Calls started.
    pub calls: usize,
    /// Calls that failed (setup or hangup).
    pub failures: usize,
    /// The first failure reasons.
    pub failure_reasons: Vec<String>,
    /// `call` sent → `answered`.
    pub setup_answered: Percentiles,
    /// `call` sent → first echoed audio.
    pub first_audio: Percentiles,
    /// Gateway-added: `call` sent → INVITE at the tool's SIP echo.
    pub gateway_call_to_invite: Percentiles,
    /// Gateway-added: 200 OK sent by the SIP echo → `answered` at the browser.
    pub gateway_ok_to_answered: Percentiles,
    /// Gateway CPU over the whole rate (setups, held audio, hangups), ms per call.
    pub gateway_cpu_ms_per_call: f64,
    /// The gateway's and machine's figures over the rate (per-call fields are per
    /// call started).
    pub window: Window,
    /// Passed: no failure and p99 within the limit.
    pub passed: bool,
}

/// Raises the setup rate until a rate fails; returns every rate tried.
pub async fn cps(
    gw: &Gateway,
    dialer: &Dialer,
    plan: &CpsPlan,
    hz: f64,
    idle_rss_kib: u64,
) -> anyhow::Result<Vec<CpsRun>> {
    let mut runs = Vec::new();
    let mut rate = plan.start.max(1);
    while rate <= plan.max {
        let calls = rate * plan.secs as usize;
        let s0 = Snapshot::take(gw, hz)?;
        let cpu0 = s0.gateway_cpu();
        let t0 = tokio::time::Instant::now();
        let dialer = Arc::new(dialer.clone());
        let mut tasks = Vec::with_capacity(calls);
        for i in 0..calls {
            let at = t0 + Duration::from_secs_f64(i as f64 / rate as f64);
            let dialer = dialer.clone();
            let hold = plan.call_hold;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let call = dialer.place(&format!("cps{rate}u{i}")).await?;
                let times = call.times;
                tokio::time::sleep(hold).await;
                call.hang_up().await?;
                anyhow::Ok(times)
            }));
        }
        let (mut times, mut failures) = (Vec::new(), Vec::new());
        for task in tasks {
            match task.await {
                Ok(Ok(t)) => times.push(t),
                Ok(Err(e)) => failures.push(format!("{e:#}")),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let s1 = Snapshot::take(gw, hz)?;
        let answered = Percentiles::of(times.iter().map(|t| t.answered));
        let passed = failures.is_empty() && answered.p99_ms <= plan.limit.as_secs_f64() * 1000.0;
        let run = CpsRun {
            rate,
            calls,
            failures: failures.len(),
            failure_reasons: failures.into_iter().take(5).collect(),
            setup_answered: answered,
            first_audio: Percentiles::of(times.iter().map(|t| t.first_audio)),
            gateway_call_to_invite: Percentiles::of(times.iter().filter_map(|t| t.to_invite)),
            gateway_ok_to_answered: Percentiles::of(times.iter().filter_map(|t| t.ok_to_answered)),
            gateway_cpu_ms_per_call: (s1.gateway_cpu().saturating_sub(cpu0)).as_secs_f64() * 1000.0
                / calls.max(1) as f64,
            window: s0.window(&s1, calls, idle_rss_kib),
            passed,
        };
        eprintln!(
            "cps {rate}/s: {} calls, {} failed, answered p50 {:.1} p99 {:.1} ms, gateway {:.1} ms CPU per call: {}",
            run.calls,
            run.failures,
            run.setup_answered.p50_ms,
            run.setup_answered.p99_ms,
            run.gateway_cpu_ms_per_call,
            if passed { "pass" } else { "FAIL" }
        );
        runs.push(run);
        if !passed {
            break;
        }
        // Let the gateway finish the hangups before the next rate.
        tokio::time::sleep(Duration::from_secs(2)).await;
        rate += plan.step.max(1);
    }
    Ok(runs)
}

/// The CPS run as a markdown table, and the last passing rate.
pub fn cps_table(runs: &[CpsRun]) -> String {
    let mut out = String::from(
        "| setups/s | calls | failures | `answered` p50 / p99 (ms) | gateway-added `call` → INVITE p50 / p99 (ms) | gateway-added 200 → `answered` p50 / p99 (ms) | first audio p50 / p99 (ms) | gateway CPU per call (ms) | gateway CPU (% of a core) | machine CPU (% of a core) | result |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in runs {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} / {:.0} | {:.1} | {:.0} | {:.0} | {} |\n",
            r.rate,
            r.calls,
            r.failures,
            r.setup_answered.p50_ms,
            r.setup_answered.p99_ms,
            r.gateway_call_to_invite.p50_ms,
            r.gateway_call_to_invite.p99_ms,
            r.gateway_ok_to_answered.p50_ms,
            r.gateway_ok_to_answered.p99_ms,
            r.first_audio.p50_ms,
            r.first_audio.p99_ms,
            r.gateway_cpu_ms_per_call,
            r.window.gateway_cpu_pct,
            r.window.machine_cpu_pct,
            if r.passed { "pass" } else { "fail" }
        ));
    }
    let last = runs.iter().filter(|r| r.passed).map(|r| r.rate).max();
    let all_passed = runs.iter().all(|r| r.passed);
    out.push_str(&match last {
        Some(rate) if all_passed => {
            format!(
                "\nLast passing rate: {rate} setups/s (every rate tried passed: raise --max).\n"
            )
        }
        Some(rate) => format!("\nLast passing rate: {rate} setups/s.\n"),
        None => "\nNo rate passed.\n".into(),
    });
    out
}

/// How the soak goes.
pub struct SoakPlan {
    /// Calls held.
    pub calls: usize,
    /// How long.
    pub duration: Duration,
    /// Report interval.
    pub interval: Duration,
    /// Setups in flight at a time.
    pub parallel: usize,
}

/// One soak interval.
#[derive(Debug, Clone, Serialize)]
pub struct SoakInterval {
    /// Seconds since the calls were up.
    pub at_secs: f64,
    /// Calls still up.
    pub up: usize,
    /// Gateway RSS drift since the first interval, KiB.
    pub rss_drift_kib: i64,
    /// The interval's figures.
    pub window: Window,
}

/// The soak's result.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    /// Calls that came up.
    pub calls_up: usize,
    /// The intervals.
    pub intervals: Vec<SoakInterval>,
    /// Audio of all calls at the end.
    pub packets: AudioStats,
    /// Failed calls.
    pub failures: usize,
    /// The first failure reasons.
    pub failure_reasons: Vec<String>,
}

/// Holds `plan.calls` calls for `plan.duration`, reporting every interval.
pub async fn soak(
    gw: &Gateway,
    dialer: &Dialer,
    plan: &SoakPlan,
    hz: f64,
    idle_rss_kib: u64,
) -> anyhow::Result<SoakResult> {
    let held = Held::place(dialer, "soak", plan.calls, plan.parallel).await;
    let calls_up = held.up();
    let start = Instant::now();
    let mut intervals = Vec::new();
    let mut first_rss = None;
    let mut last = Snapshot::take(gw, hz)?;
    while start.elapsed() < plan.duration {
        tokio::time::sleep(
            plan.interval
                .min(plan.duration.saturating_sub(start.elapsed())),
        )
        .await;
        let now = Snapshot::take(gw, hz)?;
        let up = held.up();
        let window = last.window(&now, up, idle_rss_kib);
        let first = *first_rss.get_or_insert(now.rss_kib());
        let interval = SoakInterval {
            at_secs: start.elapsed().as_secs_f64(),
            up,
            rss_drift_kib: now.rss_kib() as i64 - first as i64,
            window,
        };
        eprintln!(
            "soak {:>6.0} s: {up} up, RSS {} KiB ({:+} KiB), gateway {:.3} % per call, {:.1} wake-ups/s per call, load {:?}",
            interval.at_secs,
            now.rss_kib(),
            interval.rss_drift_kib,
            interval.window.gateway_cpu_pct_per_call,
            interval.window.wakeups_per_call_sec,
            loadavg()
        );
        intervals.push(interval);
        last = now;
    }
    let (packets, failures) = held.finish(plan.parallel).await;
    Ok(SoakResult {
        calls_up,
        intervals,
        packets,
        failures: failures.len(),
        failure_reasons: failures.into_iter().take(5).collect(),
    })
}

/// The soak as a markdown table.
pub fn soak_table(result: &SoakResult) -> String {
    let mut out = String::from(
        "| at (s) | calls up | gateway RSS (KiB) | RSS drift (KiB) | gateway CPU per call (% of a core) | wake-ups per call per s |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for i in &result.intervals {
        out.push_str(&format!(
            "| {:.0} | {} | {} | {:+} | {:.3} | {:.1} |\n",
            i.at_secs,
            i.up,
            i.window.rss_kib,
            i.rss_drift_kib,
            i.window.gateway_cpu_pct_per_call,
            i.window.wakeups_per_call_sec
        ));
    }
    let p = &result.packets;
    out.push_str(&format!(
        "\n{} calls up; packets sent {} echoed {} lost {} late {} corrupt {} (of {} checked); {} failures.\n",
        result.calls_up, p.sent, p.echoed, p.lost, p.late, p.corrupt, p.checked, result.failures
    ));
    out
}
