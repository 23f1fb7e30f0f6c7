//! Operability: metrics that move by exactly the workload, throttled alerts, admin views.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Ctx;
use roomkeeper_testkit::harness::{
    http, metrics, room, Client, Enc, Receiver, Server, TempDir, DEV_API_KEY,
};

fn value(m: &Value, name: &str, labels: &str) -> i64 {
    m[name][labels].as_i64().unwrap_or(0)
}

/// Waits until every expected (name, labels) moved by exactly its delta since `before`.
async fn settle(base: &str, before: &Value, want: &[(&str, &str, i64)]) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = metrics(base).await;
        let moved: Vec<i64> = want
            .iter()
            .map(|(n, l, _)| value(&now, n, l) - value(before, n, l))
            .collect();
        let expected: Vec<i64> = want.iter().map(|(_, _, d)| *d).collect();
        if moved == expected {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics moved by {moved:?}, expected {expected:?}: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn metrics_move_by_exactly_the_workload(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("metrics");
    let server = Server::start(&persist.0);
    let base = server.http();
    let before = metrics(&base).await;
    for _ in 0..3 {
        assert_eq!(
            http()
                .get(format!("{base}/health"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            http()
                .get(format!("{base}/api/nowhere"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            404
        );
    }
    let url = format!("{}/api/rooms/{}/ws", server.ws(), room("metrics"));
    let (c, _) = Client::join(&url, Enc::Json, "counted").await;
    c.close().await;
    let lead = json!({"name": "Metric Lead", "email": "metric@example.com", "source": "web"});
    for _ in 0..2 {
        http()
            .post(format!("{base}/api/leads"))
            .json(&lead)
            .send()
            .await
            .unwrap();
    }
    let after = settle(
        &base,
        &before,
        &[
            (
                "roomkeeper_requests_total",
                r#"route="health",status="200""#,
                3,
            ),
            (
                "roomkeeper_requests_total",
                r#"route="unmatched",status="404""#,
                2,
            ),
            ("roomkeeper_refusals_total", r#"code="not_found""#, 2),
            (
                "roomkeeper_requests_total",
                r#"route="rooms.ws",status="101""#,
                1,
            ),
            (
                "roomkeeper_ws_connections_opened_total",
                r#"kind="room""#,
                1,
            ),
            (
                "roomkeeper_ws_connections_closed_total",
                r#"class="normal",kind="room""#,
                1,
            ),
            ("roomkeeper_leads_total", r#"outcome="created""#, 1),
            ("roomkeeper_leads_total", r#"outcome="duplicate""#, 1),
            (
                "roomkeeper_requests_total",
                r#"route="leads",status="201""#,
                1,
            ),
            (
                "roomkeeper_requests_total",
                r#"route="leads",status="200""#,
                1,
            ),
        ],
    )
    .await;
    // The Prometheus exposition of the same counters.
    let r = http()
        .get(format!("{base}/api/metrics"))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("# TYPE roomkeeper_requests_total counter"),
        "{text}"
    );
    let health = value(
        &after,
        "roomkeeper_requests_total",
        r#"route="health",status="200""#,
    );
    assert!(
        text.contains(&format!(
            "roomkeeper_requests_total{{route=\"health\",status=\"200\"}} {health}"
        )),
        "{text}"
    );
    // Unauthorised reads are refused.
    assert_eq!(
        http()
            .get(format!("{base}/api/metrics"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let r = http()
        .get(format!("{base}/api/metrics.json"))
        .bearer_auth("not-a-valid-key-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    drop(server);
}

pub async fn delivery_failures_raise_bounded_alerts(_ctx: Arc<Ctx>) {
    let failing = Receiver::start(None);
    let destinations = json!({"leads-incoming": format!("{}/in", failing.url)}).to_string();
    let persist = TempDir::new("alerts");
    let server = Server::start_with(
        &persist.0,
        &[
            ("NOTIFY_DESTINATIONS", destinations.as_str()),
            ("NOTIFY_MAX_ATTEMPTS", "1"),
        ],
    );
    let base = server.http();
    let (mut ops, _) = Client::join(
        &roomkeeper_testkit::harness::ops_feed_url(&server.http(), &server.ws()).await,
        Enc::Json,
        "ops",
    )
    .await;
    let notify = |n: usize| {
        let base = base.clone();
        async move {
            let data = json!({"lead_id": format!("ld_alert{n}"), "name": "Al Ert", "source": "web", "score": 10});
            let r = http()
                .post(format!("{base}/api/notify"))
                .bearer_auth(DEV_API_KEY)
                .json(&json!({"template": "new_lead", "data": data}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
        }
    };
    // One forced failure: exactly one alert reaches the ops room.
    notify(0).await;
    let mut alerts = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while alerts == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no alert reached the ops room"
        );
        if let Some(f) = ops.try_recv(Duration::from_secs(1)).await {
            if f["body"]["kind"] == "notification" && f["body"]["template"] == "alert" {
                alerts += 1;
            }
        }
    }
    // A burst of failures: alerts are throttled (policy `alerts`: 3 per 5 minutes).
    for n in 1..=8 {
        notify(n).await;
    }
    let m = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let m = metrics(&base).await;
            let total = value(
                &m,
                "roomkeeper_alerts_total",
                r#"kind="delivery_dead",outcome="sent""#,
            ) + value(
                &m,
                "roomkeeper_alerts_total",
                r#"kind="delivery_dead",outcome="suppressed""#,
            );
            if total == 9 {
                break m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every failure was considered for an alert: {m}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    assert_eq!(
        value(
            &m,
            "roomkeeper_alerts_total",
            r#"kind="delivery_dead",outcome="sent""#
        ),
        3,
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "roomkeeper_alerts_total",
            r#"kind="delivery_dead",outcome="suppressed""#
        ),
        6,
        "{m}"
    );
    // The ops room saw exactly the sent ones.
    while let Some(f) = ops.try_recv(Duration::from_secs(2)).await {
        if f["body"]["kind"] == "notification" && f["body"]["template"] == "alert" {
            alerts += 1;
        }
    }
    assert_eq!(alerts, 3, "bounded alerts in the ops room");
    assert_eq!(
        failing.received().len(),
        9,
        "every notification was attempted once"
    );
    drop(server);
}

pub async fn admin_lists_and_closes_rooms_with_an_audit_trail(ctx: Arc<Ctx>) {
    let r = room("admin");
    let (mut c, _) = Client::join(
        &format!("{}/api/rooms/{r}/ws", ctx.ws),
        Enc::Json,
        "watched",
    )
    .await;
    let listed = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v: Value = http()
                .get(format!("{}/api/admin/rooms", ctx.http))
                .bearer_auth(DEV_API_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["room"] == r.as_str())
            {
                break v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "room never listed: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let entry = listed["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["room"] == r.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["connections"], 1);
    let url = format!("{}/api/admin/rooms/{r}/close", ctx.http);
    assert_eq!(
        http()
            .post(&url)
            .json(&json!({"reason": "x"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let resp = http()
        .post(&url)
        .bearer_auth(DEV_API_KEY)
        .json(&json!({"reason": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = http()
        .post(&url)
        .bearer_auth(DEV_API_KEY)
        .json(&json!({"reason": "maintenance"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["closed"], 1);
    let closed = loop {
        let f = c.recv().await;
        if f["type"] == "__close" {
            break f;
        }
    };
    assert_eq!(
        (closed["code"].as_u64(), closed["reason"].as_str()),
        (Some(4000), Some("maintenance"))
    );
    let audit: Value = http()
        .get(format!("{}/api/admin/audit?subject=room:{r}", ctx.http))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let e = &audit["entries"][0];
    assert_eq!(
        (
            e["action"].as_str(),
            e["actor"].as_str(),
            e["detail"]["reason"].as_str()
        ),
        (Some("room_closed"), Some("api:dev"), Some("maintenance"))
    );
    let r = http()
        .get(format!("{}/api/admin/audit?limit=0", ctx.http))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

async fn admin_post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{base}{path}"))
        .bearer_auth(DEV_API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn admin_get(base: &str, path: &str) -> Value {
    let r = http()
        .get(format!("{base}{path}"))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// The newest audit entry about `subject`.
async fn last_audit(base: &str, subject: &str) -> Value {
    admin_get(base, &format!("/api/admin/audit?subject={subject}")).await["entries"][0].clone()
}

/// Admin: one connection closed with a reason (the others stay), voice and chat sessions
/// listed while open, and a lock overridden — the holder's token goes stale — with every
/// action in the audit trail.
pub async fn admin_closes_a_connection_lists_sessions_and_overrides_a_lock(ctx: Arc<Ctx>) {
    // One connection of a room, by the id the room lists.
    let r = room("one-conn");
    let url = format!("{}/api/rooms/{r}/ws", ctx.ws);
    let (mut keep, _) = Client::join(&url, Enc::Json, "keeper").await;
    let (mut gone, _) = Client::join(&url, Enc::Json, "leaver").await;
    let info = admin_get(&ctx.http, &format!("/api/rooms/{r}")).await;
    let list = info["connection_list"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{info}");
    let conn = list.iter().find(|c| c["name"] == "leaver").unwrap()["conn"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/admin/rooms/{r}/connections/{conn}/close");
    let (status, _) = admin_post(&ctx.http, &path, json!({"reason": ""})).await;
    assert_eq!(status, 400);
    let (status, v) = admin_post(&ctx.http, &path, json!({"reason": "spam"})).await;
    assert_eq!((status, v["closed"].as_bool()), (200, Some(true)), "{v}");
    let closed = loop {
        let f = gone.recv().await;
        if f["type"] == "__close" {
            break f;
        }
    };
    assert_eq!(
        (closed["code"].as_u64(), closed["reason"].as_str()),
        (Some(4000), Some("spam"))
    );
    keep.send(json!({"type": "publish", "body": "still here", "id": "k1"}))
        .await;
    assert_eq!(keep.recv_type("ack").await["id"], "k1");
    let (status, v) = admin_post(&ctx.http, &path, json!({"reason": "again"})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("connection_not_found"))
    );
    let e = last_audit(&ctx.http, &format!("room:{r}")).await;
    assert_eq!(
        (
            e["action"].as_str(),
            e["actor"].as_str(),
            e["detail"]["conn"].as_str(),
            e["detail"]["reason"].as_str()
        ),
        (
            Some("connection_closed"),
            Some("api:dev"),
            Some(conn.as_str()),
            Some("spam")
        )
    );

    // Voice and chat sessions are listed while they are open, and not after.
    let t = roomkeeper_testkit::harness::token(
        &ctx.http,
        json!({"sub": "listed-user", "rooms": ["*"]}),
    )
    .await;
    let sid = room("listed");
    let voice = Client::connect(
        &format!("{}/api/voice/{sid}/ws?token={t}", ctx.ws),
        Enc::Json,
    )
    .await;
    let chat = Client::connect(
        &format!("{}/api/chat/{sid}/ws?token={t}", ctx.ws),
        Enc::Json,
    )
    .await;
    let kinds = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["user"] == "listed-user" && s["session"] == sid.as_str())
            .map(|s| s["kind"].as_str().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin_get(&ctx.http, "/api/admin/sessions").await;
        if kinds(&v) == ["chat", "voice"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not listed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    voice.close().await;
    chat.close().await;
    loop {
        let v = admin_get(&ctx.http, "/api/admin/sessions").await;
        if kinds(&v).is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still listed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A lock override: the holder's lease ends, its token is stale, the audit says who and why.
    let lock = room("override");
    let (status, held) = admin_post(
        &ctx.http,
        &format!("/api/locks/{lock}/acquire"),
        json!({"owner": "stuck-job", "ttl_ms": 600_000}),
    )
    .await;
    assert_eq!(status, 200, "{held}");
    let token = held["token"].as_u64().unwrap();
    let path = format!("/api/admin/locks/{lock}/release");
    let (status, v) = admin_post(&ctx.http, &path, json!({"reason": "job hung"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["released"].as_bool(),
            v["holder"].as_str(),
            v["token"].as_u64()
        ),
        (Some(true), Some("stuck-job"), Some(token))
    );
    let (status, v) = admin_post(
        &ctx.http,
        &format!("/api/locks/{lock}/renew"),
        json!({"token": token, "ttl_ms": 1000}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("stale_token")),
        "{v}"
    );
    let (status, next) = admin_post(
        &ctx.http,
        &format!("/api/locks/{lock}/acquire"),
        json!({"owner": "next-job", "ttl_ms": 10_000}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert!(next["token"].as_u64().unwrap() > token);
    let e = last_audit(&ctx.http, &format!("lock:{lock}")).await;
    assert_eq!(
        (
            e["action"].as_str(),
            e["actor"].as_str(),
            e["detail"]["reason"].as_str(),
            e["detail"]["holder"].as_str()
        ),
        (
            Some("lock_override"),
            Some("api:dev"),
            Some("job hung"),
            Some("stuck-job")
        )
    );
}

/// A malformed setting is reported clearly — a JSON `config_error` naming the setting, with
/// the request id, and a log line — at the first request, never a panic or a blank 500; and
/// a short secret is refused the same way where it is needed.
pub async fn configuration_errors_are_reported_clearly(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("bad-config");
    let server = Server::start_with(
        &persist.0,
        &[("LIMIT_POLICIES", "{not json"), ("AUTH_SECRET", "short")],
    );
    // `Server::start_with` waits for `/health`; it answers, but as an error.
    for path in ["/health", "/api/rooms/lobby"] {
        let r = http()
            .get(format!("{}{path}", server.http()))
            .header("X-Request-Id", "cfg-check-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 500, "{path}");
        assert_eq!(r.headers()["x-request-id"], "cfg-check-1");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "config_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("LIMIT_POLICIES"), "{message}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.log_tail().contains("cfg-check-1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = server.log_tail();
    let line = log
        .lines()
        .find(|l| l.contains("cfg-check-1") && l.contains("config_error"))
        .unwrap_or_else(|| panic!("a config_error log line with the request id: {log}"));
    assert!(
        !line.contains("not json"),
        "the setting's value is not logged: {line}"
    );
    drop(server);

    // A secret that is too short: the routes that need it say so.
    let persist = TempDir::new("short-secret");
    let server = Server::start_with(&persist.0, &[("AUTH_SECRET", "short")]);
    let r = http()
        .post(format!("{}/api/dev/token", server.http()))
        .json(&json!({"sub": "x", "rooms": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "config_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AUTH_SECRET"),
        "{v}"
    );
    assert!(
        !v.to_string().contains("short\""),
        "the secret is not echoed: {v}"
    );
}

/// A burst of rate-limit refusals raises one `refusals_spiking` alert (threshold 5 here), not
/// one per refusal.
pub async fn refusal_spikes_raise_one_alert(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("spike");
    let policies = r#"{"connect":{"rate":1,"period_ms":60000,"burst":2}}"#;
    let server = Server::start_with(
        &persist.0,
        &[
            ("LIMIT_POLICIES", policies),
            ("REFUSAL_ALERT_THRESHOLD", "5"),
        ],
    );
    let before = metrics(&server.http()).await;
    let flooder = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut refused = 0;
    for _ in 0..12 {
        let r = flooder
            .get(format!("{}/api/rooms/{}/ws", server.http(), room("spike")))
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        refused += usize::from(r.status().as_u16() == 429);
    }
    assert_eq!(
        refused, 10,
        "the burst of 2 connected, the rest were refused"
    );
    settle(
        &server.http(),
        &before,
        &[
            ("roomkeeper_refusals_total", r#"code="rate_limited""#, 10),
            (
                "roomkeeper_alerts_total",
                r#"kind="refusals_spiking",outcome="sent""#,
                1,
            ),
        ],
    )
    .await;
}
