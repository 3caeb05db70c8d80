//! Replays the committed fuzz seed corpora (and any crash reproducers kept there)
//! through the fuzz targets' code paths, so a regression shows up in `cargo test`
//! without cargo-fuzz.

use std::path::Path;

use callbridge::media::codec::AudioCodec;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read seed"),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn sip_message_seeds_parse_and_run_through_the_user_agent() {
    let mut requests = 0;
    for (name, bytes) in inputs("sip_message") {
        if let Ok(true) = callbridge::sip::parse_message(&bytes) {
            requests += 1;
        }
        callbridge::sip::fuzz_user_agent(&bytes);
        eprintln!("ok: {name}");
    }
    assert!(requests >= 5, "the seeds are mostly valid requests");
}

#[test]
fn sip_stream_seeds_frame_the_same_whole_and_in_pieces() {
    let mut framed = 0;
    for (name, bytes) in inputs("sip_stream") {
        framed += callbridge::sip::fuzz_stream(&bytes);
        // Every seed also runs through the user agent as a stream.
        callbridge::sip::fuzz_user_agent(bytes.get(1..).unwrap_or_default());
        eprintln!("ok: {name}");
    }
    assert!(
        framed >= 8,
        "the seeds hold well-framed messages ({framed})"
    );
}

#[test]
fn sdp_seeds_run_through_parse_answer() {
    let mut parsed = 0;
    for (_, bytes) in inputs("sdp") {
        let text = String::from_utf8_lossy(&bytes);
        if callbridge::media::sdp::parse_answer(&text, &[AudioCodec::Pcmu, AudioCodec::Pcma])
            .is_ok()
        {
            parsed += 1;
        }
    }
    assert!(parsed >= 2, "some seeds are valid answers");
}
