//! Protocol v2 (`GET /api/ws`): one socket in many rooms, through a gateway shard — each
//! room's stream in order and exactly once, every room recovered exactly after a cut, the
//! token's permissions per room, and v1 clients in the same rooms unaffected.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Ctx;
use roomkeeper_testkit::harness::{http, room, token, Client, Enc, Server, TempDir, DEV_API_KEY};

async fn broadcast(base: &str, room: &str, n: u64) -> u64 {
    let r = http()
        .post(format!("{base}/api/rooms/{room}/broadcast"))
        .bearer_auth(DEV_API_KEY)
        .json(&json!({"body": {"n": n}, "name": "http"}))
        .send()
        .await
        .expect("broadcast");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    v["offset"].as_u64().expect("offset")
}

/// Connects a v2 socket and reads its `ready`.
async fn connect(ws: &str, token: &str, enc: Enc) -> (Client, Value) {
    let url = format!("{ws}/api/ws?token={token}");
    let mut c = Client::connect(&url, enc).await;
    let ready = c.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["protocol"], 2);
    (c, ready)
}

/// Frames until every room has `want` more messages and `want_acks` acks came, failing on a
/// frame that is none of the expected kinds; messages by room (offset, body), acks by id.
async fn collect(
    c: &mut Client,
    rooms: &[String],
    want: usize,
    want_acks: usize,
) -> (BTreeMap<String, Vec<(u64, Value)>>, BTreeMap<String, Value>) {
    let mut got: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    let mut acks = BTreeMap::new();
    while rooms.iter().any(|r| got.get(r).map_or(0, Vec::len) < want) || acks.len() < want_acks {
        let f = c.recv().await;
        let room = f["room"].as_str().unwrap_or_default().to_string();
        match f["type"].as_str() {
            Some("message") => got
                .entry(room)
                .or_default()
                .push((f["offset"].as_u64().unwrap(), f["body"].clone())),
            Some("ack") => {
                acks.insert(f["id"].as_str().unwrap().to_string(), f);
            }
            Some("joined" | "left" | "presence") => {}
            _ => panic!("unexpected frame {f}"),
        }
    }
    (got, acks)
}

pub async fn one_socket_in_20_rooms_gets_each_stream_once_in_order_and_recovers_every_room(
    ctx: Arc<Ctx>,
) {
    let prefix = room("mx");
    let rooms: Vec<String> = (0..20).map(|i| format!("{prefix}-{i}")).collect();
    let t = token(
        &ctx.http,
        json!({"sub": format!("{prefix}-u"), "rooms": [format!("{prefix}-*")], "ttl_s": 600}),
    )
    .await;
    // A v1 client in the first room sees everything the v2 socket does there.
    let v1_url = format!("{}/api/rooms/{}/ws?token={t}", ctx.ws, rooms[0]);
    let (mut v1, _) = Client::join(&v1_url, Enc::Json, "v1").await;

    let (mut c, ready) = connect(&ctx.ws, &t, Enc::Json).await;
    assert_eq!(ready["user"]["id"], format!("{prefix}-u"));
    let mut epochs = BTreeMap::new();
    for r in &rooms {
        c.send(json!({"type": "subscribe", "room": r})).await;
        let s = c.recv().await;
        assert_eq!(
            (s["type"].as_str(), s["room"].as_str()),
            (Some("subscribed"), Some(r.as_str())),
            "{s}"
        );
        assert_eq!(s["offset"], 0);
        epochs.insert(r.clone(), s["epoch"].as_str().unwrap().to_string());
    }

    // Five messages per room over HTTP and five from the socket itself, with ids.
    for n in 0..5u64 {
        for r in &rooms {
            broadcast(&ctx.http, r, n).await;
            c.send(json!({"type": "publish", "room": r, "body": {"n": 100 + n}, "id": format!("{r}-{n}")}))
                .await;
        }
    }
    let (got, acks) = collect(&mut c, &rooms, 10, 5 * rooms.len()).await;
    for r in &rooms {
        let offsets: Vec<u64> = got[r].iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (1..=10).collect::<Vec<_>>(),
            "{r}: in order, once each"
        );
        for n in 0..5u64 {
            let a = &acks[&format!("{r}-{n}")];
            assert_eq!(a["room"], r.as_str());
            let at = a["offset"].as_u64().unwrap();
            assert_eq!(
                got[r]
                    .iter()
                    .find(|(o, _)| *o == at)
                    .map(|(_, b)| b["n"].clone()),
                Some(json!(100 + n)),
                "{r}: the ack names the message's offset"
            );
        }
    }
    let mut seen_by_v1 = Vec::new();
    while seen_by_v1.len() < 10 {
        let f = v1.recv_type("message").await;
        seen_by_v1.push(f["offset"].as_u64().unwrap());
    }
    assert_eq!(
        seen_by_v1,
        (1..=10).collect::<Vec<_>>(),
        "v1 sees v2's messages"
    );

    // Cut the socket (no close handshake); five more per room meanwhile.
    drop(c);
    for n in 10..15u64 {
        for r in &rooms {
            broadcast(&ctx.http, r, n).await;
        }
    }
    let (mut c, _) = connect(&ctx.ws, &t, Enc::Msgpack).await;
    for r in &rooms {
        c.send(
            json!({"type": "subscribe", "room": r, "since": {"epoch": epochs[r], "offset": 10}}),
        )
        .await;
        let s = c.recv().await;
        assert_eq!(s["type"], "subscribed", "{s}");
        assert_eq!(
            (s["recovered"].as_bool(), s["replayed"].as_u64()),
            (Some(true), Some(5)),
            "{s}"
        );
        for want in 11..=15u64 {
            let m = c.recv().await;
            assert_eq!(
                (m["type"].as_str(), m["room"].as_str(), m["offset"].as_u64()),
                (Some("message"), Some(r.as_str()), Some(want)),
                "{m}"
            );
        }
    }
    // A retried publish is acknowledged as a duplicate and delivered to no one again.
    c.send(json!({"type": "publish", "room": rooms[3], "body": {"n": 103}, "id": format!("{}-3", rooms[3])}))
        .await;
    let a = c.recv().await;
    assert_eq!(
        (
            a["type"].as_str(),
            a["duplicate"].as_bool(),
            a["offset"].as_u64().is_some()
        ),
        (Some("ack"), Some(true), true),
        "{a}"
    );
    // Live again in every room.
    for r in &rooms {
        broadcast(&ctx.http, r, 99).await;
    }
    let (got, _) = collect(&mut c, &rooms, 1, 0).await;
    for r in &rooms {
        assert_eq!(
            got[r].iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![16],
            "{r}"
        );
    }
    assert!(
        c.try_recv(Duration::from_millis(300)).await.is_none(),
        "nothing more"
    );
    c.close().await;
    v1.close().await;
}

pub async fn v2_rooms_open_as_the_token_says(ctx: Arc<Ctx>) {
    // A plain GET is told to upgrade (426, not 404): the client library's "auto" mode takes
    // a 404 here for a server without v2 and falls back to v1 (client/roomkeeper/client.js).
    let plain = http()
        .get(format!("{}/api/ws", ctx.http))
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.status().as_u16(),
        426,
        "GET /api/ws without an upgrade"
    );
    let prefix = room("mxp");
    let t = token(
        &ctx.http,
        json!({"sub": format!("{prefix}-u"), "rooms": [format!("{prefix}-a*")],
            "perms": ["subscribe"], "ttl_s": 600}),
    )
    .await;
    let (mut c, _) = connect(&ctx.ws, &t, Enc::Json).await;
    let a = format!("{prefix}-a1");
    c.send(json!({"type": "subscribe", "room": a})).await;
    assert_eq!(c.recv().await["type"], "subscribed");
    let expect_error = |f: &Value, code: &str, room: &str| {
        assert_eq!(
            (f["type"].as_str(), f["code"].as_str(), f["room"].as_str()),
            (Some("error"), Some(code), Some(room)),
            "{f}"
        )
    };
    let b = format!("{prefix}-b1");
    c.send(json!({"type": "subscribe", "room": b})).await;
    expect_error(&c.recv().await, "room_forbidden", &b);
    c.send(json!({"type": "subscribe", "room": "ops"})).await;
    expect_error(&c.recv().await, "reserved_room", "ops");
    c.send(json!({"type": "publish", "room": a, "body": 1, "id": "p1"}))
        .await;
    let f = c.recv().await;
    expect_error(&f, "forbidden", &a);
    assert_eq!(f["id"], "p1");
    c.send(json!({"type": "publish", "room": b, "body": 1}))
        .await;
    expect_error(&c.recv().await, "not_subscribed", &b);
    c.send(json!({"type": "subscribe", "room": a})).await;
    expect_error(&c.recv().await, "already_subscribed", &a);
    c.send(json!({"type": "unsubscribe", "room": a})).await;
    let u = c.recv().await;
    assert_eq!(
        (u["type"].as_str(), u["room"].as_str()),
        (Some("unsubscribed"), Some(a.as_str()))
    );
    // The room's own refusals are strikes in the room: after ROOM_MAX_STRIKES (20) it closes
    // this subscription, told as `unsubscribed` with 4500; the socket stays open.
    c.send(json!({"type": "subscribe", "room": a})).await;
    assert_eq!(c.recv().await["type"], "subscribed");
    for i in 0..20 {
        c.send(json!({"type": "publish", "room": a, "body": i}))
            .await;
    }
    for _ in 0..20 {
        expect_error(&c.recv().await, "forbidden", &a);
    }
    let u = c.recv().await;
    assert_eq!(
        (u["type"].as_str(), u["room"].as_str(), u["code"].as_u64()),
        (Some("unsubscribed"), Some(a.as_str()), Some(4500)),
        "{u}"
    );
    c.send(json!({"type": "publish", "room": a, "body": "late"}))
        .await;
    expect_error(&c.recv().await, "not_subscribed", &a);
    c.send(json!({"type": "join"})).await;
    let f = c.recv().await;
    assert_eq!(
        (f["type"].as_str(), f["code"].as_str()),
        (Some("error"), Some("unknown_type")),
        "{f}"
    );
    // Heartbeat as in v1.
    c.send_raw(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"type":"ping"}"#.into(),
    ))
    .await;
    assert_eq!(c.recv().await["type"], "pong");
    c.close().await;
    // No token and anonymous access off (the strict server): refused before the upgrade.
    let refused = Client::try_connect(&format!("{}/api/ws", ctx.strict_ws), Enc::Json, &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (401, Some("token_required"))
    );
}

/// As v1's `expired_tokens_are_refused_and_end_sessions`, for a v2 socket: the gateway shard's
/// alarm closes it with a `token_expired` error frame and 4001 when its token runs out
/// (`CLOCK_LEEWAY_S` after `exp`), and the same token is then refused at the upgrade.
pub async fn a_v2_socket_is_closed_4001_when_its_token_expires(ctx: Arc<Ctx>) {
    let r = room("mxexp");
    let t = token(
        &ctx.http,
        json!({"sub": "brief-v2", "rooms": [r], "ttl_s": 1}),
    )
    .await;
    let (mut c, _) = connect(&ctx.ws, &t, Enc::Json).await;
    c.send(json!({"type": "subscribe", "room": r})).await;
    assert_eq!(c.recv().await["type"], "subscribed");
    c.expect_token_expiry(Duration::from_secs(60)).await;
    let refused = Client::try_connect(&format!("{}/api/ws?token={t}", ctx.ws), Enc::Json, &[])
        .await
        .err()
        .expect("the expired token is refused");
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
}

/// v1's slow-reader rule for a v2 socket, summed over its rooms: a socket in two rooms that
/// reports `seen` for both and then stops reading is closed with `too_slow` and 4008 once it
/// would be more than `ROOM_MAX_LAG_MESSAGES` behind in all, though each room alone is well
/// within it; what came before the close is each room's stream in order, and subscribing with
/// `since` recovers exactly the rest of each. A socket in the same rooms that never reports is
/// not closed and gets everything. The rooms have a batch window on, which rooms with
/// shard-held subscribers do not use: v2 publishes are acknowledged and delivered singly.
pub async fn a_v2_socket_that_falls_behind_across_its_rooms_is_closed_too_slow_and_recovers(
    _ctx: Arc<Ctx>,
) {
    const LAG: u64 = 20;
    const EACH: u64 = 15; // per room: within LAG alone, past it together
    let persist = TempDir::new("mxlag");
    let server = Server::start_with(
        &persist.0,
        &[
            ("ROOM_MAX_LAG_MESSAGES", "20"),
            ("ROOM_BATCH_WINDOW_MS", "20"),
        ],
    );
    let rooms = [room("mxlag-a"), room("mxlag-b")];
    let url = format!("{}/api/ws", server.ws());
    let open = |name: &'static str| {
        let (url, rooms) = (url.clone(), rooms.clone());
        async move {
            let mut c = Client::connect(&url, Enc::Json).await;
            assert_eq!(c.recv().await["type"], "ready");
            let mut epochs = BTreeMap::new();
            for r in &rooms {
                c.send(json!({"type": "subscribe", "room": r, "name": name}))
                    .await;
                let s = c.recv_type("subscribed").await;
                epochs.insert(r.clone(), s["epoch"].as_str().unwrap().to_string());
            }
            (c, epochs)
        }
    };
    let (mut reader, epochs) = open("reader").await;
    let (mut silent, _) = open("silent").await;
    for r in &rooms {
        broadcast(&server.http(), r, 0).await;
    }
    let mut read = BTreeMap::new();
    while read.len() < rooms.len() {
        let f = reader.recv_type("message").await;
        read.insert(
            f["room"].as_str().unwrap().to_string(),
            f["offset"].as_u64().unwrap(),
        );
    }
    reader
        .send(json!({"type": "seen", "rooms": read.clone()}))
        .await;
    // Frames on one socket are handled in order: once this is answered, the report is in.
    reader
        .send(json!({"type": "subscribe", "room": rooms[0]}))
        .await;
    assert_eq!(
        reader.recv_type("error").await["code"],
        "already_subscribed"
    );

    // The reader stops reading; the rooms go on, in turn.
    for n in 1..=EACH {
        for r in &rooms {
            broadcast(&server.http(), r, n).await;
        }
    }
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let (error, close) = {
        let mut error = Value::Null;
        loop {
            let f = reader.recv().await;
            match f["type"].as_str() {
                Some("message") => got
                    .entry(f["room"].as_str().unwrap().to_string())
                    .or_default()
                    .push(f["offset"].as_u64().unwrap()),
                Some("error") => error = f,
                Some("__close") => break (error, f),
                _ => {}
            }
        }
    };
    assert_eq!(close["code"], 4008, "{close}");
    assert_eq!(error["code"], "too_slow", "{error}");
    // Behind by 0 at the report; closed by the delivery that would pass LAG (a delivery may
    // carry more than one message, so somewhat fewer may have come).
    let total = got.values().map(Vec::len).sum::<usize>() as u64;
    assert!(
        (LAG / 2..=LAG).contains(&total),
        "{}..={LAG} past the reports in all, got {got:?}",
        LAG / 2
    );
    for r in &rooms {
        let from = read[r];
        let mine = got.get(r).cloned().unwrap_or_default();
        let want: Vec<u64> = (from + 1..=from + mine.len() as u64).collect();
        assert_eq!(mine, want, "{r}: in order, none missing");
    }

    // The silent socket never reported: still open, with every message of both rooms.
    let mut all: BTreeMap<String, usize> = BTreeMap::new();
    while all.values().sum::<usize>() < (EACH as usize + 1) * rooms.len() {
        let f = silent.recv_type("message").await;
        *all.entry(f["room"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    // …and still open: its publish (with the batch window on) is delivered and acknowledged.
    silent
        .send(json!({"type": "publish", "room": rooms[1], "body": "still here", "id": "s1"}))
        .await;
    let m = silent.recv_type("message").await;
    assert_eq!(
        (m["room"].as_str(), m["body"].as_str()),
        (Some(rooms[1].as_str()), Some("still here"))
    );
    let ack = silent.recv_type("ack").await;
    assert_eq!(ack["offset"], m["offset"], "{ack}");

    // Recover each room with since: exactly the rest.
    let mut reader = Client::connect(&url, Enc::Json).await;
    assert_eq!(reader.recv().await["type"], "ready");
    for r in &rooms {
        let last = got
            .get(r)
            .and_then(|g| g.last().copied())
            .unwrap_or(read[r]);
        reader
            .send(json!({"type": "subscribe", "room": r,
                "since": {"epoch": epochs[r], "offset": last}}))
            .await;
        let s = reader.recv_type("subscribed").await;
        assert_eq!(s["recovered"], true, "{s}");
        let mut replayed = Vec::new();
        for _ in 0..s["replayed"].as_u64().unwrap() {
            replayed.push(
                reader.recv_type("message").await["offset"]
                    .as_u64()
                    .unwrap(),
            );
        }
        let head = read[r] + EACH + u64::from(r == &rooms[1]);
        assert_eq!(replayed, (last + 1..=head).collect::<Vec<_>>(), "{r}");
    }
}
