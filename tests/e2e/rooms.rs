//! Realtime rooms: presence, ordered history, recovery, idempotent retries, acks, auth,
//! limits, heartbeats, the HTTP API and hibernation, against real workerd.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::Ctx;
use roomkeeper_testkit::harness::{
    http, metrics, room, token, Client, Enc, Server, TempDir, DEV_API_KEY,
};

fn ws_url(base: &str, room: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("{base}/api/rooms/{room}/ws?token={t}"),
        None => format!("{base}/api/rooms/{room}/ws"),
    }
}

async fn publish(c: &mut Client, body: Value, id: &str) -> u64 {
    c.send(json!({"type": "publish", "body": body, "id": id}))
        .await;
    let ack = c.recv_type("ack").await;
    assert_eq!(ack["id"], id);
    ack["offset"].as_u64().unwrap()
}

/// Reads frames until an ack arrives, returning it (messages on the way are skipped).
async fn next_ack(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("ack") | Some("error") => return f,
            _ => continue,
        }
    }
}

pub async fn presence_counts_each_user_once(ctx: Arc<Ctx>) {
    let r = room("presence");
    let t1 = token(
        &ctx.http,
        json!({"sub": "user-1", "name": "Uno", "rooms": [r]}),
    )
    .await;
    let (mut a1, w) = Client::join_with(
        &ws_url(&ctx.ws, &r, Some(&t1)),
        Enc::Json,
        json!({"type": "join", "meta": {"color": "red"}}),
    )
    .await;
    assert_eq!(
        w["me"],
        json!({"id": "user-1", "name": "Uno", "meta": {"color": "red"}, "conns": 1})
    );
    // The same user in a second tab: one member with two connections.
    let (mut a2, w) = Client::join(&ws_url(&ctx.ws, &r, Some(&t1)), Enc::Json, "ignored").await;
    assert_eq!(w["members"].as_array().unwrap().len(), 1, "{w}");
    assert_eq!(w["members"][0]["conns"], 2);
    assert_eq!(w["me"]["name"], "Uno", "the token's name wins");
    let p = a1.recv().await;
    assert_eq!(
        (p["type"].as_str(), p["member"]["conns"].as_u64()),
        (Some("presence"), Some(2))
    );
    // Another (anonymous) user joins: both tabs hear it.
    let (b, w) = Client::join(&ws_url(&ctx.ws, &r, None), Enc::Json, "bea").await;
    assert_eq!(w["members"].as_array().unwrap().len(), 2);
    for c in [&mut a1, &mut a2] {
        let j = c.recv().await;
        assert_eq!(
            (j["type"].as_str(), j["member"]["name"].as_str()),
            (Some("joined"), Some("bea"))
        );
    }
    // One tab closes: a presence update, not a leave.
    a2.close().await;
    let p = a1.recv().await;
    assert_eq!(
        (p["type"].as_str(), p["member"]["conns"].as_u64()),
        (Some("presence"), Some(1))
    );
    b.close().await;
    let l = a1.recv().await;
    assert_eq!(
        (l["type"].as_str(), l["member"]["name"].as_str()),
        (Some("left"), Some("bea"))
    );
    // The HTTP view agrees.
    let info: Value = http()
        .get(format!("{}/api/rooms/{r}", ctx.http))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["connections"], 1);
    assert_eq!(
        info["members"],
        json!([{"id": "user-1", "name": "Uno", "meta": {"color": "red"}, "conns": 1}])
    );
}

pub async fn recovery_replays_exactly_the_missed_messages(ctx: Arc<Ctx>) {
    let r = room("recover");
    let url = ws_url(&ctx.ws, &r, None);
    let (mut a, w) = Client::join(&url, Enc::Json, "ann").await;
    let epoch = w["epoch"].as_str().unwrap().to_string();
    for i in 1..=5 {
        assert_eq!(publish(&mut a, json!(i), &format!("m{i}")).await, i);
    }
    let mut last = 5u64;
    for enc in [Enc::Json, Enc::Msgpack] {
        let since = last - 3;
        let (mut b, w) = Client::join_with(
            &url,
            enc,
            json!({"type": "join", "name": "bob", "since": {"epoch": epoch, "offset": since}}),
        )
        .await;
        assert_eq!(w["recovered"], true);
        assert_eq!(w["replayed"], 3);
        for want in since + 1..=last {
            let m = b.recv().await;
            assert_eq!(
                (m["type"].as_str(), m["offset"].as_u64()),
                (Some("message"), Some(want))
            );
        }
        // Up to date: nothing more is replayed, and live messages continue the sequence.
        let (mut c, w) = Client::join_with(
            &url,
            enc,
            json!({"type": "join", "name": "cy", "since": {"epoch": epoch, "offset": last}}),
        )
        .await;
        assert_eq!(
            (w["recovered"].as_bool(), w["replayed"].as_u64()),
            (Some(true), Some(0))
        );
        let next = publish(&mut a, json!("live"), &format!("live-{enc:?}")).await;
        last = next;
        assert_eq!(b.recv_type("message").await["offset"].as_u64(), Some(next));
        assert_eq!(c.recv_type("message").await["offset"].as_u64(), Some(next));
        b.close().await;
        c.close().await;
    }
}

pub async fn recovery_across_a_gap_or_epoch_reloads_and_says_so(ctx: Arc<Ctx>) {
    // The strict server keeps only 5 messages of history.
    let r = room("gap");
    let t = token(&ctx.strict_http, json!({"sub": "gap-user", "rooms": [r]})).await;
    let url = ws_url(&ctx.strict_ws, &r, Some(&t));
    let (mut a, w) = Client::join(&url, Enc::Json, "ann").await;
    let epoch = w["epoch"].as_str().unwrap().to_string();
    for i in 1..=12 {
        publish(&mut a, json!(i), &format!("g{i}")).await;
        // Stay under the strict server's publish rate.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let (mut b, w) = Client::join_with(&url, Enc::Json, json!({"type": "join", "name": "bob", "since": {"epoch": epoch, "offset": 1}, "history": 3})).await;
    assert_eq!(w["recovered"], false, "the gap was trimmed: {w}");
    let mut offsets = Vec::new();
    for _ in 0..w["replayed"].as_u64().unwrap() {
        offsets.push(b.recv().await["offset"].as_u64().unwrap());
    }
    assert_eq!(
        offsets,
        vec![10, 11, 12],
        "latest history follows a failed recovery"
    );
    let (_c, w) = Client::join_with(
        &url,
        Enc::Json,
        json!({"type": "join", "name": "cy", "since": {"epoch": "not-this-one", "offset": 12}}),
    )
    .await;
    assert_eq!(
        w["recovered"], false,
        "another epoch never recovers silently"
    );
    // History over HTTP says where it starts.
    let page: Value = http()
        .get(format!(
            "{}/api/rooms/{r}/history?since=0&limit=100",
            ctx.strict_http
        ))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["truncated"], true);
    assert_eq!(page["last_offset"], 12);
    assert!(page["first_offset"].as_u64().unwrap() >= 8, "{page}");
}

pub async fn retried_publishes_are_idempotent(ctx: Arc<Ctx>) {
    let r = room("idem");
    let url = ws_url(&ctx.ws, &r, None);
    let (mut a, _) = Client::join(&url, Enc::Json, "ann").await;
    let (mut b, _) = Client::join(&url, Enc::Json, "bob").await;
    let first = publish(&mut a, json!("once"), "retry-me").await;
    a.send(json!({"type": "publish", "body": "once", "id": "retry-me"}))
        .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(
        (ack["offset"].as_u64(), ack["duplicate"].as_bool()),
        (Some(first), Some(true))
    );
    let after = publish(&mut a, json!("next"), "fresh").await;
    assert_eq!(after, first + 1, "the retry took no offset");
    let m1 = b.recv_type("message").await;
    let m2 = b.recv_type("message").await;
    assert_eq!(
        (m1["body"].as_str(), m2["body"].as_str()),
        (Some("once"), Some("next")),
        "delivered once"
    );
}

pub async fn acks_and_refusals_carry_ids_and_codes(ctx: Arc<Ctx>) {
    let r = room("acks");
    let url = ws_url(&ctx.ws, &r, None);
    let (mut a, _) = Client::join(&url, Enc::Msgpack, "ann").await;
    a.send(json!({"type": "publish", "body": "x".repeat(9000), "id": "big"}))
        .await;
    let e = a.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("too_large"), Some("big"))
    );
    a.send(json!({"type": "publish", "body": 1, "id": "i".repeat(65)}))
        .await;
    assert_eq!(a.recv().await["code"], "invalid_id");
    a.send(json!({"type": "join", "name": "again"})).await;
    assert_eq!(a.recv().await["code"], "already_joined");
    // Garbage bytes on the MessagePack connection: an error frame, the socket stays usable.
    a.send_raw(WsMessage::Binary(vec![0xc1, 0xff].into())).await;
    assert_eq!(a.recv().await["code"], "malformed");
    a.send_raw(WsMessage::Text("{}".into())).await;
    assert_eq!(a.recv().await["code"], "wrong_frame_kind");
    a.send(json!({"type": "publish", "body": 1, "id": "fine"}))
        .await;
    assert_eq!(a.recv_type("ack").await["offset"], 1);
    // A token without the publish permission is refused with `forbidden`, keeping the id.
    let t = token(
        &ctx.http,
        json!({"sub": "reader", "rooms": [r], "perms": ["subscribe", "presence"]}),
    )
    .await;
    let (mut reader, _) = Client::join(&ws_url(&ctx.ws, &r, Some(&t)), Enc::Json, "reader").await;
    reader
        .send(json!({"type": "publish", "body": 1, "id": "nope"}))
        .await;
    let e = next_ack(&mut reader).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("forbidden"), Some("nope"))
    );
}

pub async fn join_limits_are_enforced(ctx: Arc<Ctx>) {
    let url = ws_url(&ctx.ws, &room("joinlimits"), None);
    let mut c = Client::connect(&url, Enc::Json).await;
    for (join, code) in [
        (
            json!({"type": "join", "name": "n".repeat(33)}),
            "invalid_name",
        ),
        (json!({"type": "join", "name": "  "}), "invalid_name"),
        (json!({"type": "join", "name": "bell\u{7}"}), "invalid_name"),
        (
            json!({"type": "join", "name": "admin\u{202e}gnp.exe"}),
            "invalid_name",
        ),
        (
            json!({"type": "join", "name": "m", "meta": {"bio": "b".repeat(300)}}),
            "too_large",
        ),
        (
            json!({"type": "join", "name": "m", "meta": [1, 2]}),
            "invalid_frame",
        ),
        (
            json!({"type": "join", "name": "m", "history": 5000}),
            "invalid_frame",
        ),
        (json!({"type": "join", "name": 7}), "invalid_frame"),
    ] {
        c.send(join.clone()).await;
        let e = c.recv().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{join}"
        );
    }
    // The longest allowed name and metadata are fine, and nothing above took an offset.
    c.send(json!({"type": "join", "name": "n".repeat(32), "meta": {"bio": "b".repeat(200)}}))
        .await;
    let w = c.recv().await;
    assert_eq!(
        (w["type"].as_str(), w["offset"].as_u64()),
        (Some("welcome"), Some(0))
    );
}

pub async fn heartbeat_is_answered(ctx: Arc<Ctx>) {
    let url = ws_url(&ctx.ws, &room("beat"), None);
    let mut c = Client::connect(&url, Enc::Json).await;
    c.send_raw(WsMessage::Text(r#"{"type":"ping"}"#.into()))
        .await;
    assert_eq!(c.recv().await, json!({"type": "pong"}));
}

pub async fn auth_refusals_are_documented(ctx: Arc<Ctx>) {
    let r = room("auth");
    // The strict server has anonymous access off.
    let refused = Client::try_connect(&ws_url(&ctx.strict_ws, &r, None), Enc::Json, &[])
        .await
        .err()
        .expect("no token refused");
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (401, Some("token_required"))
    );
    let refused = Client::try_connect(
        &ws_url(&ctx.strict_ws, &r, Some("not.a.token")),
        Enc::Json,
        &[],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let other = token(
        &ctx.strict_http,
        json!({"sub": "elsewhere", "rooms": ["team-*"]}),
    )
    .await;
    let refused = Client::try_connect(&ws_url(&ctx.strict_ws, &r, Some(&other)), Enc::Json, &[])
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (403, Some("room_forbidden"))
    );
    let team = token(
        &ctx.strict_http,
        json!({"sub": "teamer", "rooms": ["team-*"]}),
    )
    .await;
    let (_c, w) = Client::join(
        &ws_url(&ctx.strict_ws, &format!("team-{r}"), Some(&team)),
        Enc::Json,
        "t",
    )
    .await;
    assert_eq!(w["me"]["id"], "teamer");
    // Bearer header works as well as the query parameter.
    let bearer = format!("Bearer {team}");
    assert!(Client::try_connect(
        &ws_url(&ctx.strict_ws, "team-x", None),
        Enc::Json,
        &[("Authorization", &bearer)]
    )
    .await
    .is_ok());
    // A well-signed token that expired (beyond the 30 s leeway) is refused as expired.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = sign_token(
        &json!({"sub": "late", "rooms": ["*"], "exp": now - 120}),
        DEV_SECRET,
    );
    let refused = Client::try_connect(&ws_url(&ctx.strict_ws, &r, Some(&expired)), Enc::Json, &[])
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    // The same claims, fresh, are accepted: the refusal above was about time alone.
    let fresh = sign_token(
        &json!({"sub": "late", "rooms": ["*"], "exp": now + 600}),
        DEV_SECRET,
    );
    assert!(
        Client::try_connect(&ws_url(&ctx.strict_ws, &r, Some(&fresh)), Enc::Json, &[])
            .await
            .is_ok()
    );
    // A token signed with another secret is refused.
    let forged = sign_token(
        &json!({"sub": "mallory", "rooms": ["*"], "exp": 4_000_000_000u64}),
        b"some-other-secret-entirely",
    );
    let refused = Client::try_connect(&ws_url(&ctx.strict_ws, &r, Some(&forged)), Enc::Json, &[])
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    // On the default (demo) server anonymous access is on.
    assert!(
        Client::try_connect(&ws_url(&ctx.ws, &r, None), Enc::Json, &[])
            .await
            .is_ok()
    );
}

/// Signs claims as an HS256 JWT, independently of the service's own code.
fn sign_token(claims: &Value, secret: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let input = format!(
        "{}.{}",
        e(br#"{"alg":"HS256","typ":"JWT"}"#),
        e(claims.to_string().as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", e(&mac.finalize().into_bytes()))
}

/// The local development secret (wrangler.toml `[vars]`).
const DEV_SECRET: &[u8] = b"roomkeeper-local-dev-secret";

pub async fn expired_tokens_are_refused_and_end_sessions(ctx: Arc<Ctx>) {
    let r = room("expiry");
    // ttl 1 s: accepted now (within the verification leeway), closed with 4001 when the
    // leeway runs out (CLOCK_LEEWAY_S = 30 s).
    let t = token(
        &ctx.strict_http,
        json!({"sub": "brief", "rooms": [r], "ttl_s": 1}),
    )
    .await;
    let (mut c, _) = Client::join(&ws_url(&ctx.strict_ws, &r, Some(&t)), Enc::Json, "brief").await;
    c.expect_token_expiry(Duration::from_secs(60)).await;
    // Reconnecting with the same token is refused as expired.
    let refused = Client::try_connect(&ws_url(&ctx.strict_ws, &r, Some(&t)), Enc::Json, &[])
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
}

pub async fn publish_flood_is_limited_then_disconnected(ctx: Arc<Ctx>) {
    let r = room("flood");
    let t = token(&ctx.strict_http, json!({"sub": "flooder", "rooms": [r]})).await;
    let (mut c, _) = Client::join(&ws_url(&ctx.strict_ws, &r, Some(&t)), Enc::Json, "f").await;
    // Strict server: burst 3, 5 refusals in a row end the connection with 4500.
    for i in 0..20 {
        c.send(json!({"type": "publish", "body": i, "id": format!("f{i}")}))
            .await;
    }
    let mut acked = 0;
    let mut limited = 0;
    let mut close = None;
    while let Some(f) = c.try_recv(Duration::from_secs(5)).await {
        match f["type"].as_str() {
            Some("ack") => acked += 1,
            Some("error") => {
                assert_eq!(f["code"], "rate_limited");
                limited += 1;
            }
            Some("__close") => {
                close = Some(f);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(acked, 3, "exactly the burst was accepted");
    assert_eq!(limited, 5, "refused with error frames first");
    assert_eq!(close.expect("closed on sustained abuse")["code"], 4500);
    // Nothing accepted was lost.
    let page: Value = http()
        .get(format!("{}/api/rooms/{r}/history", ctx.strict_http))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bodies: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_u64().unwrap())
        .collect();
    assert_eq!(bodies, vec![0, 1, 2]);
}

pub async fn member_and_connection_caps(ctx: Arc<Ctx>) {
    // Strict server: 2 members, 3 connections per room.
    let r = room("caps");
    let tok = |sub: &'static str| {
        let base = ctx.strict_http.clone();
        let r = r.clone();
        async move { token(&base, json!({"sub": sub, "rooms": [r]})).await }
    };
    let (t1, t2, t3) = (tok("m1").await, tok("m2").await, tok("m3").await);
    let (_a, _) = Client::join(&ws_url(&ctx.strict_ws, &r, Some(&t1)), Enc::Json, "a").await;
    let (_b, _) = Client::join(&ws_url(&ctx.strict_ws, &r, Some(&t2)), Enc::Json, "b").await;
    let mut c = Client::connect(&ws_url(&ctx.strict_ws, &r, Some(&t3)), Enc::Json).await;
    c.send(json!({"type": "join", "name": "c"})).await;
    let e = c.recv().await;
    assert_eq!(e["code"], "room_full");
    assert_eq!(c.recv().await["code"], 4509);
    // Connections: two held, the third above was closed; fill to three, the fourth is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _c3 = Client::connect(&ws_url(&ctx.strict_ws, &r, Some(&t1)), Enc::Json).await;
    let refused = Client::try_connect(&ws_url(&ctx.strict_ws, &r, Some(&t1)), Enc::Json, &[])
        .await
        .err()
        .expect("fourth connection refused");
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (409, Some("room_full"))
    );
}

async fn post(url: &str, key: Option<&str>, body: String) -> (u16, Value) {
    let mut req = http()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn http_broadcast_reaches_every_member(ctx: Arc<Ctx>) {
    let r = room("bcast");
    let url = ws_url(&ctx.ws, &r, None);
    let (mut j, _) = Client::join(&url, Enc::Json, "json").await;
    let (mut m, _) = Client::join(&url, Enc::Msgpack, "pack").await;
    let endpoint = format!("{}/api/rooms/{r}/broadcast", ctx.http);
    let (s, v) = post(
        &endpoint,
        Some(DEV_API_KEY),
        json!({"body": {"alert": "hi"}, "name": "ops"}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let offset = v["offset"].as_u64().unwrap();
    for c in [&mut j, &mut m] {
        let f = c.recv_type("message").await;
        assert_eq!(
            (
                f["offset"].as_u64(),
                f["body"]["alert"].as_str(),
                f["from"]["name"].as_str()
            ),
            (Some(offset), Some("hi"), Some("ops"))
        );
        assert_eq!(f["from"]["id"], "api:dev");
    }
    // Idempotency key (header form): the retry returns the same offset, delivers nothing new.
    let keyed = || {
        http()
            .post(&endpoint)
            .bearer_auth(DEV_API_KEY)
            .header("Idempotency-Key", "evt-42")
            .json(&json!({"body": "once"}))
            .send()
    };
    let first: Value = keyed().await.unwrap().json().await.unwrap();
    let again: Value = keyed().await.unwrap().json().await.unwrap();
    assert_eq!(first["offset"], again["offset"]);
    assert_eq!(
        (first["duplicate"].as_bool(), again["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(j.recv_type("message").await["body"], "once");
    assert!(
        j.try_recv(Duration::from_millis(300)).await.is_none(),
        "the retry was not delivered"
    );
    // Refusals.
    let (s, v) = post(&endpoint, None, json!({"body": 1}).to_string()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let (s, v) = post(
        &endpoint,
        Some("wrong-key-wrong-key-wrong"),
        json!({"body": 1}).to_string(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (s, v) = post(&endpoint, Some(DEV_API_KEY), "{oops".into()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (s, v) = post(&endpoint, Some(DEV_API_KEY), json!({"text": 1}).to_string()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (s, v) = post(
        &endpoint,
        Some(DEV_API_KEY),
        json!({"body": "x".repeat(9000)}).to_string(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (s, _) = post(
        &endpoint,
        Some(DEV_API_KEY),
        json!({"body": "x".repeat(70_000)}).to_string(),
    )
    .await;
    assert_eq!(s, 413);
    let (s, v) = post(
        &endpoint,
        Some(DEV_API_KEY),
        json!({"body": 1, "key_name": "spoof"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        j.try_recv(Duration::from_millis(300)).await.is_none(),
        "refused broadcasts delivered nothing"
    );
}

pub async fn multi_room_broadcast_reports_per_room(ctx: Arc<Ctx>) {
    let (r1, r2) = (room("multi-a"), room("multi-b"));
    let (mut a, _) = Client::join(&ws_url(&ctx.ws, &r1, None), Enc::Json, "a").await;
    let (mut b, _) = Client::join(&ws_url(&ctx.ws, &r2, None), Enc::Json, "b").await;
    let forged = "cd".repeat(32);
    let body = json!({"rooms": [r1, r2, "bad name", forged], "body": {"n": 1}});
    let (s, v) = post(
        &format!("{}/api/broadcast", ctx.http),
        Some(DEV_API_KEY),
        body.to_string(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 4);
    assert_eq!(
        (res[0]["room"].as_str(), res[0]["offset"].as_u64()),
        (Some(r1.as_str()), Some(1))
    );
    assert_eq!(res[1]["offset"], 1);
    assert_eq!(res[2]["error"]["code"], "invalid_room_name");
    assert_eq!(res[3]["error"]["code"], "room_not_found");
    assert_eq!(
        (v["delivered"].as_u64(), v["failed"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(a.recv_type("message").await["body"]["n"], 1);
    assert_eq!(b.recv_type("message").await["body"]["n"], 1);
    let (s, v) = post(
        &format!("{}/api/broadcast", ctx.http),
        Some(DEV_API_KEY),
        json!({"rooms": [], "body": 1}).to_string(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_rooms"))
    );
}

pub async fn room_info_and_history_endpoints(ctx: Arc<Ctx>) {
    let r = room("info");
    let (mut a, w) = Client::join(&ws_url(&ctx.ws, &r, None), Enc::Json, "ann").await;
    for i in 1..=4 {
        publish(&mut a, json!(i), &format!("h{i}")).await;
    }
    let get = |path: String| async move {
        let r = http()
            .get(path)
            .bearer_auth(DEV_API_KEY)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, info) = get(format!("{}/api/rooms/{r}", ctx.http)).await;
    assert_eq!(s, 200);
    assert_eq!(
        (info["last_offset"].as_u64(), info["connections"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(info["epoch"], w["epoch"]);
    assert_eq!(info["members"][0]["name"], "ann");
    let (_, page) = get(format!(
        "{}/api/rooms/{r}/history?since=1&limit=2",
        ctx.http
    ))
    .await;
    let offs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offs, vec![2, 3]);
    assert_eq!(
        (page["truncated"].as_bool(), page["epoch"].clone()),
        (Some(false), w["epoch"].clone())
    );
    let (s, e) = get(format!("{}/api/rooms/{r}/history?limit=abc", ctx.http)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (s, e) = get(format!("{}/api/rooms/{r}/history?limit=0", ctx.http)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let r = http()
        .get(format!("{}/api/rooms/{r}", ctx.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

pub async fn state_survives_hibernation(ctx: Arc<Ctx>) {
    let r = room("hibernate");
    let url = ws_url(&ctx.ws, &r, None);
    let (mut a, _) = Client::join(&url, Enc::Json, "ann").await;
    let (mut b, _) = Client::join(&url, Enc::Msgpack, "bob").await;
    publish(&mut a, json!("before"), "p1").await;
    b.recv_type("message").await;
    // Idle long enough for workerd to evict the object (seen within 25 s here); the sockets
    // stay open and the next message reaches a freshly constructed instance.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let offset = publish(&mut a, json!("after"), "p2").await;
    assert_eq!(offset, 2, "the offset continues after eviction");
    let m = b.recv_type("message").await;
    assert_eq!(
        (m["from"]["name"].as_str(), m["body"].as_str()),
        (Some("ann"), Some("after")),
        "identity came back from the attachment"
    );
    a.send(json!({"type": "publish", "body": "dup", "id": "p1"}))
        .await;
    assert_eq!(
        a.recv_type("ack").await["duplicate"],
        true,
        "dedupe survived eviction"
    );
}

/// Clients publish, workerd is stopped and started again on the same state, clients
/// reconnect with their last offsets: every message arrives exactly once, in order.
pub async fn no_loss_across_a_restart(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("restart");
    let mut server = Server::start(&persist.0);
    let r = room("restart");
    let url = ws_url(&server.ws(), &r, None);
    // The publisher retries on a new connection: exactly-once across connections is a token
    // user's (anonymous de-duplication is per connection).
    let t = token(
        &server.http(),
        json!({"sub": "restart-publisher", "rooms": [r]}),
    )
    .await;
    let (mut publisher, _) =
        Client::join(&ws_url(&server.ws(), &r, Some(&t)), Enc::Json, "pub").await;
    let (mut reader, w) = Client::join(&url, Enc::Json, "reader").await;
    let epoch = w["epoch"].as_str().unwrap().to_string();
    const N: usize = 60;
    for i in 0..N {
        publisher
            .send(json!({"type": "publish", "body": i, "id": format!("r{i}")}))
            .await;
    }
    // Take some acks and some messages, then stop the server in the middle of it all.
    let mut acked = HashSet::new();
    while acked.len() < N / 3 {
        let f = publisher.recv().await;
        if f["type"] == "ack" {
            acked.insert(f["id"].as_str().unwrap().to_string());
        }
    }
    let mut seen: Vec<(u64, u64)> = Vec::new();
    while seen.len() < N / 4 {
        let f = reader.recv_type("message").await;
        seen.push((f["offset"].as_u64().unwrap(), f["body"].as_u64().unwrap()));
    }
    server.stop();
    let server = Server::start(&persist.0);
    let url = ws_url(&server.ws(), &r, None);
    // The publisher retries everything it has no ack for; duplicates are recognised.
    let (mut publisher, _) =
        Client::join(&ws_url(&server.ws(), &r, Some(&t)), Enc::Json, "pub").await;
    for i in 0..N {
        let id = format!("r{i}");
        if !acked.contains(&id) {
            publisher
                .send(json!({"type": "publish", "body": i, "id": id}))
                .await;
            let ack = next_ack(&mut publisher).await;
            assert_eq!(ack["type"], "ack", "{ack}");
        }
    }
    let last = seen.last().unwrap().0;
    let (mut reader, w) = Client::join_with(
        &url,
        Enc::Json,
        json!({"type": "join", "name": "reader", "since": {"epoch": epoch, "offset": last}}),
    )
    .await;
    assert_eq!(w["recovered"], true, "{w}");
    let total = w["offset"].as_u64().unwrap();
    assert_eq!(total, N as u64, "every message stored exactly once");
    for _ in 0..w["replayed"].as_u64().unwrap() {
        let f = reader.recv().await;
        seen.push((f["offset"].as_u64().unwrap(), f["body"].as_u64().unwrap()));
    }
    let offsets: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        offsets,
        (1..=N as u64).collect::<Vec<_>>(),
        "no gap, no duplicate, in order"
    );
    let mut bodies: Vec<u64> = seen.iter().map(|s| s.1).collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        (0..N as u64).collect::<Vec<_>>(),
        "each message exactly once"
    );
    drop(server);
}

/// `GET /api/rooms/:room` counts what the room did — exactly — and the figures survive a
/// restart of workerd; the service-wide metrics get the same counts (sent once a second).
pub async fn room_figures_count_exactly_and_survive_a_restart(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("figures");
    let mut server = Server::start(&persist.0);
    let r = room("figures");
    let info = |base: String, r: String| async move {
        let resp = http()
            .get(format!("{base}/api/rooms/{r}"))
            .bearer_auth(DEV_API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json::<Value>().await.unwrap()
    };
    let before = metrics(&server.http()).await;
    let url = ws_url(&server.ws(), &r, None);
    let (mut a, _) = Client::join(&url, Enc::Json, "a").await;
    let (mut b, _) = Client::join(&url, Enc::Json, "b").await;
    let mut bytes = [
        json!({"type": "join", "name": "a"}),
        json!({"type": "join", "name": "b"}),
    ]
    .iter()
    .map(|f| f.to_string().len())
    .sum::<usize>();
    for (i, (body, id)) in [(json!(1), "m1"), (json!(2), "m2"), (json!(1), "m1")]
        .into_iter()
        .enumerate()
    {
        let f = json!({"type": "publish", "body": body, "id": id});
        bytes += f.to_string().len();
        a.send(f).await;
        let ack = a.recv_type("ack").await;
        assert_eq!(ack["duplicate"] == true, i == 2, "{ack}");
    }
    a.send_raw(WsMessage::Text("{}".into())).await;
    bytes += 2;
    assert_eq!(a.recv_type("error").await["code"], "unknown_type");
    for want in [1, 2] {
        assert_eq!(b.recv_type("message").await["offset"], want);
    }
    let want = json!({
        "messages": 2, "duplicates": 1, "deliveries": 4, "bytes_in": bytes,
        "refusals": {"unknown_type": 1}, "recovered": 0, "reloaded": 0,
        "connections_opened": 2, "connections_closed": 0,
    });
    assert_eq!(info(server.http(), r.clone()).await["stats"], want);
    // The same counts reach the service-wide metrics at the room's first event a second or more
    // after its last report (here: the info requests).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let moved = |m: &Value, name: &str, labels: &str| {
        m[name][labels].as_i64().unwrap_or(0) - before[name][labels].as_i64().unwrap_or(0)
    };
    loop {
        info(server.http(), r.clone()).await;
        let m = metrics(&server.http()).await;
        let got = [
            moved(&m, "roomkeeper_room_messages_total", ""),
            moved(&m, "roomkeeper_room_duplicates_total", ""),
            moved(&m, "roomkeeper_room_deliveries_total", ""),
            moved(&m, "roomkeeper_room_bytes_in_total", ""),
            moved(
                &m,
                "roomkeeper_room_refusals_total",
                r#"code="unknown_type""#,
            ),
        ];
        if got == [2, 1, 4, bytes as i64, 1] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics: {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Saved at once by closes (socket messages within a second): a restart keeps them exactly.
    a.close().await;
    b.close().await;
    let mut want = want;
    want["connections_closed"] = json!(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while info(server.http(), r.clone()).await["stats"] != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both closes counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop();
    let mut server = Server::start(&persist.0);
    assert_eq!(info(server.http(), r.clone()).await["stats"], want);
    // Socket messages save the figures at most once a second; one that comes within the
    // second of the last save is saved by a timer for the rest of it, so nothing else needs to
    // happen for a restart to keep them.
    let url = ws_url(&server.ws(), &r, None);
    let (mut c, _) = Client::join(&url, Enc::Json, "c").await;
    for i in 0..5 {
        c.send(json!({"type": "publish", "body": i, "id": format!("n{i}")}))
            .await;
        c.recv_type("ack").await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.stop();
    let server = Server::start(&persist.0);
    let stats = &info(server.http(), r.clone()).await["stats"];
    assert_eq!(
        (
            &stats["messages"],
            &stats["deliveries"],
            &stats["connections_opened"]
        ),
        (&json!(7), &json!(9), &json!(3)),
        "{stats}"
    );
}

/// `depth` arrays nested in one another around a number: `[[…[1]…]]`.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| json!([v]))
}

/// GET with the dev API key: status and JSON body.
async fn get_json(url: String) -> (u16, Value) {
    let r = http()
        .get(url)
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    (
        r.status().as_u16(),
        r.json::<Value>().await.unwrap_or(Value::Null),
    )
}

pub async fn hardening_deep_bodies_are_refused_and_history_stays_readable(ctx: Arc<Ctx>) {
    let r = room("deep");
    let url = ws_url(&ctx.ws, &r, None);
    let (mut m, _) = Client::join(&url, Enc::Msgpack, "deep").await;
    // 200 levels over MessagePack: once accepted, stored and acked, then every history read
    // of the room failed. Now refused at the door like any over-limit frame.
    m.send(json!({"type": "publish", "body": nested(200), "id": "d1"}))
        .await;
    let e = next_ack(&mut m).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("too_large")),
        "{e}"
    );
    // The same over JSON, one level past the limit; at the limit it is accepted.
    let (mut j, _) = Client::join(&url, Enc::Json, "json").await;
    j.send(json!({"type": "publish", "body": nested(33), "id": "d2"}))
        .await;
    let e = next_ack(&mut j).await;
    assert_eq!(e["code"], "too_large", "{e}");
    assert_eq!(publish(&mut j, nested(32), "d3").await, 1);
    m.send(json!({"type": "publish", "body": nested(32), "id": "d4"}))
        .await;
    assert_eq!(next_ack(&mut m).await["offset"], 2);
    // The HTTP broadcast is a door too.
    let (s, e) = post(
        &format!("{}/api/rooms/{r}/broadcast", ctx.http),
        Some(DEV_API_KEY),
        json!({"body": nested(100)}).to_string(),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("too_deep")),
        "{e}"
    );
    // History reads work: over HTTP and on join.
    let (s, page) = get_json(format!("{}/api/rooms/{r}/history", ctx.http)).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["messages"][0]["body"], nested(32));
    let (_, w) = Client::join_with(
        &url,
        Enc::Json,
        json!({"type": "join", "name": "late", "history": 10}),
    )
    .await;
    assert_eq!(w["replayed"], 2);
}

pub async fn hardening_history_since_beyond_any_offset_is_empty(ctx: Arc<Ctx>) {
    let r = room("since-max");
    let (mut a, _) = Client::join(&ws_url(&ctx.ws, &r, None), Enc::Json, "ann").await;
    for i in 1..=3 {
        publish(&mut a, json!(i), &format!("s{i}")).await;
    }
    for since in [u64::MAX, i64::MAX as u64 + 1, i64::MAX as u64] {
        let (s, page) = get_json(format!("{}/api/rooms/{r}/history?since={since}", ctx.http)).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["messages"], json!([]), "since={since}: {page}");
        assert_eq!(page["truncated"], false);
        assert_eq!(page["last_offset"], 3);
    }
}

/// A reader that reports `seen` once and then stops reading while another client publishes
/// more than `ROOM_MAX_LAG_MESSAGES`: the room closes it with 4008 instead of queueing
/// everything for it; what was sent before the close still arrives, and a reconnect with
/// `since` recovers exactly the rest. The publisher, which never reports, is not closed.
pub async fn a_reader_that_falls_behind_is_closed_too_slow_and_recovers(_ctx: Arc<Ctx>) {
    const LAG: u64 = 20;
    let persist = TempDir::new("lag");
    let server = Server::start_with(&persist.0, &[("ROOM_MAX_LAG_MESSAGES", "20")]);
    let r = room("lag");
    let url = ws_url(&server.ws(), &r, None);
    let (mut reader, w) = Client::join(&url, Enc::Json, "reader").await;
    let epoch = w["epoch"].as_str().unwrap().to_string();
    let (mut publisher, _) = Client::join(&url, Enc::Json, "pub").await;
    assert_eq!(publish(&mut publisher, json!(1), "p1").await, 1);
    assert_eq!(reader.recv_type("message").await["offset"], 1);
    reader.send(json!({"type": "seen", "offset": 1})).await;
    // Frames on one socket are handled in order: once this ack is back, the report is in.
    assert_eq!(publish(&mut reader, json!("marker"), "r1").await, 2);

    // The reader stops reading; the publisher goes on (within its burst of 40) past the lag.
    let total = LAG + 7;
    for i in 3..=total {
        assert_eq!(publish(&mut publisher, json!(i), &format!("p{i}")).await, i);
    }
    // What the reader was sent: everything through 1 + LAG, then close 4008.
    let mut got = Vec::new();
    let close = loop {
        let f = reader.recv().await;
        match f["type"].as_str() {
            Some("message") => got.push(f["offset"].as_u64().unwrap()),
            Some("__close") => break f,
            _ => {}
        }
    };
    assert_eq!(close["code"], 4008, "{close}");
    // (Its own marker, offset 2, was read with its ack.)
    assert_eq!(got, (3..=1 + LAG).collect::<Vec<_>>());
    // The publisher never reported: it is still open and still receives.
    assert_eq!(
        publish(&mut publisher, json!("after"), "after").await,
        total + 1
    );

    // Reconnect with since: exactly the rest, recovered.
    let since =
        json!({"type": "join", "name": "reader", "since": {"epoch": epoch, "offset": 1 + LAG}});
    let (mut reader, w) = Client::join_with(&url, Enc::Json, since).await;
    assert_eq!(w["recovered"], true, "{w}");
    let mut replayed = Vec::new();
    for _ in 0..w["replayed"].as_u64().unwrap() {
        replayed.push(
            reader.recv_type("message").await["offset"]
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(replayed, (2 + LAG..=total + 1).collect::<Vec<_>>());
}

/// The room's publish ceiling holds across connections and the HTTP broadcast: once the
/// room's burst is spent, a socket publish is refused `rate_limited` (naming the room limit)
/// and the broadcast answers 429 `rate_limited` with `Retry-After`.
pub async fn the_room_publish_ceiling_spans_connections_and_the_http_broadcast(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("room-rate");
    let server = Server::start_with(
        &persist.0,
        &[
            ("ROOM_PUBLISH_ROOM_RATE", "1"),
            ("ROOM_PUBLISH_ROOM_BURST", "3"),
        ],
    );
    let r = room("roomrate");
    let url = ws_url(&server.ws(), &r, None);
    let (mut a, _) = Client::join(&url, Enc::Json, "a").await;
    let (mut b, _) = Client::join(&url, Enc::Json, "b").await;
    // Joined before the room's budget is spent, so the checks below come within the second
    // before the room's bucket has one publish again.
    let (mut c, _) = Client::join(&url, Enc::Json, "c").await;
    assert_eq!(publish(&mut a, json!(1), "a1").await, 1);
    assert_eq!(publish(&mut b, json!(2), "b1").await, 2);
    let endpoint = format!("{}/api/rooms/{r}/broadcast", server.http());
    let send = || {
        http()
            .post(&endpoint)
            .bearer_auth(DEV_API_KEY)
            .json(&json!({"body": "http"}))
            .send()
    };
    let ok = send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let refused = send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().get("Retry-After").is_some());
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    // A third connection (another user, with its own full bucket) is refused too.
    c.send(json!({"type": "publish", "body": 3, "id": "c1"}))
        .await;
    let e = c.recv_type("error").await;
    assert_eq!(
        (&e["code"], &e["id"]),
        (&json!("rate_limited"), &json!("c1"))
    );
    assert!(e["message"].as_str().unwrap().contains("room limit"), "{e}");
}
