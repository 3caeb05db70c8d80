//! A command-line test client: places one call through callbridge with a `webrtc`
//! peer standing in for a browser, sends a tone, counts what comes back, hangs up.
//!
//! ```text
//! cargo run --example dial -- --url ws://127.0.0.1:8080/ws --token "$TOKEN" --to +15551234567
//! ```

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, bail};
use callbridge::media::webrtc_leg::IceCandidate;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use browser::{Browser, BrowserOptions, frame_number};

/// Place one call through callbridge and report the audio that came back.
#[derive(Parser)]
struct Args {
    /// Signaling URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// JWT (e.g. the dev token `callbridge serve` prints on embedded defaults).
    #[arg(long, env = "CALLBRIDGE_TOKEN")]
    token: String,
    /// Number to dial.
    #[arg(long, default_value = "+15551234567")]
    to: String,
    /// Seconds of tone to send once answered.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut ws, _) = tokio_tungstenite::connect_async(&args.url)
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    ws.send(Message::Text(
        json!({"type": "auth", "token": args.token})
            .to_string()
            .into(),
    ))
    .await?;
    let ready = next_json(&mut ws).await?;
    if ready["type"] != "ready" {
        bail!("authentication failed: {ready}");
    }
    println!("session {} as {}", ready["session_id"], ready["user"]);

    let browser = Browser::new(BrowserOptions::default()).await;
    let mut candidates = browser.take_candidates();
    let call =
        json!({"type": "call", "call_id": "dial-1", "to": args.to, "sdp": browser.offer_sdp()});
    ws.send(Message::Text(call.to_string().into())).await?;

    let mut tone = None;
    let mut candidates_done = false;
    loop {
        tokio::select! {
            message = next_json(&mut ws) => {
                let message = message?;
                match message["type"].as_str().unwrap_or("") {
                    "answer" => browser.set_answer(message["sdp"].as_str().unwrap_or("")).await,
                    "ice" => {
                        if let Ok(c) = serde_json::from_value::<IceCandidate>(message["candidate"].clone()) {
                            browser.add_remote_candidate(c).await;
                        }
                    }
                    "ringing" | "progress" => println!("{}", message["type"]),
                    "answered" => {
                        println!("answered; sending {} s of tone", args.seconds);
                        let frames = args.seconds * 50;
                        let b = browser.clone();
                        tone = Some(tokio::spawn(async move {
                            // Media flows once ICE and DTLS are up.
                            b.wait_connected(Duration::from_secs(10)).await;
                            let sent = b.start_sending_tone(frames).await.unwrap_or_default();
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            sent
                        }));
                    }
                    "ended" => {
                        println!("ended: {} (SIP {})", message["reason"], message["sip_status"]);
                        break;
                    }
                    "error" => println!("error: {} {}", message["code"], message["message"]),
                    _ => {}
                }
            }
            c = candidates.recv(), if !candidates_done => match c {
                Some(c) => {
                    let m = json!({"type": "ice", "call_id": "dial-1", "candidate": c});
                    ws.send(Message::Text(m.to_string().into())).await?;
                }
                None => candidates_done = true,
            },
            sent = async { tone.as_mut().expect("guarded").await }, if tone.is_some() => {
                tone = None;
                let sent = sent.unwrap_or_default();
                let back: HashSet<u32> = browser.received().iter().filter_map(|p| frame_number(&p.payload)).collect();
                let echoed = sent.iter().filter_map(|p| frame_number(p)).filter(|n| back.contains(n)).count();
                println!("sent {} frames, {} came back ({} packets received)", sent.len(), echoed, browser.received().len());
                let missing: Vec<u32> = sent.iter().filter_map(|p| frame_number(p)).filter(|n| !back.contains(n)).collect();
                if !missing.is_empty() {
                    println!("frames that did not come back: {missing:?}");
                }
                ws.send(Message::Text(json!({"type": "hangup", "call_id": "dial-1"}).to_string().into())).await?;
            }
        }
    }
    browser.close().await;
    Ok(())
}

async fn next_json<S>(ws: &mut S) -> anyhow::Result<Value>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .context("no message from the gateway for 60 s")?
            .context("the gateway closed the socket")??;
        match frame {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Close(c) => bail!("the gateway closed the socket: {c:?}"),
            _ => continue,
        }
    }
}
