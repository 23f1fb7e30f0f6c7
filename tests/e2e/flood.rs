//! A bounded flood of unauthenticated requests of every public kind against a fresh server
//! with the default policies: what it leaves in storage (Durable Objects and D1 rows) stays
//! within the documented caps (docs/COORDINATION.md, README limits), however many requests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use crate::Ctx;
use roomkeeper_testkit::harness::{
    d1_count, http, root, Client, Enc, Server, TempDir, DEV_API_KEY,
};

/// Durable Objects with storage, by class: one SQLite file each under the persist folder.
fn objects(persist: &Path) -> BTreeMap<String, usize> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, usize>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "sqlite") {
                let class = path
                    .parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                if let Some((_, class)) = class.rsplit_once('-') {
                    *out.entry(class.to_string()).or_default() += 1;
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&persist.join("v3").join("do"), &mut out);
    out
}

/// One count from the SQLite storage of the single object of `class` (read with the setup's
/// Python, whose standard library has sqlite3), with the server stopped.
fn object_rows(persist: &Path, class: &str, sql: &str) -> u64 {
    let dir = std::fs::read_dir(persist.join("v3").join("do"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&format!("-{class}")))
        })
        .unwrap_or_else(|| panic!("no {class} objects"));
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
        .filter(|p| p.file_stem().is_some_and(|n| n != "metadata"))
        .collect();
    assert_eq!(files.len(), 1, "one {class} object: {files:?}");
    let out = std::process::Command::new(root().join(".venv/bin/python"))
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])",
        ])
        .arg(&files[0])
        .arg(sql)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

pub async fn an_unauthenticated_flood_leaves_bounded_state(_ctx: Arc<Ctx>) {
    let _heavy = crate::HEAVY.lock().await;
    let persist = TempDir::new("flood");
    // The built-in policies (the top level's local ones are generous for the other tests).
    let mut server = Server::start_with(&persist.0, &[("LIMIT_POLICIES", "{}")]);
    let (base, ws) = (server.http(), server.ws());
    // What the runtime keeps per namespace before any object is used.
    let before = objects(&persist.0);
    // Two addresses: one IPv4 and one IPv6 /64 (many of its addresses).
    let addresses = |i: usize| {
        if i.is_multiple_of(2) {
            "203.0.113.50".to_string()
        } else {
            format!("2001:db8:f1:d::{:x}", i + 1)
        }
    };
    let post = |path: &'static str, body: String, i: usize| {
        let (base, ip) = (base.clone(), addresses(i));
        async move {
            http()
                .post(format!("{base}{path}"))
                .header("CF-Connecting-IP", ip)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let mut statuses: BTreeMap<&str, BTreeMap<u16, usize>> = BTreeMap::new();
    let n = 400;
    for (kind, path) in [
        ("rooms", "/api/rooms"),
        ("leads", "/api/leads"),
        ("valuation", "/api/valuation"),
        ("webhooks", "/api/webhooks/payments"),
        ("dev_token", "/api/dev/token"),
    ] {
        let calls = (0..n).map(|i| {
            let body = match kind {
                "leads" => json!({"name": format!("Flood {i}"), "email": format!("flood{i}@example.com"), "source": "web"}).to_string(),
                "valuation" => json!({"lotsize": 4000 + i, "bedrooms": 3, "bathrms": 1, "stories": 2}).to_string(),
                "dev_token" => json!({"sub": format!("f{i}"), "rooms": ["flood"]}).to_string(),
                _ => "{}".to_string(),
            };
            post(path, body, i)
        });
        // 50 at a time: the flood is about how many requests, not how many at once (400
        // at once made the local runtime drop whole batches with wrangler's own 503s).
        let calls: Vec<_> = calls.collect();
        let mut calls = calls.into_iter().peekable();
        while calls.peek().is_some() {
            let wave: Vec<_> = calls.by_ref().take(50).collect();
            for s in futures_util::future::join_all(wave).await {
                *statuses.entry(kind).or_default().entry(s).or_default() += 1;
            }
        }
    }
    // Sockets: anonymous joins of fresh room names, and requests that are not upgrades.
    let sockets_started = std::time::Instant::now();
    for i in 0..100 {
        let url = format!("{ws}/api/rooms/flood-{i}/ws");
        let ip = addresses(i);
        let _ = Client::try_connect(&url, Enc::Json, &[("CF-Connecting-IP", &ip)]).await;
        let _ = http()
            .get(format!("{base}/api/rooms/flood-x{i}/ws"))
            .header("CF-Connecting-IP", ip)
            .send()
            .await;
    }
    let socket_secs = sockets_started.elapsed().as_secs();
    // Every socket is closed: once the rooms have counted the closes, the active-room
    // registry lists none.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v: serde_json::Value = http()
            .get(format!("{base}/api/admin/rooms"))
            .bearer_auth(DEV_API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["rooms"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rooms still listed: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    server.stop();
    // ...and it keeps no row for them either: a room's row goes when its last connection does.
    let registry = object_rows(&persist.0, "Metrics", "SELECT COUNT(*) FROM rooms");
    assert_eq!(
        registry, 0,
        "registry rows kept after every connection closed"
    );
    let after = objects(&persist.0);
    let count = |class: &str| {
        after.get(class).copied().unwrap_or(0) - before.get(class).copied().unwrap_or(0)
    };
    let report = format!("objects {before:?} -> {after:?}, answers {statuses:?}");
    // Two addresses, each with its per-policy buckets in one Limiter, and the `alerts`
    // policy's keys for the alert kinds the flood raised (refusals spiking).
    assert!(count("Limiter") <= 2 + 2, "{report}");
    // Rooms: per address, the `rooms` burst (5) of private rooms and the anonymous joins the
    // `connect` policy let through (a burst of 20, then 2 a second while the joins ran), and
    // the ops room the accepted leads are pushed to.
    let joins = 20 + 2 * (socket_secs as usize + 1);
    assert!(count("Room") <= 2 * (5 + joins) + 1, "{report}");
    assert_eq!(count("Lock"), 0, "{report}");
    // D1: the `leads` burst per address; unverified webhooks within their kept log.
    let leads = d1_count(&persist.0, "SELECT COUNT(*) AS n FROM leads");
    assert!(leads <= 2 * 5, "{leads} leads; {report}");
    let events = d1_count(&persist.0, "SELECT COUNT(*) AS n FROM webhook_events");
    assert!(events <= 100, "{events} webhook rows; {report}");
    let notifications = d1_count(&persist.0, "SELECT COUNT(*) AS n FROM notifications");
    assert!(
        notifications <= 2 * 5 * 2,
        "{notifications} notifications; {report}"
    );
    // Every kind was refused once its budget was spent: the flood did reach the limits.
    for kind in ["rooms", "leads", "valuation", "webhooks", "dev_token"] {
        assert!(
            statuses[kind].get(&429).copied().unwrap_or(0) > 0,
            "{kind} was never refused: {report}"
        );
    }
}
