//! Tests of the worker loop: its idle sleep and the order of control and datagrams.

use std::sync::atomic::AtomicUsize;

use super::*;

/// A worker with no legs on a loopback socket (inside a runtime), the sender of its
/// control queue, and its drop counters.
fn idle_worker() -> (Worker, mpsc::UnboundedSender<Control>, IntCounterVec) {
    let socket = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 1 << 16).expect("bind");
    let socket = UdpSocket::from_std(socket).expect("register");
    let (control, control_rx) = mpsc::unbounded_channel();
    let (media, media_rx) = mpsc::channel(4);
    let dropped =
        IntCounterVec::new(prometheus::Opts::new("d", "d"), &["reason"]).expect("counter");
    let shared = Arc::new(WorkerShared {
        index: 0,
        hosts: vec![socket.local_addr().expect("bound")],
        per_datagram_local: false,
        control: control.clone(),
        media,
        media_dropped: dropped.with_label_values(&["worker_full"]),
        runtime: tokio::runtime::Handle::current(),
        legs: AtomicUsize::new(0),
    });
    let worker = Worker::new(
        shared,
        socket,
        (control_rx, media_rx),
        Arc::default(),
        dropped.clone(),
        4,
    )
    .expect("worker");
    (worker, control, dropped)
}

/// A browser's first check read in the same turn as (before) the control message
/// that brings its leg reaches the leg instead of being dropped as a stranger's.
#[tokio::test]
async fn a_check_that_overtakes_its_leg_is_not_dropped() {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::{BINDING_REQUEST, Message, Setter};
    use rtc::stun::textattrs::TextAttribute;

    let (mut worker, control, dropped) = idle_worker();
    let (events, _events) = mpsc::unbounded_channel();
    let (media, _media) = mpsc::channel(4);
    let mut pc = rtc::peer_connection::RTCPeerConnectionBuilder::new()
        .build(Instant::now())
        .expect("peer connection");
    let sender = pc
        .add_track(crate::media::webrtc_leg::local_track(7))
        .expect("track");
    control
        .send(Control::Add(Box::new(super::super::NewLeg {
            id: 9,
            ufrag: "ours0009".into(),
            pc,
            sender,
            events,
            media,
            span: tracing::Span::none(),
        })))
        .map_err(|_| ())
        .expect("queued");
    let mut check = Message::new();
    check.set_type(BINDING_REQUEST);
    check.new_transaction_id().expect("id");
    TextAttribute::new(ATTR_USERNAME, "ours0009:theirs".to_string())
        .add_to(&mut check)
        .expect("username");
    check.encode();
    let browser = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let local = worker.shared.hosts[0];
    worker.on_datagram(browser, local, &check.raw);
    assert_eq!(
        dropped.with_label_values(&["unknown_ufrag"]).get(),
        0,
        "the check reached its leg"
    );
    assert_eq!(
        worker.demux.route(browser, &[0x80, 0]),
        Ok(9),
        "source admitted"
    );
}

/// A worker with no legs wakes once per idle sleep: ten idle minutes (paused
/// tokio time) take about ten turns. It once spun after its first idle sleep,
/// because a fired `Sleep` stays ready until it is set again.
#[test]
fn an_idle_worker_sleeps_between_turns() {
    let (done, turns) = std::sync::mpsc::channel();
    // The runtime runs on its own thread so that a spinning worker fails the test
    // (bounded wait below) instead of hanging it.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let counted = runtime.block_on(async {
            let (worker, control, _) = idle_worker();
            let stop = async {
                tokio::time::sleep(Duration::from_secs(600)).await;
                control
                    .send(Control::Stop)
                    .map_err(|_| ())
                    .expect("worker runs");
            };
            tokio::join!(worker.run(), stop).0
        });
        let _ = done.send(counted);
    });
    let turns = turns
        .recv_timeout(Duration::from_secs(60))
        .expect("ten idle minutes of paused time pass (a spinning worker never lets them)");
    assert!(turns <= 15, "{turns} turns in ten idle minutes");
}
