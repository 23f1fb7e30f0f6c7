//! A voice agent that speaks, end to end: a WAV of real speech (Debian's `espeak-ng`) streamed
//! into the Voice object at real-time pace, transcribed, answered by a streamed reply, and
//! spoken back sentence by sentence by a real local OpenAI-compatible speech endpoint (also
//! `espeak-ng`); barge-in mid-speech; per-stage timings against the frames' arrival times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::sessions::{drain, of_type, start_frame, until, FakeProvider};
use crate::Ctx;
use roomkeeper::sessions::voice::{parse_wav, resample};
use roomkeeper_testkit::harness::{room, Client, Enc, Server, TempDir};

/// `text` spoken by espeak-ng, as 16 kHz samples.
fn spoken(text: &str) -> Vec<i16> {
    let out = std::process::Command::new("espeak-ng")
        .args(["--stdout", "--", text])
        .output()
        .expect("espeak-ng (scripts/apt-packages.txt) runs");
    assert!(out.status.success(), "espeak-ng failed");
    let (rate, samples) = parse_wav(&out.stdout).expect("espeak-ng writes a 16-bit WAV");
    resample(&samples, rate, 16000)
}

/// Streams `pcm` (16 kHz) in 20 ms frames at real-time pace, keeping each frame that comes
/// meanwhile with the time it arrived.
async fn stream_timed(c: &mut Client, pcm: &[i16], frames: &mut Vec<(Instant, Value)>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for chunk in pcm.chunks(320) {
        tick.tick().await;
        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
        c.send_raw(WsMessage::Binary(bytes.into())).await;
        while let Some(v) = c.try_recv(Duration::from_millis(1)).await {
            frames.push((Instant::now(), v));
        }
    }
}

/// Frames with the time each arrived, until `done` holds for the frames so far.
async fn collect_timed(
    c: &mut Client,
    frames: &mut Vec<(Instant, Value)>,
    done: impl Fn(&[(Instant, Value)]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(frames) {
        assert!(Instant::now() < deadline, "timed out: {frames:?}");
        if let Some(v) = c.try_recv(Duration::from_millis(200)).await {
            frames.push((Instant::now(), v));
        }
    }
}

fn first<'a>(frames: &'a [(Instant, Value)], t: &str) -> &'a (Instant, Value) {
    frames
        .iter()
        .find(|(_, f)| f["type"] == t)
        .unwrap_or_else(|| panic!("no {t}: {frames:?}"))
}

pub async fn a_voice_agent_speaks_its_reply_in_order_and_barge_in_stops_it(_ctx: Arc<Ctx>) {
    let provider = FakeProvider::start();
    let persist = TempDir::new("e2e-speech");
    let server = Server::start_with(
        &persist.0,
        &[
            ("LLM_BASE_URL", provider.url.as_str()),
            ("LLM_TTS_MODEL", "test-tts"),
            ("LLM_TTS_VOICE", "test-voice"),
        ],
    );
    let url = format!("{}/api/voice/{}/ws", server.ws(), room("speech"));
    let mut c = Client::connect(&url, Enc::Json).await;
    let ready = c.recv().await;
    assert_eq!(
        (&ready["type"], &ready["provider"], &ready["speech"]),
        (&json!("ready"), &json!("http"), &json!(true)),
        "{ready}"
    );
    c.send(start_frame(16000)).await;
    let mut plain = Vec::new();
    until(&mut c, "started", &mut plain).await;

    // A WAV of speech in, with silence around it.
    let mut pcm = vec![0i16; 8000];
    pcm.extend(spoken("Hello, I would like a valuation of my flat please."));
    pcm.extend(vec![0i16; 24000]);
    let mut frames = Vec::new();
    stream_timed(&mut c, &pcm, &mut frames).await;
    collect_timed(&mut c, &mut frames, |fs| {
        fs.iter().any(|(_, f)| f["type"] == "timings")
    })
    .await;
    let kinds: Vec<&Value> = frames.iter().map(|(_, f)| f).collect();
    let utterances: Vec<&&Value> = kinds.iter().filter(|f| f["type"] == "utterance").collect();
    assert_eq!(utterances.len(), 1, "{kinds:?}");
    assert_eq!(utterances[0]["transcript"], "utterance 1");
    assert!(kinds.iter().all(|f| f["type"] != "error"), "{kinds:?}");

    // Audio out, in order, tagged by turn: each `speech` frame then its binary chunk.
    let spoken_frames: Vec<&Value> = kinds
        .iter()
        .copied()
        .filter(|f| f["type"] == "speech" || f["type"] == "__audio")
        .collect();
    assert_eq!(
        spoken_frames.len(),
        4,
        "two sentences, each a frame and a chunk: {kinds:?}"
    );
    for (i, pair) in spoken_frames.chunks(2).enumerate() {
        let (meta, audio) = (pair[0], pair[1]);
        assert_eq!(
            (&meta["type"], &audio["type"]),
            (&json!("speech"), &json!("__audio"))
        );
        assert_eq!((&meta["turn"], &audio["turn"]), (&json!(1), &json!(1)));
        assert_eq!((&meta["seq"], &audio["seq"]), (&json!(i), &json!(i)));
        assert_eq!(
            meta["sample_rate"], 16000,
            "speech comes at the start's rate"
        );
        assert_eq!(meta["samples"], audio["samples"]);
        assert!(audio["samples"].as_u64().unwrap() > 4000, "{audio}");
        assert!(
            audio["peak"].as_u64().unwrap() > 1000,
            "real speech, not silence: {audio}"
        );
    }
    assert_eq!(spoken_frames[0]["text"], "w0 w1 w2. W3 w4 w5.");
    assert_eq!(spoken_frames[2]["text"], "W6 w7");
    // The first sentence was spoken before the reply was complete.
    let pos = |pred: &dyn Fn(&Value) -> bool| kinds.iter().position(|f| pred(f)).unwrap();
    assert!(
        pos(&|f| f["type"] == "speech") < pos(&|f| f["type"] == "reply_done"),
        "{kinds:?}"
    );
    let done = first(&frames, "speech_done");
    assert_eq!((&done.1["turn"], &done.1["chunks"]), (&json!(1), &json!(2)));
    let speech_calls = provider.calls("/v1/audio/speech");
    assert_eq!(speech_calls.len(), 2);
    let asked: Value = serde_json::from_str(&speech_calls[0].body).unwrap();
    assert_eq!(
        (&asked["model"], &asked["voice"], &asked["input"]),
        (
            &json!("test-tts"),
            &json!("test-voice"),
            &json!("w0 w1 w2. W3 w4 w5.")
        )
    );

    // Timings: every stage, in order, and within the arrival times the client saw.
    let t = &first(&frames, "timings").1;
    assert_eq!(
        (&t["turn"], &t["origin"]),
        (&json!(1), &json!("speech_end"))
    );
    let ms = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k} in {t}"));
    let (stt, token, audio, reply) = (
        ms("transcript_ms"),
        ms("first_token_ms"),
        ms("first_audio_ms"),
        ms("reply_ms"),
    );
    assert!(stt <= token && token <= audio && token <= reply, "{t}");
    assert!(ms("synthesis_ms") > 0, "{t}");
    // The server's stages and the client's arrival times of the same frames agree (both
    // measured from `speech_end`), within a margin for the two clocks' scheduling.
    let at = |t: &str| first(&frames, t).0;
    let seen = |a: Instant, b: Instant| b.duration_since(a).as_millis() as i64;
    let end = at("speech_end");
    for (server, client) in [
        (token, seen(end, at("reply_delta"))),
        (reply, seen(end, at("reply_done"))),
        (audio, seen(end, at("__audio"))),
    ] {
        assert!(
            (server as i64 - client).abs() < 400,
            "server {server} ms, client {client} ms: {t}"
        );
    }

    // Barge-in mid-speech: a new typed turn while turn 2 speaks.
    c.send(json!({"type": "text", "text": "tell me more"}))
        .await;
    let mut frames = Vec::new();
    collect_timed(&mut c, &mut frames, |fs| {
        fs.iter()
            .any(|(_, f)| f["type"] == "__audio" && f["turn"] == 2)
    })
    .await;
    c.send(json!({"type": "interrupt"})).await;
    let mut rest = Vec::new();
    let cancelled = until(&mut c, "speech_cancelled", &mut rest).await;
    assert_eq!(cancelled["turn"], 2, "{rest:?}");
    drain(&mut c, Duration::from_millis(1500), &mut rest).await;
    let late: Vec<&Value> = rest
        .iter()
        .skip_while(|f| f["type"] != "speech_cancelled")
        .filter(|f| f["turn"] == 2 && f["type"] != "speech_cancelled")
        .collect();
    assert!(
        late.iter()
            .all(|f| !["speech", "__audio", "speech_done", "reply_delta"]
                .contains(&f["type"].as_str().unwrap())),
        "nothing of a cancelled turn after speech_cancelled: {late:?}"
    );
    assert_eq!(
        of_type(&rest, "state").last().map(|s| &s["state"]),
        Some(&json!("listening")),
        "{rest:?}"
    );
    c.close().await;
}

/// With a turn model (`LLM_TURN_URL`): an utterance it calls unfinished holds the reply, so a
/// pause longer than the VAD's hangover does not cut the user off — the next utterance joins
/// the same turn and one reply answers both; an unfinished turn with no more speech is
/// answered once `VOICE_TURN_HOLD_MS` has passed.
pub async fn a_turn_model_holds_an_unfinished_turn_for_more_speech(_ctx: Arc<Ctx>) {
    let provider = FakeProvider::start();
    let persist = TempDir::new("e2e-turns");
    let turn_url = format!("{}/v1/turn", provider.url);
    let server = Server::start_with(
        &persist.0,
        &[
            ("LLM_BASE_URL", provider.url.as_str()),
            ("LLM_TURN_URL", turn_url.as_str()),
            ("LLM_TTS_MODEL", "none"),
            ("VOICE_TURN_HOLD_MS", "1500"),
        ],
    );
    let url = format!("{}/api/voice/{}/ws", server.ws(), room("turns"));
    let mut c = Client::connect(&url, Enc::Json).await;
    let ready = c.recv().await;
    assert_eq!(
        (&ready["speech"], &ready["type"]),
        (&json!(false), &json!("ready"))
    );
    c.send(start_frame(16000)).await;
    let mut plain = Vec::new();
    until(&mut c, "started", &mut plain).await;
    // Two bursts 600 ms apart: past the 300 ms hangover, so the VAD alone would answer the
    // first and then be cut off by the second.
    let pcm =
        roomkeeper::sessions::voice::synth::speech_like(&[(400, 800), (1800, 800)], 4000, 16000);
    let mut frames = Vec::new();
    stream_timed(&mut c, &pcm, &mut frames).await;
    collect_timed(&mut c, &mut frames, |fs| {
        fs.iter().any(|(_, f)| f["type"] == "timings")
    })
    .await;
    let fs: Vec<&Value> = frames.iter().map(|(_, f)| f).collect();
    let turns: Vec<(u64, bool, &str)> = fs
        .iter()
        .filter(|f| f["type"] == "turn")
        .map(|f| {
            (
                f["utterance"].as_u64().unwrap(),
                f["complete"].as_bool().unwrap(),
                f["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(turns, [(0, false, "model"), (1, true, "model")], "{fs:?}");
    let count = |t: &str| fs.iter().filter(|f| f["type"] == t).count();
    assert_eq!(
        (count("reply_done"), count("reply_cancelled")),
        (1, 0),
        "one reply, nothing cut off: {fs:?}"
    );
    let turn_calls = provider.calls("/v1/turn");
    assert_eq!(turn_calls.len(), 2);
    assert!(turn_calls.iter().all(|c| c.wav), "the utterances' WAVs");
    let chat = provider.calls("/v1/chat/completions");
    assert_eq!(chat.len(), 1);
    let asked: Value = serde_json::from_str(&chat[0].body).unwrap();
    let last = asked["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["content"], "utterance 1\nutterance 2",
        "one turn of two utterances: {asked}"
    );
    let t = fs.iter().find(|f| f["type"] == "timings").unwrap();
    assert!(t["turn_ms"].as_u64().is_some(), "{t}");

    // An unfinished turn and silence: answered when the hold runs out.
    let pcm = roomkeeper::sessions::voice::synth::speech_like(&[(300, 800)], 1600, 16000);
    let mut frames = Vec::new();
    stream_timed(&mut c, &pcm, &mut frames).await;
    collect_timed(&mut c, &mut frames, |fs| {
        fs.iter().any(|(_, f)| f["type"] == "timings")
    })
    .await;
    let t = &first(&frames, "timings").1;
    let token = t["first_token_ms"].as_u64().unwrap();
    assert!(
        (1500..4000).contains(&token),
        "held {token} ms for more speech: {t}"
    );
    assert_eq!(first(&frames, "turn").1["complete"], false);
    c.close().await;
}
