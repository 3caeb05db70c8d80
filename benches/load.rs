//! End-to-end cost per call of the gateway's media plane: CPU share of one core and
//! resident memory, relayed and transcoded, with audio flowing both ways.
//!
//! The measuring process holds only the gateway side (WebRtcLeg + RtpLeg + Bridge per
//! call). A child process (this binary with `--child`) holds the test browsers (they
//! send a continuous tone at 50 packets/s) and one UDP echo per call standing in for
//! the SIP peer, so their cost does not pollute the figures.
//!
//! Run: `cargo bench --bench load` (defaults: 20 calls, 10 s, both modes), or
//! `cargo bench --bench load -- --calls 40 --secs 20 --mode transcode`. Without
//! `--bench` (as `cargo test --all-targets` runs it) it only does 2 calls for 1 s.
//! CPU is `utime + stime` of the measuring process (`/proc/self/stat`, 100 Hz ticks)
//! per second of call audio actually moved (100 packets = one call-second: 50 per
//! direction), so a child that falls behind does not flatter the result. Memory is the
//! RSS growth per call between the first 5 calls and all of them.

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::{Browser, BrowserOptions};
use callbridge::media::bridge::{Bridge, BridgeConfig};
use callbridge::media::codec::AudioCodec;
use callbridge::media::negotiate::DEFAULT_BROWSER_CODECS;
use callbridge::media::rtp_leg::RtpLeg;
use callbridge::media::sdp;
use callbridge::media::webrtc_leg::{IceCandidate, WebRtcEvent, WebRtcLeg, WebRtcLegConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Calls brought up before the memory baseline is taken.
const BASELINE_CALLS: usize = 5;

/// Command line.
struct Args {
    calls: usize,
    secs: u64,
    modes: Vec<String>,
    child: Option<(String, usize)>,
}

fn args() -> Args {
    let mut a = Args {
        calls: 20,
        secs: 10,
        modes: vec!["relay".into(), "transcode".into()],
        child: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|a| a == "--bench" || a == "--child") {
        // `cargo test --all-targets` runs this binary without `--bench`: a quick smoke run.
        a.calls = 2;
        a.secs = 1;
    }
    let mut i = 0;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--calls" => a.calls = next.parse().unwrap_or(a.calls),
            "--secs" => a.secs = next.parse().unwrap_or(a.secs),
            "--mode" => a.modes = vec![next],
            "--child" => {
                let n = argv.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(1);
                a.child = Some((next, n));
                i += 1;
            }
            _ => {
                i += 1;
                continue; // `--bench` and anything else cargo passes
            }
        }
        i += 2;
    }
    a
}

/// (utime + stime) of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Resident set size of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if let Some((mode, n)) = args.child {
        rt.block_on(child(mode == "transcode", n));
        return;
    }
    println!(
        "| mode | calls | CPU per call (% of one core) | calls per core | RSS per call | packets/s moved |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for mode in &args.modes {
        rt.block_on(measure(mode, args.calls, args.secs));
    }
}

/// One gateway-side call.
struct Call {
    leg: Arc<WebRtcLeg>,
    bridge: Option<Bridge>,
}

/// Runs `calls` calls in `mode` and prints one table row.
async fn measure(mode: &str, calls: usize, secs: u64) {
    let rss0 = rss_kib();
    let exe = std::env::current_exe().expect("own path");
    let mut child = tokio::process::Command::new(exe)
        .args(["--child", mode, &calls.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn child");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut from_child = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(v) = out_rx.recv().await {
            let line = format!("{v}\n");
            if to_child.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let cfg = WebRtcLegConfig::loopback(DEFAULT_BROWSER_CODECS.to_vec()).expect("a media worker");
    let mut legs: HashMap<u64, Call> = HashMap::new();
    let mut connected = 0usize;
    let mut rss_base = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected < calls && Instant::now() < deadline {
        let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(30), from_child.next_line()).await
        else {
            break;
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let i = v["i"].as_u64().unwrap_or(0);
        if let Some(offer) = v["offer"].as_str() {
            let echo: SocketAddr = v["echo"].as_str().unwrap_or("").parse().expect("echo addr");
            let (events_tx, mut events_rx) = mpsc::unbounded_channel();
            let (leg, answer) = WebRtcLeg::answer(&cfg, offer, events_tx)
                .await
                .expect("answer");
            let leg = Arc::new(leg);
            let rtp = RtpLeg::bind(LOOPBACK, (50_000, 59_999)).await.expect("rtp");
            let codecs = [AudioCodec::Pcmu, AudioCodec::Pcma];
            let sip_answer = format!(
                "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
                echo.port()
            );
            let remote = sdp::parse_answer(&sip_answer, &codecs).expect("sip answer");
            let (media_tx, _media_rx) = mpsc::unbounded_channel();
            let bridge = Bridge::start_with(&leg, rtp, remote, BridgeConfig::default(), media_tx)
                .expect("bridge");
            let _ = out_tx.send(json!({"i": i, "answer": answer}));
            let out = out_tx.clone();
            tokio::spawn(async move {
                while let Some(ev) = events_rx.recv().await {
                    if let WebRtcEvent::LocalCandidate(c) = ev {
                        let _ = out.send(json!({"i": i, "cand": c}));
                    }
                }
            });
            legs.insert(
                i,
                Call {
                    leg,
                    bridge: Some(bridge),
                },
            );
        } else if let Some(c) = v.get("bcand") {
            let c: Option<IceCandidate> = serde_json::from_value(c.clone()).unwrap_or(None);
            if let Some(call) = legs.get(&i) {
                let _ = call.leg.add_remote_candidate(c).await;
            }
        } else if v["connected"].as_bool() == Some(true) {
            connected += 1;
            if connected == BASELINE_CALLS.min(calls) {
                tokio::time::sleep(Duration::from_secs(2)).await;
                rss_base = Some((rss_kib(), connected));
            }
        }
    }
    if connected < calls {
        println!("| {mode} | only {connected} of {calls} calls connected | | | | |");
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let moved = |legs: &HashMap<u64, Call>| -> u64 {
        legs.values()
            .filter_map(|c| c.bridge.as_ref())
            .map(|b| {
                let s = b.stats();
                s.to_sip + s.to_browser
            })
            .sum()
    };
    let (cpu1, t1, p1) = (cpu_time(), Instant::now(), moved(&legs));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu2, t2, p2) = (cpu_time(), Instant::now(), moved(&legs));
    let rss_all = rss_kib();
    let wall = (t2 - t1).as_secs_f64();
    let packets = (p2 - p1) as f64;
    let call_seconds = packets / 100.0;
    let cpu = (cpu2 - cpu1).as_secs_f64();
    let pct_per_call = if call_seconds > 0.0 {
        cpu / call_seconds * 100.0
    } else {
        f64::NAN
    };
    let (base_rss, base_calls) = rss_base.unwrap_or((rss0, 0));
    let per_call_kib = if connected > base_calls {
        (rss_all.saturating_sub(base_rss)) as f64 / (connected - base_calls) as f64
    } else {
        f64::NAN
    };
    let work: u64 = legs
        .values()
        .filter_map(|c| c.bridge.as_ref())
        .map(|b| b.stats().codec_frames())
        .sum();
    println!(
        "| {mode} | {connected} | {pct_per_call:.4} % | {:.0} | {per_call_kib:.0} KiB | {:.0} (codec frames: {work}) |",
        100.0 / pct_per_call,
        packets / wall
    );
    for (_, mut call) in legs {
        if let Some(b) = call.bridge.take() {
            b.stop().await;
        }
        call.leg.close().await;
    }
    drop(out_tx);
    let _ = child.kill().await;
    writer.abort();
}

/// The browsers and SIP-side echoes of `n` calls, driven over stdin/stdout.
async fn child(opus_only: bool, n: usize) {
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(v) = out_rx.recv().await {
            let line = format!("{v}\n");
            if stdout.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    let mut browsers = HashMap::new();
    for i in 0..n as u64 {
        let options = if opus_only {
            BrowserOptions::opus_only()
        } else {
            BrowserOptions::default()
        };
        let b = Browser::new(options).await;
        let echo = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("echo");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..len], from).await;
            }
        });
        let mut cands = b.take_candidates();
        let out = out_tx.clone();
        tokio::spawn(async move {
            while let Some(c) = cands.recv().await {
                let _ = out.send(json!({"i": i, "bcand": c}));
            }
        });
        let _ = out_tx.send(json!({"i": i, "offer": b.offer_sdp(), "echo": echo_addr.to_string()}));
        browsers.insert(i, b);
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let i = v["i"].as_u64().unwrap_or(0);
        let Some(b) = browsers.get(&i).cloned() else {
            continue;
        };
        if let Some(answer) = v["answer"].as_str() {
            b.set_answer(answer).await;
            let out = out_tx.clone();
            tokio::spawn(async move {
                if b.wait_connected(Duration::from_secs(30)).await {
                    let _ = out.send(json!({"i": i, "connected": true}));
                    // An hour of audio: runs until the parent kills us.
                    let _ = if opus_only {
                        b.start_sending_opus_tone(180_000, 440.0).await
                    } else {
                        b.start_sending_pcmu_sine(180_000, 440.0).await
                    };
                }
            });
        } else if let Some(c) = v.get("cand")
            && let Ok(Some(c)) = serde_json::from_value::<Option<IceCandidate>>(c.clone())
        {
            b.add_remote_candidate(c).await;
        }
    }
}
