//! What objects do inside, seen from outside on a server of their own: storage schema
//! statements run once per object start (not per request), and an unexpected failure is
//! logged with the request id and its detail while the caller sees a plain 500.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Ctx;
use roomkeeper_testkit::harness::{
    d1_execute, http, metrics, room, Client, Enc, Server, TempDir, DEV_API_KEY,
};

const SCHEMA_RUNS: &str = "roomkeeper_object_schema_runs_total";

fn schema_runs(m: &Value, store: &str) -> i64 {
    m[SCHEMA_RUNS][format!("store=\"{store}\"")]
        .as_i64()
        .unwrap_or(0)
}

/// Forty requests to one room and ten chat messages to one conversation: the Room runs its
/// schema statements once, and the chat session's key-value table is created once — not once
/// per request or per get/put, as before.
pub async fn schema_statements_run_once_per_object(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("schema");
    let server = Server::start(&persist.0);
    let base = server.http();
    let before = metrics(&base).await;

    let r = room("schema");
    for i in 0..20 {
        let s = http()
            .post(format!("{base}/api/rooms/{r}/broadcast"))
            .bearer_auth(DEV_API_KEY)
            .json(&json!({"body": {"n": i}, "name": "schema"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(s, 200);
    }
    for path in ["history?limit=5", ""] {
        for _ in 0..10 {
            let s = http()
                .get(format!("{base}/api/rooms/{r}/{path}").trim_end_matches('/'))
                .bearer_auth(DEV_API_KEY)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(s, 200, "{path}");
        }
    }

    let url = format!("{}/api/chat/{}/ws", server.ws(), room("schema-chat"));
    let mut chat = Client::connect(&url, Enc::Json).await;
    for i in 0..10 {
        let id = format!("m{i}");
        chat.send(
            json!({"type": "message", "id": id, "text": "how much commission do you charge"}),
        )
        .await;
        loop {
            let f = chat.recv().await;
            if f["type"] == "reply_done" && f["id"] == id.as_str() {
                break;
            }
        }
    }
    chat.close().await;

    // The counts arrive in the background of each event: wait until both have moved, then
    // check they stay at one object start each (the ops room may start too: at most 2).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (room_runs, kv_runs) = loop {
        let now = metrics(&base).await;
        let moved = (
            schema_runs(&now, "room") - schema_runs(&before, "room"),
            schema_runs(&now, "kv") - schema_runs(&before, "kv"),
        );
        if (moved.0 >= 1 && moved.1 >= 1) || tokio::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = metrics(&base).await;
            break (
                schema_runs(&now, "room") - schema_runs(&before, "room"),
                schema_runs(&now, "kv") - schema_runs(&before, "kv"),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (1..=2).contains(&room_runs),
        "the room ran its schema {room_runs} times for 40 requests"
    );
    assert_eq!(
        kv_runs, 1,
        "the chat session created its table {kv_runs} times for 10 messages"
    );
}

/// A lead that meets a broken database: the caller gets a plain 500 with the request id in
/// `X-Request-Id` and no internal detail; the log line of that request carries the same id
/// and the database's error.
pub async fn internal_errors_are_logged_with_the_request_id(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("internal");
    // The migrations first (as the server's start does), then break the leads table.
    let status = std::process::Command::new("bash")
        .arg("scripts/db.sh")
        .arg(&persist.0)
        .current_dir(roomkeeper_testkit::harness::root())
        .status()
        .unwrap();
    assert!(status.success());
    d1_execute(&persist.0, "DROP TABLE leads");
    let server = Server::start(&persist.0);

    let lead = json!({"name": "Trace Me", "email": "trace@example.com", "source": "web"});
    let r = http()
        .post(format!("{}/api/leads", server.http()))
        .header("X-Request-Id", "trace-internal-0001")
        .json(&lead)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_string();
    assert_eq!(id, "trace-internal-0001");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert!(
        !body.to_string().contains("no such table"),
        "the detail must not reach the caller: {body}"
    );

    // The request's log line: its id, the 500 and the database's own words.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        // Error lines come coloured: the JSON object is from the first `{` to the last `}`.
        let line = log.lines().find_map(|l| {
            let v: Value = serde_json::from_str(l.get(l.find('{')?..=l.rfind('}')?)?).ok()?;
            (v["request_id"] == id.as_str() && v["event"] == "request").then_some(v)
        });
        if let Some(v) = line {
            assert_eq!(v["status"], 500, "{v}");
            assert_eq!(v["level"], "error", "{v}");
            let detail = v["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("no such table"), "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with request id {id}:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
