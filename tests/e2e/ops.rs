//! Operability: metrics that move by exactly the workload, throttled alerts, admin views.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{http, room, Client, Enc, Receiver, Server, TempDir, DEV_API_KEY};
use crate::Ctx;

async fn metrics(base: &str) -> Value {
    let r = http()
        .get(format!("{base}/api/metrics.json"))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

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
        &format!("{}/api/rooms/ops/ws", server.ws()),
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
