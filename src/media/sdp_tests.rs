//! Unit tests of the SIP-side SDP offer and answer parsing.

use super::*;
use std::net::Ipv4Addr;

const G711: [AudioCodec; 2] = [AudioCodec::Pcmu, AudioCodec::Pcma];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn answer(body: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nt=0 0\r\n{body}")
}

fn err_of(sdp: &str) -> String {
    match parse_answer(sdp, &G711) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn offer_has_required_lines() {
    let sdp = build_offer(
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        20_000,
        42,
        &G711,
    );
    let lines: Vec<&str> = sdp.split("\r\n").collect();
    for needed in [
        "v=0",
        "o=callbridge 42 42 IN IP4 203.0.113.10",
        "c=IN IP4 203.0.113.10",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ] {
        assert!(lines.contains(&needed), "missing '{needed}' in:\n{sdp}");
    }
    assert!(sdp.ends_with("\r\n"));
    assert!(!sdp.contains("\n\n"));
}

#[test]
fn offer_ipv6_and_opus() {
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    let sdp = build_offer(ip, 20_002, 7, &[AudioCodec::Opus, AudioCodec::Pcmu]);
    assert!(sdp.contains("c=IN IP6 2001:db8::1\r\n"));
    assert!(sdp.contains("m=audio 20002 RTP/AVP 96 0 101\r\n"));
    assert!(sdp.contains("a=rtpmap:96 opus/48000/2\r\n"));
}

#[test]
fn offer_round_trips_through_parser() {
    let sdp = build_offer(IpAddr::V4(Ipv4Addr::LOCALHOST), 30_000, 1, &G711);
    let r = parse_answer(&sdp, &G711).unwrap();
    assert_eq!(r.addr, sa("127.0.0.1:30000"));
    assert_eq!(
        r.format,
        PayloadFormat {
            codec: AudioCodec::Pcmu,
            payload_type: 0,
            dtmf_payload_type: Some(101)
        }
    );
    assert_eq!(r.direction, Direction::SendRecv);
}

#[test]
fn session_level_connection() {
    let sdp = answer(
        "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    let r = parse_answer(&sdp, &G711).unwrap();
    assert_eq!(r.addr, sa("192.0.2.1:4000"));
    assert_eq!(r.format.codec, AudioCodec::Pcma);
    assert_eq!(r.format.payload_type, 8);
    assert_eq!(r.format.dtmf_payload_type, Some(101));
}

#[test]
fn media_level_connection_overrides_session_level() {
    let sdp = answer(
        "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.7/127\r\na=sendonly\r\n",
    );
    let r = parse_answer(&sdp, &G711).unwrap();
    assert_eq!(r.addr, sa("198.51.100.7:4000"));
    assert_eq!(r.direction, Direction::SendOnly);
    assert_eq!(r.format.dtmf_payload_type, None);
}

#[test]
fn lf_only_line_endings_and_session_direction() {
    let sdp = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\na=recvonly\nm=audio 5000 RTP/AVP 0\n";
    let r = parse_answer(sdp, &G711).unwrap();
    assert_eq!(r.direction, Direction::RecvOnly);
    assert!(r.direction.peer_receives());
}

#[test]
fn first_offered_codec_that_was_answered_wins() {
    let sdp = answer("c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 8 0\r\n");
    assert_eq!(
        parse_answer(&sdp, &G711).unwrap().format.codec,
        AudioCodec::Pcmu
    );
    let pcma_first = [AudioCodec::Pcma, AudioCodec::Pcmu];
    assert_eq!(
        parse_answer(&sdp, &pcma_first).unwrap().format.codec,
        AudioCodec::Pcma
    );
}

#[test]
fn dynamic_payload_type_via_rtpmap() {
    let sdp = answer(
        "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 97 98\r\na=rtpmap:97 pcmu/8000\r\na=rtpmap:98 telephone-event/8000\r\n",
    );
    let r = parse_answer(&sdp, &G711).unwrap();
    assert_eq!(
        r.format,
        PayloadFormat {
            codec: AudioCodec::Pcmu,
            payload_type: 97,
            dtmf_payload_type: Some(98)
        }
    );
}

#[test]
fn telephone_event_at_other_rate_is_ignored() {
    let sdp = answer(
        "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0 110\r\na=rtpmap:110 telephone-event/48000\r\n",
    );
    assert_eq!(
        parse_answer(&sdp, &G711).unwrap().format.dtmf_payload_type,
        None
    );
}

#[test]
fn hold_address_means_inactive() {
    let sdp = answer("c=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n");
    assert_eq!(
        parse_answer(&sdp, &G711).unwrap().direction,
        Direction::Inactive
    );
}

#[test]
fn ipv6_connection() {
    let sdp = answer("c=IN IP6 2001:db8::5\r\nm=audio 4000 RTP/AVP 0\r\n");
    assert_eq!(
        parse_answer(&sdp, &G711).unwrap().addr,
        sa("[2001:db8::5]:4000")
    );
}

#[test]
fn second_audio_section_is_ignored() {
    let sdp = answer(
        "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 8\r\nc=IN IP4 192.0.2.2\r\n",
    );
    let r = parse_answer(&sdp, &G711).unwrap();
    assert_eq!(r.addr, sa("192.0.2.1:4000"));
}

#[test]
fn rejected_stream() {
    let e = err_of(&answer("c=IN IP4 192.0.2.1\r\nm=audio 0 RTP/AVP 0\r\n"));
    assert!(e.contains("rejected") && e.contains("port 0"), "{e}");
}

#[test]
fn missing_connection() {
    let e = err_of(&answer("m=audio 4000 RTP/AVP 0\r\n"));
    assert!(e.contains("c=") && e.contains("missing"), "{e}");
}

#[test]
fn missing_audio() {
    let e = err_of(&answer("c=IN IP4 192.0.2.1\r\nm=video 4000 RTP/AVP 96\r\n"));
    assert!(e.contains("no 'm=audio'"), "{e}");
}

#[test]
fn no_common_codec() {
    let e = err_of(&answer(
        "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 9 18\r\na=rtpmap:9 G722/8000\r\n",
    ));
    assert!(
        e.contains("no common codec") && e.contains("[9, 18]") && e.contains("PCMU, PCMA"),
        "{e}"
    );
}

#[test]
fn srtp_profile_is_refused() {
    let e = err_of(&answer("c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/SAVP 0\r\n"));
    assert!(e.contains("RTP/SAVP") && e.contains("not supported"), "{e}");
}

#[test]
fn malformed_inputs_name_the_problem() {
    let cases = [
        ("", "empty SDP"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "must start with 'v=0'"),
        ("v=0\r\nthis is not sdp\r\n", "line 2"),
        (
            &answer("c=IN IP4 host.example\r\nm=audio 4000 RTP/AVP 0\r\n"),
            "not an IP address",
        ),
        (
            &answer("c=IN IP4\r\nm=audio 4000 RTP/AVP 0\r\n"),
            "has no address",
        ),
        (
            &answer("c=IN ATM 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\n"),
            "expected 'IN IP4",
        ),
        (
            &answer("c=IN IP4 192.0.2.1\r\nm=audio x RTP/AVP 0\r\n"),
            "port 'x' is not a number",
        ),
        (
            &answer("c=IN IP4 192.0.2.1\r\nm=audio 70000 RTP/AVP 0\r\n"),
            "port '70000'",
        ),
        (
            &answer("c=IN IP4 192.0.2.1\r\nm=audio 4000\r\n"),
            "no transport protocol",
        ),
        (
            &answer("c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP zero\r\n"),
            "format 'zero'",
        ),
        (
            &answer("c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n"),
            "malformed 'a=rtpmap:0 PCMU'",
        ),
    ];
    for (sdp, needle) in cases {
        let e = err_of(sdp);
        assert!(
            e.contains(needle),
            "SDP {sdp:?}: error '{e}' should contain '{needle}'"
        );
        assert!(e.starts_with("SIP peer SDP rejected"), "{e}");
    }
}

#[test]
fn ptime_rtcp_mux_and_rtcp_attribute() {
    let sdp =
        answer("c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=ptime:30\r\na=rtcp-mux\r\n");
    let r = parse_answer(&sdp, &G711).unwrap();
    assert_eq!(r.ptime_ms, Some(30));
    assert!(r.rtcp_mux);
    assert_eq!(r.rtcp_addr, sa("192.0.2.1:4000"));

    let sdp = answer("c=IN IP4 192.0.2.1\r\na=ptime:10\r\nm=audio 4000 RTP/AVP 0\r\n");
    let r = parse_answer(&sdp, &G711).unwrap();
    assert_eq!(r.ptime_ms, Some(10), "session-level ptime");
    assert!(!r.rtcp_mux);
    assert_eq!(r.rtcp_addr, sa("192.0.2.1:4001"), "RTP port + 1 by default");

    let sdp =
        answer("c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:5009 IN IP4 192.0.2.7\r\n");
    let r = parse_answer(&sdp, &G711).unwrap();
    assert_eq!(r.rtcp_addr, sa("192.0.2.7:5009"));
    assert_eq!(r.ptime_ms, None);

    let sdp = answer("c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n");
    assert!(err_of(&sdp).contains("a=rtcp:x"));
}

#[test]
fn opus_offer_and_answer() {
    let codecs = [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma];
    let sdp = build_offer(IpAddr::V4(Ipv4Addr::LOCALHOST), 30_000, 1, &codecs);
    assert!(
        sdp.contains("m=audio 30000 RTP/AVP 96 0 8 101\r\n"),
        "{sdp}"
    );
    assert!(sdp.contains("a=fmtp:96 minptime=10;useinbandfec=1\r\n"));
    assert!(sdp.contains("a=rtcp-mux\r\n"));
    // A trunk that answers Opus at its own payload type.
    let ans = answer(
        "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 107 101\r\na=rtpmap:107 opus/48000/2\r\n\
         a=rtpmap:101 telephone-event/8000\r\n",
    );
    let r = parse_answer(&ans, &codecs).unwrap();
    assert_eq!(
        r.format,
        PayloadFormat {
            codec: AudioCodec::Opus,
            payload_type: 107,
            dtmf_payload_type: Some(101)
        }
    );
    // The same trunk answering PCMU only: G.711 wins.
    let ans = answer("c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n");
    assert_eq!(
        parse_answer(&ans, &codecs).unwrap().format.codec,
        AudioCodec::Pcmu
    );
}

#[test]
fn answers_mirror_direction_keep_peer_payload_types_and_bump_version() {
    let ip: IpAddr = "192.0.2.5".parse().expect("ip");
    let ours = LocalSdp::offer(ip, 30000, 77, &[AudioCodec::Pcmu, AudioCodec::Pcma]);
    let reoffer = "v=0\r\no=peer 1 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n\
                   a=sendonly\r\n";
    let remote = parse_answer(reoffer, &[AudioCodec::Pcmu, AudioCodec::Pcma]).expect("parses");
    let answer = ours.answer_to(&remote).to_sdp();
    assert!(
        answer.contains("o=callbridge 77 78 IN IP4 192.0.2.5"),
        "{answer}"
    );
    assert!(
        answer.contains("m=audio 30000 RTP/AVP 8 96\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("a=rtpmap:96 telephone-event/8000"),
        "{answer}"
    );
    assert!(
        answer.contains("a=recvonly\r\n"),
        "their sendonly is our recvonly: {answer}"
    );
    assert!(
        !answer.contains("PCMU") && !answer.contains("rtcp-mux"),
        "{answer}"
    );
    let parsed = parse_answer(&answer, &[AudioCodec::Pcma]).expect("our answer parses");
    assert_eq!(parsed.direction, Direction::RecvOnly);

    let hold = ours.with_direction(Direction::SendOnly).to_sdp();
    assert!(
        hold.contains("o=callbridge 77 78 ") && hold.contains("a=sendonly\r\n"),
        "{hold}"
    );
    assert_eq!(
        build_offer(ip, 30000, 77, &[AudioCodec::Pcmu, AudioCodec::Pcma]),
        ours.to_sdp()
    );
}
