//! Setup latency and per-call cost of a whole `callbridge serve` process, measured
//! from outside with real calls over protocol v1.
//!
//! The tool starts the gateway binary on its embedded defaults (loopback, the built-in
//! echo destination) with ephemeral ports and a secret of its own, then:
//! 1. places `--calls` calls one after another, each from a fresh WebSocket session
//!    and a fresh `webrtc`-crate browser that starts a PCMU tone as soon as ICE and
//!    DTLS are up, and reports p50/p99/max of `call` sent → `answer`, → `answered`,
//!    → first echoed audio packet;
//! 2. holds `--concurrent` such calls at once, all sending 50 packets/s, and reads the
//!    gateway's `/proc/<pid>/stat` (user+system CPU) over `--window` seconds and
//!    `/proc/<pid>/status` (VmRSS): CPU per call as % of one core, and RSS per call;
//!    and counts the gateway's UDP sockets (and any on the mDNS port 5353).
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

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use callbridge::auth::{Claims, claims_audience, mint_hs256};
use callbridge::media::webrtc_leg::IceCandidate;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use browser::{Browser, BrowserOptions};

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
    /// Calls held at once for the CPU and memory figures (0: skip).
    #[arg(long, default_value_t = 20)]
    concurrent: usize,
    /// Seconds over which the CPU of the concurrent calls is measured.
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
const SECRET: &str = "setup-latency-tool-secret-0123456789abcdef";
/// Longest wait for any step of a call.
const STEP: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running gateway process.
struct Gateway {
    /// The process (killed when dropped).
    child: tokio::process::Child,
    /// Its pid, for /proc.
    pid: u32,
    /// `ws://…/ws`.
    url: String,
}

impl Gateway {
    /// Starts `binary serve` on embedded defaults with ephemeral loopback ports and
    /// limits wide enough for the load; waits for its "listening" line.
    async fn start(binary: &Path) -> anyhow::Result<Gateway> {
        let mut child = tokio::process::Command::new(binary)
            .arg("serve")
            .env("CALLBRIDGE_SERVER__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_ADMIN__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_SIP__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_STORAGE__PATH", ":memory:")
            .env("CALLBRIDGE_AUTH__HS256_SECRET", SECRET)
            .env("CALLBRIDGE_LIMITS__MAX_SESSIONS_PER_IP", "8192")
            .env("CALLBRIDGE_HTTP__MAX_CONNECTIONS_PER_IP", "8192")
            .env("CALLBRIDGE_RATELIMIT__WS_PER_IP_PER_SEC", "100000")
            .env("CALLBRIDGE_RATELIMIT__WS_BURST", "100000")
            .env("CALLBRIDGE_SERVER__MAX_CALLS", "100000")
            .env("CALLBRIDGE_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("gateway exited at once")?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(STEP, listening_url(&mut lines))
            .await
            .context("gateway did not start listening in time")??;
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Gateway { child, pid, url })
    }

    /// User+system CPU time of the process so far.
    fn cpu(&self, ticks_per_sec: f64) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces) start at `state`.
        let after = stat.rsplit_once(')').context("/proc stat format")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
            + fields.get(12).context("stime")?.parse::<u64>()?;
        Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_sec))
    }

    /// Resident set size of the process, KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?)
    }
}

/// UDP sockets the process holds: (all, bound to port 5353, the mDNS port).
fn udp_sockets(pid: u32) -> anyhow::Result<(usize, usize)> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let (mut all, mut mdns) = (0, 0);
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if inodes.contains(*inode) {
                all += 1;
                mdns += usize::from(local.ends_with(":14E9"));
            }
        }
    }
    Ok((all, mdns))
}

/// The `ws://` URL from the gateway's "callbridge listening: …" line.
async fn listening_url(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<String> {
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.strip_prefix("callbridge listening: ") {
            return Ok(rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string());
        }
    }
    bail!("gateway exited before listening")
}

/// When each step of a call's setup happened, after `call` was sent.
#[derive(Debug, Clone, Copy)]
struct SetupTimes {
    /// The SDP answer arrived.
    answer: Duration,
    /// `answered` arrived.
    answered: Duration,
    /// The first echoed RTP packet reached the browser.
    first_audio: Duration,
}

/// A call that is set up and echoing.
struct ActiveCall {
    /// Its session.
    ws: Ws,
    /// Its browser.
    browser: Arc<Browser>,
    /// Its call id.
    call_id: String,
    /// The tone task.
    tone: tokio::task::JoinHandle<()>,
    /// How the setup went.
    times: SetupTimes,
}

/// A token for `user`, valid for an hour.
fn token(user: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: user.into(),
        exp: now + 3600,
        nbf: None,
        iat: Some(now),
        aud: Some(claims_audience("callbridge")),
        iss: None,
        scope: "calls:outbound".into(),
        caller_id: None,
        dids: Vec::new(),
        max_calls: None,
        record: None,
    };
    Ok(mint_hs256(SECRET, &claims)?)
}

async fn send(ws: &mut Ws, value: Value) -> anyhow::Result<()> {
    ws.send(Message::Text(value.to_string().into())).await?;
    Ok(())
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(STEP, ws.next())
            .await
            .context("no message from the gateway in time")?
            .context("the gateway closed the socket")??;
        match frame {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Close(c) => bail!("the gateway closed the socket: {c:?}"),
            _ => continue,
        }
    }
}

/// Connects (TCP_NODELAY on, as browsers do), authenticates as `user`, places a call
/// to `to` and returns once the first echoed packet has come back.
async fn place(url: &str, user: &str, to: &str, tone_frames: u32) -> anyhow::Result<ActiveCall> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    send(&mut ws, json!({"type": "auth", "token": token(user)?})).await?;
    let ready = next_json(&mut ws).await?;
    if ready["type"] != "ready" {
        bail!("authentication failed: {ready}");
    }
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut candidates = Some(browser.take_candidates());
    let call_id = format!("{user}-call");
    let t0 = Instant::now();
    send(
        &mut ws,
        json!({"type": "call", "call_id": call_id, "to": to, "sdp": browser.offer_sdp()}),
    )
    .await?;
    let (mut answer, mut answered) = (None, None);
    let mut tone = None;
    let mut poll = tokio::time::interval(Duration::from_millis(1));
    let deadline = tokio::time::Instant::now() + STEP;
    let first_audio = loop {
        tokio::select! {
            message = next_json(&mut ws) => {
                let message = message?;
                match message["type"].as_str().unwrap_or("") {
                    "answer" => {
                        answer = Some(t0.elapsed());
                        browser.set_answer(message["sdp"].as_str().unwrap_or("")).await;
                        // Like a browser: audio flows as soon as ICE and DTLS are up.
                        let b = browser.clone();
                        tone = Some(tokio::spawn(async move {
                            if b.wait_connected(STEP).await {
                                let _ = b.start_sending_tone(tone_frames).await;
                            }
                        }));
                    }
                    "ice" => {
                        if let Ok(c) = serde_json::from_value::<IceCandidate>(message["candidate"].clone()) {
                            browser.add_remote_candidate(c).await;
                        }
                    }
                    "answered" => answered = Some(t0.elapsed()),
                    "ended" | "error" => bail!("call failed during setup: {message}"),
                    _ => {}
                }
            }
            c = async { candidates.as_mut().expect("guarded").recv().await }, if candidates.is_some() => match c {
                Some(c) => send(&mut ws, json!({"type": "ice", "call_id": call_id, "candidate": c})).await?,
                None => candidates = None,
            },
            _ = poll.tick() => {
                if let Some(first) = browser.received().first() {
                    break first.arrived.duration_since(t0);
                }
            }
            _ = tokio::time::sleep_until(deadline) => bail!("no echoed audio within {STEP:?}"),
        }
    };
    // `answered` may trail the first audio by a little: wait for it.
    while answered.is_none() {
        let message = next_json(&mut ws).await?;
        if message["type"] == "answered" {
            answered = Some(t0.elapsed());
        }
    }
    let (Some(answer), Some(answered), Some(tone)) = (answer, answered, tone) else {
        bail!("audio came back before the answer");
    };
    Ok(ActiveCall {
        ws,
        browser,
        call_id,
        tone,
        times: SetupTimes {
            answer,
            answered,
            first_audio,
        },
    })
}

impl ActiveCall {
    /// Keeps the session read until `stop`, then hangs up and waits for `ended`.
    async fn hold_then_hang_up(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                frame = self.ws.next() => match frame {
                    Some(Ok(_)) => {}
                    _ => bail!("session of {} lost while held", self.call_id),
                },
            }
        }
        self.hang_up().await
    }

    /// Hangs up and waits for `ended`.
    async fn hang_up(mut self) -> anyhow::Result<()> {
        send(
            &mut self.ws,
            json!({"type": "hangup", "call_id": self.call_id}),
        )
        .await?;
        while next_json(&mut self.ws).await?["type"] != "ended" {}
        self.tone.abort();
        self.browser.close().await;
        let _ = self.ws.close(None).await;
        Ok(())
    }
}

/// The `p`th percentile (nearest rank) of sorted `values`.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
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

    let mut times = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        let call = place(&gw.url, &format!("seq{i}"), &args.to, 250).await?;
        times.push(call.times);
        call.hang_up().await?;
    }
    if !times.is_empty() {
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
    }

    if args.concurrent > 0 {
        let rss_idle = gw.rss_kib()?;
        let settle = Duration::from_secs(2);
        let frames = u32::try_from((args.window + 30) * 50).unwrap_or(u32::MAX);
        let (stop_tx, stop_rx) = watch::channel(false);
        let url = gw.url.clone();
        let to = args.to.clone();
        // Set up a few at a time, like arriving users; each is held until `stop`.
        let mut held: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
        let mut setups = std::pin::pin!(
            futures_util::stream::iter(0..args.concurrent)
                .map(|i| {
                    let (url, to) = (url.clone(), to.clone());
                    async move { place(&url, &format!("load{i}"), &to, frames).await }
                })
                .buffer_unordered(8)
        );
        while let Some(call) = setups.next().await {
            held.push(tokio::spawn(call?.hold_then_hang_up(stop_rx.clone())));
        }
        tokio::time::sleep(settle).await;
        let (cpu0, t0) = (gw.cpu(hz)?, Instant::now());
        tokio::time::sleep(Duration::from_secs(args.window)).await;
        let (cpu1, elapsed) = (gw.cpu(hz)?, t0.elapsed());
        let rss_loaded = gw.rss_kib()?;
        let (udp, mdns) = udp_sockets(gw.pid)?;
        stop_tx.send_replace(true);
        for h in held {
            h.await??;
        }
        let m = args.concurrent as f64;
        let core_share = (cpu1 - cpu0).as_secs_f64() / elapsed.as_secs_f64();
        println!(
            "{} concurrent calls over {:.1} s: CPU {:.3} % of a core per call ({:.1} % in all), \
             RSS {} KiB idle -> {} KiB, {:.0} KiB per call",
            args.concurrent,
            elapsed.as_secs_f64(),
            core_share * 100.0 / m,
            core_share * 100.0,
            rss_idle,
            rss_loaded,
            rss_loaded.saturating_sub(rss_idle) as f64 / m
        );
        println!("gateway UDP sockets with them: {udp} ({mdns} on port 5353, mDNS)");
    }
    drop(gw.child);
    Ok(())
}
