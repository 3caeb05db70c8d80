//! `callbridge-load`: the cost of a whole `callbridge serve` process under real calls
//! over protocol v1, measured from outside.
//!
//! The tool starts the gateway binary with a generated configuration (everything on
//! loopback, limits wide open, a trunk pointing at the tool's own SIP echo, a secret
//! of its own), or measures one already running (`--gateway-url`, `--gateway-pid`,
//! `--secret`). Each call is a fresh WebSocket session (auth with a minted HS256
//! token, `call` with an offer, trickled ICE) and a fresh `webrtc`-crate browser
//! (tests/common/browser.rs: ICE, DTLS, SRTP) that sends 20 ms frames at 50 packets/s
//! as soon as it is connected: PCMU tone frames carrying their frame number (the
//! gateway relays), or Opus (`--codec opus`: the gateway transcodes). The SIP side is
//! answered by the tool's echo (sip_echo.rs), so the gateway's SIP client and SIP-side
//! RTP are in the measured path; `--internal-echo` dials the gateway's built-in echo
//! instead. Every echoed PCMU frame is matched to what was sent by its number (lost,
//! late, duplicated) and 1 % are compared byte for byte.
//!
//! The clients run in this process (one `webrtc` peer connection each, on tokio), not
//! the sans-IO single thread the issue asks for: the gateway's own figures (its
//! process's CPU, wake-ups and RSS from /proc) do not depend on that, the
//! whole-machine figures include the clients' cost (shown separately as tool CPU).
//!
//! ```text
//! cargo build --release --bin callbridge --bin callbridge-load
//! target/release/callbridge-load sweep --steps 20,40,100,200 --hold 20s --repeat 3
//! target/release/callbridge-load cps --start 5 --step 5 --max 200
//! target/release/callbridge-load soak --calls 100 --duration 10m
//! target/release/callbridge-load setup --calls 50
//! ```
//!
//! `CALLBRIDGE_*` variables in the tool's environment reach the gateway it starts
//! (e.g. `CALLBRIDGE_MEDIA__RTCP_INTERVAL=1s`). Nothing is asserted: this measures,
//! and is only meaningful against a release build on an otherwise idle machine.

#[path = "../../../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;
mod call;
mod gateway;
mod janus;
mod measure;
mod rate;
mod sip_echo;
mod sweep;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use call::{Codec, Dialer};
use gateway::{Gateway, GatewaySetup, TRUNK_NUMBER, generated_config, ticks_per_sec, udp_sockets};
use measure::{Percentiles, Snapshot};
use sip_echo::SipEcho;

/// Longest wait for any step of a call.
pub(crate) const STEP: Duration = Duration::from_secs(20);

/// Measure a whole callbridge gateway process under real WebRTC calls.
#[derive(Parser)]
#[command(name = "callbridge-load")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// The callbridge binary to start (default: `callbridge` beside this tool).
    #[arg(long, global = true)]
    gateway: Option<PathBuf>,
    /// Measure an already-running gateway at this `ws://…/ws` URL instead (needs
    /// --gateway-pid and --secret).
    #[arg(long, global = true, requires = "gateway_pid")]
    gateway_url: Option<String>,
    /// Process id of the gateway given by --gateway-url.
    #[arg(long, global = true, requires = "gateway_url")]
    gateway_pid: Option<u32>,
    /// HS256 secret of the running gateway (auth.hs256_secret).
    #[arg(
        long,
        global = true,
        env = "CALLBRIDGE_LOAD_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// Number dialed (default: one the generated configuration routes to the SIP echo,
    /// or `echo` with --internal-echo).
    #[arg(long, global = true)]
    to: Option<String>,
    /// Dial the gateway's built-in echo instead of the tool's SIP echo (its cost is
    /// then the gateway's).
    #[arg(long, global = true)]
    internal_echo: bool,
    /// Where the tool's SIP echo listens (UDP); the generated configuration's trunk
    /// points here. For --gateway-url, the address its trunk points at.
    #[arg(long, global = true, default_value = "127.0.0.1:0")]
    sip_echo: SocketAddr,
    /// The browsers' codec: pcmu (relay) or opus (Opus-only browsers: transcoding).
    #[arg(long, global = true, value_enum, default_value = "pcmu")]
    codec: Codec,
    /// Call setups in flight at a time when placing many calls.
    #[arg(long, global = true, default_value_t = 8)]
    parallel: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Measure Debian's Janus with its SIP plugin instead of callbridge (started by
    /// the tool; same browsers, same SIP echo).
    #[arg(long, global = true, conflicts_with_all = ["gateway_url", "internal_echo"])]
    janus: bool,
    /// The janus binary.
    #[arg(long, global = true, default_value = "/usr/bin/janus")]
    janus_binary: PathBuf,
    /// Port of Janus's WebSocket API (on 127.0.0.1).
    #[arg(long, global = true, default_value_t = 8188)]
    janus_port: u16,
    /// Interface Janus gathers ICE candidates on (it skips loopback).
    #[arg(long, global = true, default_value = "eth0")]
    janus_ice_iface: String,
    /// The browsers send RTCP every 5 s and ICE keepalives after 5 s without media, as
    /// Chrome does for audio (default: the `webrtc` crate's 1 s and 2 s). An idle
    /// call's wake-ups depend on them.
    #[arg(long, global = true)]
    chrome_timers: bool,
    /// Label recorded with the results.
    #[arg(long, global = true, default_value = "")]
    label: String,
}

#[derive(Subcommand)]
enum Mode {
    /// Calls one after another: setup latency percentiles and gateway CPU per call.
    Setup {
        /// Calls placed.
        #[arg(long, default_value_t = 50)]
        calls: usize,
    },
    /// Steps of N calls held at once: per-call CPU, RSS, wake-ups, setup, packets.
    Sweep {
        /// Calls held at each step.
        #[arg(long, value_delimiter = ',', default_value = "50,100,200")]
        steps: Vec<usize>,
        /// Measuring window with audio flowing.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
        hold: Duration,
        /// Runs of each step (the table shows the median and the spread).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Pause after the setups before measuring.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
        settle: Duration,
        /// Also measure a window as long as --hold with the calls up but silent.
        #[arg(long)]
        idle: bool,
    },
    /// Setups per second rising until p99 `call` → `answered` passes --limit or a
    /// call fails; reports the last passing rate.
    Cps {
        /// First rate (setups per second).
        #[arg(long, default_value_t = 5)]
        start: usize,
        /// Rate increase per round.
        #[arg(long, default_value_t = 5)]
        step: usize,
        /// Highest rate.
        #[arg(long, default_value_t = 200)]
        max: usize,
        /// Seconds each rate is kept up.
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// How long each call is held (audio flowing) before it hangs up.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        call_hold: Duration,
        /// Highest p99 of `call` → `answered` that passes.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
        limit: Duration,
    },
    /// Steady calls for a long time; a report every interval (RSS drift, failures).
    Soak {
        /// Calls held.
        #[arg(long, default_value_t = 100)]
        calls: usize,
        /// How long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        duration: Duration,
        /// Report interval.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        interval: Duration,
    },
}

/// The HS256 secret the tool gives a gateway it starts.
const SECRET: &str = "callbridge-load-tool-secret-0123456789abcdef";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.janus && args.codec == Codec::Opus {
        anyhow::bail!(
            "--janus --codec opus: Janus's SIP plugin does not transcode (an Opus-only browser \
             cannot reach a PCMU SIP peer through it); measure Janus with --codec pcmu"
        );
    }
    let hz = ticks_per_sec();
    let echo = if args.internal_echo {
        None
    } else {
        Some(SipEcho::start(args.sip_echo)?)
    };
    let mut janus_process = None;
    let (gw, secret, binary) = match (&args.gateway_url, args.gateway_pid) {
        _ if args.janus => {
            let janus = janus::JanusProcess::start(
                &args.janus_binary,
                args.janus_port,
                &args.janus_ice_iface,
            )
            .await?;
            let gw = Gateway::attach(janus.url.clone(), janus.pid)?;
            eprintln!("janus configuration and log: {}", janus.dir.display());
            janus_process = Some(janus);
            (gw, String::new(), Some(args.janus_binary.clone()))
        }
        (Some(url), Some(pid)) => {
            let secret = args
                .secret
                .clone()
                .context("--gateway-url needs the gateway's --secret")?;
            (Gateway::attach(url.clone(), pid)?, secret, None)
        }
        _ => {
            let binary = match args.gateway.clone() {
                Some(path) => path,
                None => std::env::current_exe()?
                    .parent()
                    .context("tool path")?
                    .join("callbridge"),
            };
            let config = generated_config(&GatewaySetup {
                secret: SECRET,
                trunk: echo.as_ref().map(|e| e.sip_addr),
            });
            (
                Gateway::start(&binary, &config).await?,
                SECRET.to_owned(),
                Some(binary),
            )
        }
    };
    let to = args.to.clone().unwrap_or_else(|| {
        if args.internal_echo {
            "echo"
        } else {
            TRUNK_NUMBER
        }
        .to_owned()
    });
    let dialer = Dialer {
        url: gw.url.clone(),
        secret: Arc::from(secret.as_str()),
        to: to.clone(),
        codec: args.codec,
        chrome_timers: args.chrome_timers,
        echo: echo.as_ref().map(|e| e.counters.clone()),
        bind_ip: if args.janus {
            janus::iface_ipv4(&args.janus_ice_iface)?
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        },
        janus_uri: match (&echo, args.janus) {
            (Some(e), true) => Some(format!("sip:{to}@{}", e.sip_addr)),
            _ => None,
        },
    };
    eprintln!(
        "gateway pid {} at {}; dialing {to} ({:?}); SIP echo {}",
        gw.pid,
        gw.url,
        args.codec,
        echo.as_ref()
            .map_or("off (internal echo)".into(), |e| e.sip_addr.to_string())
    );

    // Warm-up: the first call pays for lazy initialisation everywhere.
    // A call that fails is counted by the modes; the warm-up gets three tries.
    for attempt in 1..=3 {
        match async {
            dialer
                .place(&format!("warmup{attempt}"))
                .await?
                .hang_up()
                .await
        }
        .await
        {
            Ok(()) => break,
            Err(e) => {
                if let Some(echo) = &echo {
                    eprintln!("SIP echo so far: {}", echo.counters);
                }
                if attempt == 3 {
                    return Err(e.context("the warm-up call failed three times"));
                }
                eprintln!("warm-up call {attempt} failed: {e:#}");
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = Snapshot::take(&gw, hz)?;
    let idle_rss_kib = idle.rss_kib();

    let (table, results) = match &args.mode {
        Mode::Setup { calls } => setup(&gw, &dialer, *calls, hz).await?,
        Mode::Sweep {
            steps,
            hold,
            repeat,
            settle,
            idle,
        } => {
            let plan = sweep::SweepPlan {
                steps: steps.clone(),
                hold: *hold,
                repeat: (*repeat).max(1),
                settle: *settle,
                idle: *idle,
                parallel: args.parallel,
            };
            let runs = sweep::sweep(&gw, &dialer, &plan, hz, idle_rss_kib).await?;
            (sweep::sweep_table(&runs), json!(runs))
        }
        Mode::Cps {
            start,
            step,
            max,
            secs,
            call_hold,
            limit,
        } => {
            let plan = rate::CpsPlan {
                start: *start,
                step: *step,
                max: *max,
                secs: *secs,
                call_hold: *call_hold,
                limit: *limit,
            };
            let runs = rate::cps(&gw, &dialer, &plan, hz, idle_rss_kib).await?;
            let last = runs.iter().filter(|r| r.passed).map(|r| r.rate).max();
            (
                rate::cps_table(&runs),
                json!({"rates": runs, "last_passing_rate": last}),
            )
        }
        Mode::Soak {
            calls,
            duration,
            interval,
        } => {
            let plan = rate::SoakPlan {
                calls: *calls,
                duration: *duration,
                interval: *interval,
                parallel: args.parallel,
            };
            let result = rate::soak(&gw, &dialer, &plan, hz, idle_rss_kib).await?;
            (rate::soak_table(&result), json!(result))
        }
    };

    let (udp, mdns) = udp_sockets(gw.pid).unwrap_or((0, 0));
    let echo_json = echo.as_ref().map(|e| {
        json!({
            "sip": e.sip_addr.to_string(),
            "rtp": e.rtp_addr.to_string(),
            "invites": e.counters.invites.load(std::sync::atomic::Ordering::Relaxed),
            "byes": e.counters.byes.load(std::sync::atomic::Ordering::Relaxed),
            "rtp_echoed": e.counters.rtp.load(std::sync::atomic::Ordering::Relaxed),
            "rtcp_received": e.counters.rtcp.load(std::sync::atomic::Ordering::Relaxed),
            "rtp_socket_drops": e.rtp_socket_drops(),
        })
    });
    println!(
        "callbridge-load {} {} ({}): codec {:?}, {}\n",
        mode_name(&args.mode),
        if args.janus { "janus" } else { "callbridge" },
        args.label,
        args.codec,
        if args.internal_echo {
            "built-in echo"
        } else {
            "tool's SIP echo"
        }
    );
    println!("{table}");
    println!(
        "gateway idle RSS {idle_rss_kib} KiB; UDP sockets after the run: {udp} ({mdns} on port 5353)"
    );
    if let Some(e) = &echo_json {
        println!("SIP echo: {e}");
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "tool": "callbridge-load",
            "mode": mode_name(&args.mode),
            "label": args.label,
            "chrome_timers": args.chrome_timers,
            "codec": args.codec,
            "internal_echo": args.internal_echo,
            "gateway_kind": if args.janus { "janus" } else { "callbridge" },
            "dialed": to,
            "gateway": {
                "binary": binary.map(|b| b.display().to_string()),
                "pid": gw.pid,
                "url": gw.url,
                "idle_rss_kib": idle_rss_kib,
                "udp_sockets_after": udp,
                "mdns_sockets_after": mdns,
                "env": callbridge_env(),
            },
            "machine": {
                "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                "loadavg_at_end": measure::loadavg(),
            },
            "sip_echo": echo_json,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    drop(gw);
    drop(janus_process);
    Ok(())
}

fn mode_name(mode: &Mode) -> &'static str {
    match mode {
        Mode::Setup { .. } => "setup",
        Mode::Sweep { .. } => "sweep",
        Mode::Cps { .. } => "cps",
        Mode::Soak { .. } => "soak",
    }
}

/// `CALLBRIDGE_*` variables passed on to the gateway, values of secret ones hidden.
fn callbridge_env() -> serde_json::Map<String, serde_json::Value> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("CALLBRIDGE_") && k != "CALLBRIDGE_LOAD_SECRET")
        .map(|(k, v)| {
            let secret = ["SECRET", "PASSWORD", "TOKEN", "KEY", "URL"]
                .iter()
                .any(|s| k.contains(s));
            let v = if secret { "<set>".to_owned() } else { v };
            (k, json!(v))
        })
        .collect()
}

/// Places `calls` calls one after another; each is hung up after its first echo.
async fn setup(
    gw: &Gateway,
    dialer: &Dialer,
    calls: usize,
    hz: f64,
) -> anyhow::Result<(String, serde_json::Value)> {
    let cpu0 = Snapshot::take(gw, hz)?.gateway_cpu();
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls {
        let call = dialer.place(&format!("seq{i}")).await?;
        times.push(call.times);
        call.hang_up().await?;
    }
    let cpu = Snapshot::take(gw, hz)?.gateway_cpu().saturating_sub(cpu0);
    let cpu_ms = cpu.as_secs_f64() * 1000.0 / calls.max(1) as f64;
    let answer = Percentiles::of(times.iter().map(|t| t.answer));
    let answered = Percentiles::of(times.iter().map(|t| t.answered));
    let first_audio = Percentiles::of(times.iter().map(|t| t.first_audio));
    let to_invite = Percentiles::of(times.iter().filter_map(|t| t.to_invite));
    let ok_to_answered = Percentiles::of(times.iter().filter_map(|t| t.ok_to_answered));
    let mut table = format!(
        "{calls} calls one after another, ms after `call` sent:\n\n\
         | step | p50 | p99 | max |\n| --- | --- | --- | --- |\n"
    );
    for (name, p) in [
        ("`answer`", answer),
        ("`answered`", answered),
        ("first echoed audio", first_audio),
        ("gateway-added: `call` → INVITE at the SIP echo", to_invite),
        ("gateway-added: 200 OK sent → `answered`", ok_to_answered),
    ] {
        table.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.1} |\n",
            p.p50_ms, p.p99_ms, p.max_ms
        ));
    }
    table.push_str(&format!(
        "\nGateway CPU per call (setup, first audio, hangup): {cpu_ms:.1} ms\n"
    ));
    let results = json!({
        "calls": calls,
        "setup_answer": answer,
        "setup_answered": answered,
        "first_audio": first_audio,
        "gateway_call_to_invite": to_invite,
        "gateway_ok_to_answered": ok_to_answered,
        "gateway_cpu_ms_per_call": cpu_ms,
    });
    Ok((table, results))
}
