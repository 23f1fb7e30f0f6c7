//! Foundation: routing, errors, CORS, the first room protocol, binary frames, deploy config.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::Ctx;
use roomkeeper_testkit::harness::{http, room, root, Client, Enc};

async fn get_json(url: &str) -> (u16, Value) {
    let r = http().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn health_answers(ctx: Arc<Ctx>) {
    let (status, body) = get_json(&format!("{}/health", ctx.http)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["environment"], "local");
}

pub async fn unknown_route_is_404_json(ctx: Arc<Ctx>) {
    let (status, body) = get_json(&format!("{}/api/nothing-here", ctx.http)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].is_string());
}

pub async fn wrong_method_is_405_with_allow(ctx: Arc<Ctx>) {
    let r = http()
        .delete(format!("{}/api/rooms", ctx.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

pub async fn bad_room_names_are_refused_before_any_object(ctx: Arc<Ctx>) {
    let long = "a".repeat(49);
    for name in ["bad%20name", "-dash", long.as_str(), "semi;colon"] {
        let url = format!("{}/api/rooms/{name}/ws", ctx.ws);
        let refused = Client::try_connect(&url, Enc::Json, &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} should be refused"));
        assert_eq!(refused.status, 400, "{name}");
        assert_eq!(refused.body["error"]["code"], "invalid_room_name", "{name}");
    }
}

pub async fn plain_http_to_socket_route_is_426(ctx: Arc<Ctx>) {
    let r = http()
        .get(format!("{}/api/rooms/lobby/ws", ctx.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 426);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upgrade_required");
}

pub async fn two_clients_see_each_others_messages_in_order(ctx: Arc<Ctx>) {
    let url = format!("{}/api/rooms/{}/ws", ctx.ws, room("order"));
    let (mut ann, w1) = Client::join(&url, Enc::Json, "ann").await;
    assert_eq!(w1["members"].as_array().unwrap().len(), 1);
    let (mut bob, w2) = Client::join(&url, Enc::Json, "bob").await;
    let names: Vec<&str> = w2["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ann") && names.contains(&"bob"), "{w2}");
    let joined = ann.recv().await;
    assert_eq!(
        (joined["type"].as_str(), joined["member"]["name"].as_str()),
        (Some("joined"), Some("bob"))
    );

    // Interleave publishes from both; every client must see one total order.
    const N: usize = 20;
    for i in 0..N {
        ann.send(json!({"type": "publish", "body": {"text": format!("a{i}")}}))
            .await;
        bob.send(json!({"type": "publish", "body": {"text": format!("b{i}")}}))
            .await;
    }
    let mut seen = [Vec::new(), Vec::new()];
    for (k, c) in [&mut ann, &mut bob].into_iter().enumerate() {
        for _ in 0..2 * N {
            let m = c.recv_type("message").await;
            assert!(
                m["ts"].as_u64().unwrap() > 1_600_000_000_000,
                "server timestamp: {m}"
            );
            seen[k].push((
                m["offset"].as_u64().unwrap(),
                m["from"]["name"].as_str().unwrap().to_string(),
                m["body"]["text"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(seen[0], seen[1], "both clients see the same order");
    let offsets: Vec<u64> = seen[0].iter().map(|s| s.0).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "offsets consecutive: {offsets:?}"
    );
    // Each sender's own messages stay in the order it sent them.
    for (who, prefix) in [("ann", "a"), ("bob", "b")] {
        let texts: Vec<String> = seen[0]
            .iter()
            .filter(|s| s.1 == who)
            .map(|s| s.2.clone())
            .collect();
        let want: Vec<String> = (0..N).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(texts, want);
    }
    ann.close().await;
    let left = bob.recv().await;
    assert_eq!(left["type"], "left");
    assert_eq!(left["member"]["name"], "ann");
}

pub async fn rooms_are_isolated(ctx: Arc<Ctx>) {
    let x = format!("{}/api/rooms/{}/ws", ctx.ws, room("iso-x"));
    let y = format!("{}/api/rooms/{}/ws", ctx.ws, room("iso-y"));
    let (mut in_x, _) = Client::join(&x, Enc::Json, "xavier").await;
    let (mut in_y, _) = Client::join(&y, Enc::Json, "yvonne").await;
    in_y.send(json!({"type": "publish", "body": "for y only"}))
        .await;
    assert_eq!(in_y.recv_type("message").await["body"], "for y only");
    in_x.send(json!({"type": "publish", "body": "marker"}))
        .await;
    let m = in_x.recv_type("message").await;
    assert_eq!(m["body"], "marker", "room x must not see room y's message");
    assert_eq!(m["offset"], 1, "each room has its own stream");
    assert!(in_x.try_recv(Duration::from_millis(300)).await.is_none());
}

pub async fn binary_msgpack_frames_arrive_intact(ctx: Arc<Ctx>) {
    let url = format!("{}/api/rooms/{}/ws", ctx.ws, room("bin"));
    let (mut packer, welcome) = Client::join(&url, Enc::Msgpack, "packer").await;
    assert_eq!(welcome["protocol"], 1);
    let (mut texter, _) = Client::join(&url, Enc::Json, "texter").await;
    let body = json!({"text": "héllo ✓ \u{0}", "n": [0, 255, 65536, -1], "f": 1.5, "nested": {"deep": [true, null]}});
    packer
        .send(json!({"type": "publish", "body": body.clone(), "id": "bin-1"}))
        .await;
    // The MessagePack sender gets the message and its ack as binary frames…
    let m = packer.recv_type("message").await;
    assert_eq!(m["body"], body);
    let ack = packer.recv_type("ack").await;
    assert_eq!(
        (ack["id"].as_str(), ack["offset"].as_u64()),
        (Some("bin-1"), Some(1))
    );
    // …and the JSON member sees exactly the same body as text.
    let m = texter.recv_type("message").await;
    assert_eq!(m["body"], body);
    assert_eq!(m["from"]["name"], "packer");
    // A large binary frame (near the frame limit) also arrives whole.
    let big = "x".repeat(7000);
    packer
        .send(json!({"type": "publish", "body": big.clone()}))
        .await;
    assert_eq!(texter.recv_type("message").await["body"], big.as_str());
}

pub async fn malformed_frames_get_error_frames_and_socket_survives(ctx: Arc<Ctx>) {
    let url = format!("{}/api/rooms/{}/ws", ctx.ws, room("bad"));
    let mut c = Client::connect(&url, Enc::Json).await;
    c.send(json!({"type": "publish", "body": "too early", "id": "e1"}))
        .await;
    let e = c.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_str()),
        (Some("error"), Some("not_joined"), Some("e1"))
    );
    c.send(json!({"type": "join", "name": "ok"})).await;
    assert_eq!(c.recv().await["type"], "welcome");
    let cases: Vec<(WsMessage, &str)> = vec![
        (WsMessage::Text("{not json".into()), "malformed"),
        (
            WsMessage::Text(r#"{"type":"teleport"}"#.into()),
            "unknown_type",
        ),
        (
            WsMessage::Text(r#"{"type":"publish"}"#.into()),
            "invalid_frame",
        ),
        (
            WsMessage::Text(r#"{"type":"join","name":"again"}"#.into()),
            "already_joined",
        ),
        (
            WsMessage::Binary(vec![1u8, 2, 3].into()),
            "wrong_frame_kind",
        ),
        (
            WsMessage::Text(
                format!(r#"{{"type":"publish","body":"{}"}}"#, "x".repeat(20_000)).into(),
            ),
            "too_large",
        ),
        (
            WsMessage::Text(
                format!(r#"{{"type":"publish","body":"{}"}}"#, "x".repeat(9_000)).into(),
            ),
            "too_large",
        ),
    ];
    for (frame, code) in cases {
        c.send_raw(frame).await;
        let e = c.recv().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{e}"
        );
    }
    c.send(json!({"type": "publish", "body": "still here", "id": "ok-1"}))
        .await;
    let m = c.recv_type("message").await;
    assert_eq!(
        (m["body"].as_str(), m["offset"].as_u64()),
        (Some("still here"), Some(1)),
        "refused frames took no offset"
    );
    assert_eq!(c.recv_type("ack").await["offset"], 1);
}

pub async fn private_rooms_have_unguessable_ids(ctx: Arc<Ctx>) {
    let r = http()
        .post(format!("{}/api/rooms", ctx.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.unwrap();
    let id = body["room"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let url = format!("{}{}", ctx.ws, body["ws"].as_str().unwrap());
    let (mut a, w) = Client::join(&url, Enc::Json, "priv").await;
    assert_eq!(w["room"], id.as_str());
    a.send(json!({"type": "publish", "body": "secret"})).await;
    assert_eq!(a.recv_type("message").await["body"], "secret");
    // A second room gets a different id.
    let other: Value = http()
        .post(format!("{}/api/rooms", ctx.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(other["room"], body["room"]);
    // A made-up id is not a room.
    let forged = format!("{}/api/rooms/{}/ws", ctx.ws, "ab".repeat(32));
    let refused = Client::try_connect(&forged, Enc::Json, &[])
        .await
        .err()
        .expect("forged id refused");
    assert_eq!(refused.status, 404);
    assert_eq!(refused.body["error"]["code"], "room_not_found");
}

pub async fn cors_preflight_and_origin_checks(ctx: Arc<Ctx>) {
    let c = http();
    let ok = c
        .request(reqwest::Method::OPTIONS, format!("{}/api/rooms", ctx.http))
        .header("Origin", "http://localhost:8787")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://localhost:8787"
    );
    assert!(ok.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let bad = c
        .request(reqwest::Method::OPTIONS, format!("{}/api/rooms", ctx.http))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 403);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_not_allowed");
    // Simple requests from an allowed origin carry the CORS headers; others do not.
    let r = c
        .get(format!("{}/health", ctx.http))
        .header("Origin", "http://localhost:8787")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:8787"
    );
    let r = c
        .get(format!("{}/health", ctx.http))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Browsers do not preflight WebSockets, so the upgrade itself checks the origin.
    let url = format!("{}/api/rooms/{}/ws", ctx.ws, room("cors"));
    let refused = Client::try_connect(&url, Enc::Json, &[("Origin", "https://evil.example")])
        .await
        .err()
        .expect("foreign origin refused");
    assert_eq!(refused.status, 403);
    let own = ctx.http.clone();
    assert!(
        Client::try_connect(&url, Enc::Json, &[("Origin", own.as_str())])
            .await
            .is_ok()
    );
}

pub async fn demo_page_is_served(ctx: Arc<Ctx>) {
    let r = http().get(format!("{}/", ctx.http)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains("Roomkeeper"));
}

pub async fn deploy_dry_run_succeeds_for_every_environment(_ctx: Arc<Ctx>) {
    for env in [None, Some("staging"), Some("production")] {
        let out = roomkeeper_testkit::harness::TempDir::new("dry-run");
        let mut cmd = tokio::process::Command::new(root().join("node_modules/.bin/wrangler"));
        cmd.args(["deploy", "--dry-run", "--outdir"])
            .arg(&out.0)
            .current_dir(root());
        cmd.env("WRANGLER_SEND_METRICS", "false").env("CI", "true");
        if let Some(e) = env {
            cmd.args(["--env", e]);
        }
        let output = cmd.output().await.expect("run wrangler deploy --dry-run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "dry run for {env:?} failed:\n{text}"
        );
        assert!(
            text.contains("ROOM"),
            "bindings listed for {env:?}:\n{text}"
        );
        assert!(
            std::fs::read_dir(&out.0).unwrap().count() > 0,
            "bundle written for {env:?}"
        );
    }
}

pub async fn request_ids_reach_the_logs_and_secrets_do_not(ctx: Arc<Ctx>) {
    let id = format!("trace-{}", std::process::id());
    let r = http()
        .get(format!("{}/api/no-such-thing", ctx.http))
        .header("X-Request-Id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.headers()["x-request-id"],
        id.as_str(),
        "the caller's id is echoed"
    );
    let r = http()
        .get(format!("{}/health", ctx.http))
        .header("X-Request-Id", "bad id\"")
        .send()
        .await
        .unwrap();
    let fresh = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        fresh.len() == 32 && fresh.bytes().all(|b| b.is_ascii_hexdigit()),
        "a fresh id replaces a bad one: {fresh}"
    );
    // A token in a query string must never reach the logs.
    let token =
        roomkeeper_testkit::harness::token(&ctx.http, json!({"sub": "logcheck", "rooms": ["*"]}))
            .await;
    let url = format!("{}/api/rooms/{}/ws?token={token}", ctx.ws, room("logs"));
    let (c, _) = Client::join(&url, Enc::Json, "logger").await;
    c.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logs = std::fs::read_to_string(&ctx.log).unwrap_or_default();
        let found = logs.lines().any(|l| {
            l.contains(&format!("\"request_id\":\"{id}\"")) && l.contains("\"status\":404")
        });
        if found && logs.contains("\"event\":\"connect\"") {
            assert!(!logs.contains(&token), "a token leaked into the logs");
            let sig = token.rsplit('.').next().unwrap();
            assert!(
                !logs.contains(sig),
                "a token signature leaked into the logs"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "request id {id} not found in the logs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
