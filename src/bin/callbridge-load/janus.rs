//! Janus (Debian's `janus` 1.1) with its SIP plugin as the gateway under measurement,
//! for side-by-side figures: the same browsers, the same SIP echo, the same /proc
//! readings. Janus is started with a generated configuration (the WebSocket transport
//! and the SIP plugin only) and driven through its JSON API over WebSocket:
//! create → attach `janus.plugin.sip` → register as guest → call (offer, trickle) →
//! `accepted` (answer) → … → hangup → destroy.
//!
//! Janus does not gather host candidates on loopback: `--janus-ice-iface` names the
//! interface it gathers on (default `eth0`), and the browsers gather on that
//! interface's IPv4 address too (the `webrtc` crate does not pair a loopback candidate
//! with a non-loopback one). Both ends are on this host, so the kernel delivers the
//! datagrams locally (through `lo`), as on loopback. In a network namespace with a
//! veth pair (docs/benchmarks.md) nothing can leave the namespace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callbridge::media::webrtc_leg::IceCandidate;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::STEP;
use crate::browser::Browser;
use crate::call::{
    ActiveCall, Dialer, JanusIds, SetupTimes, Ws, browser_options, send, send_audio,
};

/// Where Debian installs Janus's plugins and transports.
const JANUS_LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// A Janus process started by the tool.
pub struct JanusProcess {
    _child: tokio::process::Child,
    /// Its pid, for /proc.
    pub pid: u32,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// Its configuration and log (`janus.log`), left for inspection.
    pub dir: PathBuf,
}

impl JanusProcess {
    /// Writes a configuration (WebSocket transport on 127.0.0.1:`port`, the SIP plugin
    /// only, ICE on `ice_iface`, no session timeout) and starts `binary`.
    pub async fn start(binary: &Path, port: u16, ice_iface: &str) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("callbridge-load-janus-{}", std::process::id()));
        for sub in ["plugins", "transports", "events", "loggers"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let link = |kind: &str, name: &str| -> anyhow::Result<()> {
            let target = Path::new(JANUS_LIB).join(kind).join(name);
            let at = dir.join(kind).join(name);
            let _ = std::fs::remove_file(&at);
            std::os::unix::fs::symlink(&target, &at)
                .with_context(|| format!("cannot link {}", target.display()))
        };
        link("plugins", "libjanus_sip.so")?;
        link("transports", "libjanus_websockets.so")?;
        let d = dir.display();
        std::fs::write(
            dir.join("janus.jcfg"),
            format!(
                "general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{d}/plugins\"\n \
                 transports_folder = \"{d}/transports\"\n events_folder = \"{d}/events\"\n \
                 loggers_folder = \"{d}/loggers\"\n log_to_stdout = true\n debug_level = 4\n \
                 session_timeout = 0\n admin_secret = \"callbridge-load\"\n}}\n\
                 certificates: {{}}\nmedia: {{\n ipv6 = false\n rtp_port_range = \"30000-39999\"\n}}\n\
                 nat: {{\n nice_debug = false\n ice_enforce_list = \"{ice_iface}\"\n ignore_mdns = true\n}}\n\
                 plugins: {{}}\ntransports: {{}}\nevents: {{}}\nloggers: {{}}\n"
            ),
        )?;
        std::fs::write(
            dir.join("janus.transport.websockets.jcfg"),
            format!(
                "general: {{\n json = \"plain\"\n ws = true\n ws_port = {port}\n \
                 ws_ip = \"127.0.0.1\"\n wss = false\n}}\nadmin: {{\n admin_ws = false\n}}\n"
            ),
        )?;
        std::fs::write(
            dir.join("janus.plugin.sip.jcfg"),
            "general: {\n local_ip = \"127.0.0.1\"\n local_media_ip = \"127.0.0.1\"\n \
             keepalive_interval = 0\n behind_nat = false\n register_ttl = 3600\n \
             rtp_port_range = \"40000-49999\"\n events = false\n}\n",
        )?;
        // Its log goes to a file beside the configuration (stdout to a pipe is block
        // buffered, so readiness is judged by its WebSocket port accepting).
        let log = std::fs::File::create(dir.join("janus.log"))?;
        let mut child = tokio::process::Command::new(binary)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(&dir)
            .stdout(log)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("janus exited at once")?;
        let deadline = Instant::now() + STEP;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "janus exited ({status}); see {}",
                    dir.join("janus.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("janus did not open its WebSocket port {port} in time");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(JanusProcess {
            _child: child,
            pid,
            url: format!("ws://127.0.0.1:{port}"),
            dir,
        })
    }
}

/// The first IPv4 address of interface `iface` (`ip -4 -o addr show dev IFACE`).
pub fn iface_ipv4(iface: &str) -> anyhow::Result<std::net::IpAddr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", iface])
        .output()
        .context("cannot run `ip`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("interface {iface} has no IPv4 address (--janus-ice-iface)"))
}

/// A fresh transaction id.
fn tx() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The next JSON message that is not an `ack` or keepalive.
async fn next_event(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let v = crate::call::next_json(ws).await?;
        match v["janus"].as_str() {
            Some("ack") | Some("keepalive") => continue,
            _ => return Ok(v),
        }
    }
}

/// Sends `request` and waits for its `success` (create/attach) data id.
async fn request_id(ws: &mut Ws, mut request: Value) -> anyhow::Result<u64> {
    let t = tx();
    request["transaction"] = json!(t);
    send(ws, request).await?;
    loop {
        let v = next_event(ws).await?;
        if v["transaction"] == t.as_str() {
            if v["janus"] == "success" {
                return v["data"]["id"]
                    .as_u64()
                    .context("janus success without an id");
            }
            bail!("janus refused: {v}");
        }
    }
}

/// The SIP plugin's event name (`registered`, `calling`, `accepted`, `hangup`, …) of
/// a message, if it is one.
fn sip_event(v: &Value) -> Option<&str> {
    v["plugindata"]["data"]["result"]["event"].as_str()
}

/// Places one call through Janus's SIP plugin to `uri` as `user`.
pub async fn place(dialer: &Dialer, user: &str, uri: &str) -> anyhow::Result<ActiveCall> {
    let mut request = dialer.url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("janus-protocol"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .with_context(|| format!("cannot connect to {}", dialer.url))?;
    let session = request_id(&mut ws, json!({"janus": "create"})).await?;
    let handle = request_id(
        &mut ws,
        json!({"janus": "attach", "session_id": session, "plugin": "janus.plugin.sip"}),
    )
    .await?;
    let message = |body: Value| {
        json!({"janus": "message", "session_id": session, "handle_id": handle,
               "transaction": tx(), "body": body})
    };
    send(
        &mut ws,
        message(json!({"request": "register", "type": "guest",
                       "username": format!("sip:{user}@127.0.0.1")})),
    )
    .await?;
    loop {
        let v = next_event(&mut ws).await?;
        match sip_event(&v) {
            Some("registered") => break,
            Some(_) | None if v["plugindata"]["data"]["error"].is_string() => {
                bail!("janus register failed: {v}")
            }
            _ => {}
        }
    }
    let browser = Browser::new(browser_options(dialer)).await;
    let mut candidates = Some(browser.take_candidates());
    let sent_at = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut call = message(json!({"request": "call", "uri": uri}));
    call["jsep"] = json!({"type": "offer", "sdp": browser.offer_sdp()});
    send(&mut ws, call).await?;
    let (mut answered, mut sender) = (None, None);
    let mut poll = tokio::time::interval(Duration::from_millis(1));
    let deadline = tokio::time::Instant::now() + STEP;
    let first_audio = loop {
        tokio::select! {
            v = next_event(&mut ws) => {
                let v = v?;
                if v["janus"] == "trickle" {
                    let c = &v["candidate"];
                    if let Some(candidate) = c["candidate"].as_str() {
                        browser.add_remote_candidate(IceCandidate {
                            candidate: candidate.to_owned(),
                            sdp_mid: c["sdpMid"].as_str().map(str::to_owned),
                            sdp_mline_index: c["sdpMLineIndex"].as_u64().map(|i| i as u16),
                        }).await;
                    }
                    continue;
                }
                if v["janus"] == "hangup" || v["janus"] == "error" {
                    bail!("janus call failed during setup: {v}");
                }
                match sip_event(&v) {
                    Some("accepted") => {
                        answered = Some(Instant::now());
                        let sdp = v["jsep"]["sdp"].as_str().context("accepted without an answer")?;
                        browser.set_answer(sdp).await;
                        sender = Some(tokio::spawn(send_audio(browser.clone(), dialer.codec, sent_at.clone())));
                    }
                    Some("hangup") => bail!("janus call failed during setup: {v}"),
                    _ if v["plugindata"]["data"]["error"].is_string() => bail!("janus call failed: {v}"),
                    _ => {}
                }
            }
            c = async { candidates.as_mut().expect("guarded").recv().await }, if candidates.is_some() => {
                let candidate = match c {
                    Some(Some(c)) => json!({"candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index}),
                    Some(None) | None => { candidates = None; json!({"completed": true}) }
                };
                send(&mut ws, json!({"janus": "trickle", "session_id": session, "handle_id": handle,
                                     "transaction": tx(), "candidate": candidate})).await?;
            }
            _ = poll.tick() => {
                if let Some(first) = browser.received().first() {
                    break first.arrived.duration_since(t0);
                }
            }
            _ = tokio::time::sleep_until(deadline) => bail!("no echoed audio within {STEP:?}"),
        }
    };
    let (Some(answered), Some(sender)) = (answered, sender) else {
        bail!("audio came back before the answer");
    };
    let timing = dialer.echo.as_ref().and_then(|e| e.take_timing(user));
    Ok(ActiveCall {
        ws,
        browser,
        call_id: format!("{user}-janus"),
        codec: dialer.codec,
        sender,
        sent_at,
        janus: Some(JanusIds { session, handle }),
        times: SetupTimes {
            answer: answered.duration_since(t0),
            answered: answered.duration_since(t0),
            first_audio,
            to_invite: timing.map(|(invite, _)| invite.saturating_duration_since(t0)),
            ok_to_answered: timing.map(|(_, ok)| answered.saturating_duration_since(ok)),
        },
    })
}

/// Hangs a Janus call up, waits for its `hangup` event and destroys the session.
pub async fn hang_up(ws: &mut Ws, ids: JanusIds) -> anyhow::Result<()> {
    send(
        ws,
        json!({"janus": "message", "session_id": ids.session, "handle_id": ids.handle,
               "transaction": tx(), "body": {"request": "hangup"}}),
    )
    .await?;
    loop {
        let v = next_event(ws).await?;
        if sip_event(&v) == Some("hangup") || v["janus"] == "hangup" {
            break;
        }
    }
    send(
        ws,
        json!({"janus": "destroy", "session_id": ids.session, "transaction": tx()}),
    )
    .await?;
    Ok(())
}
