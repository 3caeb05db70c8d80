//! Setup latency and per-call cost of a whole `callbridge serve` process, measured
//! from outside with real calls over protocol v1.
//!
//! The tool starts the gateway binary on its embedded defaults (loopback, the built-in
//! echo destination) with ephemeral ports and a secret of its own, then:
//! 1. places `--calls` calls one after another, each from a fresh WebSocket session
//!    and a fresh `webrtc`-crate browser that starts a PCMU tone as soon as ICE and
//!    DTLS are up, and reports p50/p99/max of `call` sent → `answer`, → `answered`,
//!    → first echoed audio packet, and the gateway's CPU per call (setup to hangup);
//! 2. holds `--concurrent` such calls at once and measures the gateway over two
//!    `--window`s, first with every call sending a tone (50 packets/s each way), then
//!    with the calls up but silent: user+system CPU (`/proc/<pid>/stat`) and wake-ups
//!    (voluntary context switches of all its threads) per call, RSS per call
//!    (`/proc/<pid>/status`), and its UDP sockets (and any on the mDNS port 5353).
//!
//! The echo answers inside the gateway process, so its cost is included. The client
//! sets `TCP_NODELAY` on its WebSocket as browsers do. Nothing is asserted: this
//! measures, and is only meaningful against a release build on an idle machine.
//!
//! ```text
//! cargo build --release --bin callbridge --example setup_latency
//! target/release/examples/setup_latency --gateway target/release/callbridge --calls 50 --concurrent 20
//! ```
//!
//! Extra `CALLBRIDGE_*` variables in the tool's environment reach the gateway (e.g.
//! `CALLBRIDGE_MEDIA__RTCP_INTERVAL=1s`).

#[path = "../../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;
mod call;
mod gateway;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use tokio::sync::watch;

use call::{Phase, SetupTimes, place};
use gateway::{Gateway, ticks_per_sec, udp_sockets};

/// Measure call setup latency and per-call cost of a callbridge process.
#[derive(Parser)]
struct Args {
    /// The callbridge binary to start (default: `callbridge` beside this tool's
    /// directory, i.e. `target/<profile>/callbridge`).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Calls placed one after another for the latency figures.
    #[arg(long, default_value_t = 50)]
    calls: usize,
    /// Calls held at once for the CPU, wake-up and memory figures (0: skip).
    #[arg(long, default_value_t = 20)]
    concurrent: usize,
    /// Seconds over which the concurrent calls are measured, sending audio and then
    /// silent.
    #[arg(long, default_value_t = 10)]
    window: u64,
    /// Number dialed (the embedded defaults route `echo` to the built-in echo).
    #[arg(long, default_value = "echo")]
    to: String,
    /// Label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
}

/// The HS256 secret the tool gives the gateway, so it can mint tokens for many users.
pub(crate) const SECRET: &str = "setup-latency-tool-secret-0123456789abcdef";
/// Longest wait for any step of a call.
pub(crate) const STEP: Duration = Duration::from_secs(20);

/// The `p`th percentile (nearest rank) of sorted `values`.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Places `args.calls` calls one after another; prints the setup percentiles and
/// the gateway's CPU per call (setup, a moment of echo, teardown).
async fn sequential(gw: &Gateway, args: &Args, hz: f64) -> anyhow::Result<()> {
    let cpu0 = gw.cpu(hz)?;
    let mut times = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        let call = place(&gw.url, &format!("seq{i}"), &args.to, 250).await?;
        times.push(call.times);
        call.hang_up().await?;
    }
    let cpu = gw.cpu(hz)? - cpu0;
    println!(
        "setup over {} sequential calls, ms after `call` sent: p50 / p99 / max",
        times.len()
    );
    type Pick = fn(&SetupTimes) -> Duration;
    let steps: [(&str, Pick); 3] = [
        ("answer", |t| t.answer),
        ("answered", |t| t.answered),
        ("first echoed audio", |t| t.first_audio),
    ];
    for (name, pick) in steps {
        let mut v: Vec<Duration> = times.iter().map(pick).collect();
        v.sort();
        println!(
            "  {name:<20} {:>7} {:>7} {:>7}",
            ms(percentile(&v, 50)),
            ms(percentile(&v, 99)),
            ms(v[v.len() - 1])
        );
    }
    println!(
        "gateway CPU per sequential call (setup, first audio, hangup): {} ms",
        ms(cpu / u32::try_from(args.calls).unwrap_or(u32::MAX))
    );
    Ok(())
}

/// CPU, wake-ups and time over one measuring window.
struct Window {
    /// User+system CPU of the gateway.
    cpu: Duration,
    /// Voluntary context switches of all its threads (each is a sleep and a wake-up).
    wakeups: u64,
    /// Wall time.
    elapsed: Duration,
}

impl Window {
    /// Measures `gw` for `length`.
    async fn measure(gw: &Gateway, hz: f64, length: Duration) -> anyhow::Result<Window> {
        let (cpu0, wake0, t0) = (gw.cpu(hz)?, gw.wakeups()?, Instant::now());
        tokio::time::sleep(length).await;
        Ok(Window {
            cpu: gw.cpu(hz)? - cpu0,
            wakeups: gw.wakeups()? - wake0,
            elapsed: t0.elapsed(),
        })
    }

    /// Prints the per-call figures of `calls` calls.
    fn print(&self, what: &str, calls: usize) {
        let secs = self.elapsed.as_secs_f64();
        let share = self.cpu.as_secs_f64() / secs;
        let m = calls as f64;
        println!(
            "  {what:<8} CPU {:.3} % of a core per call ({:.1} % in all), {:.1} wake-ups/s per call",
            share * 100.0 / m,
            share * 100.0,
            self.wakeups as f64 / secs / m
        );
    }
}

/// Holds `args.concurrent` calls: measures them sending audio, then silent (the
/// calls stay up); prints CPU, wake-ups and RSS per call and the UDP sockets.
async fn concurrent(gw: &Gateway, args: &Args, hz: f64) -> anyhow::Result<()> {
    let rss_before = gw.rss_kib()?;
    let settle = Duration::from_secs(2);
    let window = Duration::from_secs(args.window);
    let frames = u32::try_from((args.window + 30) * 50).unwrap_or(u32::MAX);
    let (phase_tx, phase_rx) = watch::channel(Phase::Media);
    // Set up a few at a time, like arriving users; each is held until `HangUp`.
    let mut held = Vec::new();
    let mut setups = std::pin::pin!(
        futures_util::stream::iter(0..args.concurrent)
            .map(|i| {
                let (url, to) = (gw.url.clone(), args.to.clone());
                async move { place(&url, &format!("load{i}"), &to, frames).await }
            })
            .buffer_unordered(8)
    );
    while let Some(call) = setups.next().await {
        held.push(tokio::spawn(call?.hold(phase_rx.clone())));
    }
    tokio::time::sleep(settle).await;
    let media = Window::measure(gw, hz, window).await?;
    let rss_held = gw.rss_kib()?;
    let (udp, mdns) = udp_sockets(gw.pid)?;
    phase_tx.send_replace(Phase::Silent);
    tokio::time::sleep(settle).await;
    let silent = Window::measure(gw, hz, window).await?;
    phase_tx.send_replace(Phase::HangUp);
    for h in held {
        h.await??;
    }
    println!(
        "{} concurrent calls, {:.1} s windows:",
        args.concurrent,
        media.elapsed.as_secs_f64()
    );
    media.print("audio", args.concurrent);
    silent.print("silent", args.concurrent);
    println!(
        "  RSS {rss_before} KiB before -> {rss_held} KiB with them: {:.0} KiB per call",
        rss_held.saturating_sub(rss_before) as f64 / args.concurrent as f64
    );
    println!("  gateway UDP sockets with them: {udp} ({mdns} on port 5353, mDNS)");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match args.gateway.clone() {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .context("tool path")?
            .join("callbridge"),
    };
    let gw = Gateway::start(&binary).await?;
    let hz = ticks_per_sec();
    println!(
        "gateway {} (pid {}) at {} {}",
        binary.display(),
        gw.pid,
        gw.url,
        args.label
    );

    // Warm-up: the first call pays for lazy initialisation everywhere.
    place(&gw.url, "warmup", &args.to, 250)
        .await?
        .hang_up()
        .await?;
    if args.calls > 0 {
        sequential(&gw, &args, hz).await?;
    }
    if args.concurrent > 0 {
        concurrent(&gw, &args, hz).await?;
    }
    drop(gw.child);
    Ok(())
}
