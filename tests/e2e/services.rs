//! Stateless services against real workerd: valuation (D1 + KV), leads, notifications with a
//! real local webhook receiver, and signed inbound webhooks.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Ctx;
use roomkeeper_testkit::harness::{
    d1_count, d1_execute, http, Client, Enc, Receiver, Server, TempDir, DEV_API_KEY,
};

async fn post_json(url: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = http().post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn house() -> Value {
    json!({
        "lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "driveway": true,
        "recroom": false, "fullbase": true, "gashw": false, "airco": false, "garagepl": 1,
        "prefarea": false
    })
}

pub async fn valuation_estimates_with_interval_and_comparables(ctx: Arc<Ctx>) {
    let url = format!("{}/api/valuation", ctx.http);
    let (s, v) = post_json(&url, None, &house()).await;
    assert_eq!(s, 200, "{v}");
    let (value, low, high) = (
        v["value"].as_u64().unwrap(),
        v["low"].as_u64().unwrap(),
        v["high"].as_u64().unwrap(),
    );
    assert!(low < value && value < high, "{v}");
    // The first sale of the data set has exactly these facts and sold for 42,000 (1987 CAD).
    assert!(
        (25_000..80_000).contains(&value),
        "plausible for Windsor 1987: {value}"
    );
    assert_eq!(v["level"], 0.8);
    assert!(!v["comparables"].as_array().unwrap().is_empty());
    assert!(v["model_version"].as_str().unwrap().starts_with("rv1-"));
    // The same facts again come from the KV cache.
    let (_, again) = post_json(&url, None, &house()).await;
    assert_eq!(again["cached"], true);
    assert_eq!(again["value"], v["value"]);
}

pub async fn valuation_refuses_bad_and_out_of_range_input(ctx: Arc<Ctx>) {
    let url = format!("{}/api/valuation", ctx.http);
    let mut far = house();
    far["lotsize"] = json!(900_000);
    far["bedrooms"] = json!(15);
    let (s, v) = post_json(&url, None, &far).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("outside_fitted_range")),
        "{v}"
    );
    let fields: Vec<&str> = v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"lotsize") && fields.contains(&"bedrooms"),
        "{v}"
    );
    let mut missing = house();
    missing.as_object_mut().unwrap().remove("stories");
    let (s, v) = post_json(&url, None, &missing).await;
    assert_eq!(
        (s, v["error"]["fields"][0]["code"].as_str()),
        (422, Some("missing_field")),
        "{v}"
    );
    let r = http().post(&url).body("{nope").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

pub async fn valuation_sales_import_reports_bad_rows_and_refits(_ctx: Arc<Ctx>) {
    // Its own server: importing changes the model every other test values with.
    let persist = TempDir::new("import");
    let server = Server::start(&persist.0);
    let url = format!("{}/api/valuation/sales", server.http());
    let (_, before) = post_json(&format!("{}/api/valuation", server.http()), None, &house()).await;
    let csv = "price,lotsize,bedrooms,bathrms,stories,driveway,recroom,fullbase,gashw,airco,garagepl,prefarea\n\
               61000,5000,3,1,2,yes,no,no,no,no,0,no\n\
               oops,5000,3,1,2,yes,no,no,no,no,0,no\n\
               64000,5200,3,1,2,yes,no,maybe,no,no,0,no\n\
               66000,5400,3,2,2,yes,no,no,no,yes,1,no\n";
    let r = http()
        .post(&url)
        .bearer_auth(DEV_API_KEY)
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["imported"], 2, "{v}");
    let lines: Vec<u64> = v["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4], "bad rows reported by line: {v}");
    assert_ne!(
        v["model_version"], before["model_version"],
        "the model refits when sales change"
    );
    // JSON rows; all bad → 422 and nothing stored.
    let (s, v) = post_json(&url, Some(DEV_API_KEY), &json!([{"price": -1}])).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("no_valid_rows")),
        "{v}"
    );
    let (s, _) = post_json(&url, None, &json!([])).await;
    assert_eq!(s, 401, "importing needs an API key");
}

async fn get(url: &str) -> (u16, Value) {
    let r = http()
        .get(url)
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `url` until `pred` holds on its JSON (the enrichment and delivery run after the
/// response, through the queue).
async fn eventually(url: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = get(url).await;
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A lead posted over HTTP is stored, de-duplicated on repeat, valued, scored, delivered to
/// the right webhook with the right payload, and appears in the ops room; a receiver that
/// fails twice still gets exactly one successful delivery; one that always fails ends dead.
pub async fn lead_flow_end_to_end(_ctx: Arc<Ctx>) {
    let hot = Receiver::start(Some(0));
    let incoming = Receiver::start(Some(2));
    let ops = Receiver::start(None);
    let destinations = json!({
        "hot-leads": format!("{}/hot", hot.url),
        "leads-incoming": format!("{}/incoming", incoming.url),
        "ops": format!("{}/ops", ops.url),
    })
    .to_string();
    let persist = TempDir::new("leads");
    let server = Server::start_with(
        &persist.0,
        &[
            ("NOTIFY_DESTINATIONS", destinations.as_str()),
            ("NOTIFY_BACKOFF_BASE_MS", "1000"),
            ("NOTIFY_MAX_ATTEMPTS", "3"),
        ],
    );
    let base = server.http();
    let (mut ops_room, _) = Client::join(
        &roomkeeper_testkit::harness::ops_feed_url(&server.http(), &server.ws()).await,
        Enc::Json,
        "ops-watcher",
    )
    .await;

    // A complete, urgent lead with property facts: valued, and hot (84 points).
    let lead = json!({
        "name": "Jane <b>Doe</b>", "email": "Jane.Doe@Example.COM", "phone": "(519) 555-0142",
        "address": "12 Riverside Dr, Windsor, ON", "timeline": "now", "source": "web",
        "notes": "Wants a quick sale", "property": house(),
    });
    let (s, created) = post_json(&format!("{base}/api/leads"), None, &lead).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // The same person again (email differently cased): the existing lead, flagged.
    let mut again = lead.clone();
    again["email"] = json!("jane.doe@example.com");
    let (s, dup) = post_json(&format!("{base}/api/leads"), None, &again).await;
    assert_eq!(
        (s, dup["id"].as_str(), dup["duplicate"].as_bool()),
        (200, Some(id.as_str()), Some(true))
    );

    let stored = eventually(&format!("{base}/api/leads/{id}"), "enrichment", |v| {
        v["enriched"] == true
    })
    .await;
    assert_eq!(stored["phone"], "+15195550142", "normalised to E.164");
    assert_eq!(
        stored["email"], "Jane.Doe@example.com",
        "domain lower-cased"
    );
    assert_eq!(
        (stored["score"].as_u64(), stored["channel"].as_str()),
        (Some(84), Some("hot-leads")),
        "{stored}"
    );
    let value = stored["estimated_value"].as_u64().expect("valued");
    assert_eq!(stored["valuation"]["value"].as_u64(), Some(value));
    let actions: Vec<&str> = stored["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["created", "enriched"]);

    let got = hot
        .wait_for(Duration::from_secs(30), |r| !r.is_empty())
        .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hot");
    let text = got[0].body["text"].as_str().unwrap();
    assert!(text.contains("Hot lead"), "{text}");
    assert!(
        !got[0].body.to_string().contains("<b>"),
        "user markup is escaped: {}",
        got[0].body
    );
    assert!(got[0].headers.iter().any(|(k, _)| k == "idempotency-key"));

    // The ops room saw the lead and its notification.
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let f = ops_room.recv_type("message").await;
        kinds.push((
            f["body"]["kind"].as_str().unwrap().to_string(),
            f["body"]["id"].as_str().unwrap_or("").to_string(),
        ));
    }
    assert!(
        kinds.contains(&("lead".to_string(), id.clone())),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|(k, _)| k == "notification"), "{kinds:?}");

    // A browsing, email-only lead goes to leads-incoming, whose receiver fails twice.
    let (s, cold) = post_json(
        &format!("{base}/api/leads"),
        None,
        &json!({"name": "Sam Cold", "email": "sam@example.org", "address": "1 Main St", "timeline": "browsing", "source": "referral"}),
    )
    .await;
    assert_eq!(s, 201);
    let cold_id = cold["id"].as_str().unwrap();
    let cold_lead = eventually(&format!("{base}/api/leads/{cold_id}"), "enrichment", |v| {
        v["enriched"] == true
    })
    .await;
    assert_eq!(cold_lead["channel"], "leads-incoming");
    let got = incoming
        .wait_for(Duration::from_secs(40), |r| {
            r.iter().any(|x| x.status == 200)
        })
        .await;
    assert_eq!(
        got.iter().filter(|r| r.status == 200).count(),
        1,
        "exactly one successful delivery"
    );
    assert_eq!(got.len(), 3, "two failures, then success");

    // An alert to ops, whose receiver always fails: dead after NOTIFY_MAX_ATTEMPTS.
    let (s, alert) = post_json(
        &format!("{base}/api/notify"),
        Some(DEV_API_KEY),
        &json!({"template": "alert", "data": {"id": "disk-1", "severity": "warning", "title": "Disk <80%>"}}),
    )
    .await;
    assert_eq!(s, 202, "{alert}");
    let nid = alert["id"].as_str().unwrap();
    let dead = eventually(&format!("{base}/api/notify/{nid}"), "dead-lettering", |v| {
        v["status"] == "dead"
    })
    .await;
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["history"].as_array().unwrap().len(), 3);
    assert_eq!(ops.received().len(), 3);
    // Posting the same alert again is recognised, not re-sent.
    let (_, again) = post_json(
        &format!("{base}/api/notify"),
        Some(DEV_API_KEY),
        &json!({"template": "alert", "data": {"id": "disk-1", "severity": "warning", "title": "Disk <80%>"}}),
    )
    .await;
    assert_eq!(
        (again["id"].as_str(), again["duplicate"].as_bool()),
        (Some(nid), Some(true))
    );
    drop(server);
}

pub async fn lead_validation_errors_store_nothing(ctx: Arc<Ctx>) {
    let url = format!("{}/api/leads", ctx.http);
    let (s, v) = post_json(&url, None, &json!({"name": "Bad Contact", "email": "not-an-email", "phone": "12", "source": "web", "timeline": "someday"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_lead")),
        "{v}"
    );
    let fields: Vec<&str> = v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"email") && fields.contains(&"phone") && fields.contains(&"timeline"),
        "every error at once: {v}"
    );
    let (s, v) = post_json(&url, None, &json!({"source": "web"})).await;
    assert_eq!(s, 422);
    let fields: Vec<&str> = v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"name") && fields.contains(&"contact"),
        "{v}"
    );
    let mut bad_property = house();
    bad_property["bedrooms"] = json!("lots");
    let (s, v) = post_json(
        &url,
        None,
        &json!({"name": "P", "email": "p@example.com", "source": "web", "property": bad_property}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["fields"][0]["field"].as_str()),
        (422, Some("property.bedrooms")),
        "{v}"
    );
    let r = http()
        .post(&url)
        .header("Content-Type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http()
        .post(&url)
        .json(&json!({"name": "x".repeat(20_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let (_, listed) = get(&format!("{url}?limit=200")).await;
    let names: Vec<&str> = listed["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"Bad Contact") && !names.contains(&"P"),
        "refused leads were not stored: {names:?}"
    );
}

pub async fn leads_list_patch_and_export(ctx: Arc<Ctx>) {
    let url = format!("{}/api/leads", ctx.http);
    let tag = format!("{}", std::process::id());
    let mut ids = Vec::new();
    for i in 0..3 {
        let (s, v) = post_json(
            &url,
            None,
            &json!({
                "name": format!("=HYPERLINK(\"x\"), Lister {i} \"quoted\""),
                "email": format!("lister{i}-{tag}@example.net"), "source": "web",
            }),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Pages of 2, newest first, following the cursor.
    let (s, p1) = get(&format!("{url}?limit=2")).await;
    assert_eq!(s, 200);
    assert_eq!(p1["leads"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().expect("more pages");
    let (_, p2) = get(&format!("{url}?limit=2&cursor={cursor}")).await;
    let first_ids: Vec<&str> = p1["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert!(
        p2["leads"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| !first_ids.contains(&l["id"].as_str().unwrap())),
        "no overlap between pages"
    );
    let (s, v) = get(&format!("{url}?limit=0")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_query")),
        "{v}"
    );
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "listing needs an API key");
    // Status changes follow the lifecycle and are audited.
    let patch = |id: &str, status: &str| {
        http()
            .patch(format!("{url}/{id}"))
            .bearer_auth(DEV_API_KEY)
            .json(&json!({"status": status}))
            .send()
    };
    let r = patch(&ids[0], "contacted").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "contacted");
    assert!(v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "status" && a["actor"] == "api:dev"));
    let r = patch(&ids[0], "won").await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        409,
        "contacted → won skips qualification"
    );
    let r = patch(&ids[0], "sold").await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let (s, _) = get(&format!("{url}/ld_doesnotexist")).await;
    assert_eq!(s, 404);
    // CSV: quoted correctly, formulas neutralised.
    let r = http()
        .get(format!("{url}/export.csv"))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    assert!(
        csv.starts_with("id,created_at_ms,name,email,phone"),
        "{csv}"
    );
    let row = csv
        .lines()
        .find(|l| l.contains(&ids[1]))
        .expect("lead exported");
    assert!(
        row.contains("\"'=HYPERLINK(\"\"x\"\"), Lister 1 \"\"quoted\"\"\""),
        "{row}"
    );
}

pub async fn signed_webhooks_become_payment_notifications(ctx: Arc<Ctx>) {
    const SECRET: &[u8] = b"roomkeeper-local-webhook-secret";
    let url = format!("{}/api/webhooks/payments", ctx.http);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let event = json!({"type": "payment.succeeded", "id": format!("evt_{}", std::process::id()), "amount": 199950, "currency": "usd", "customer": "cus_42"}).to_string();
    let send = |ts: u64, sig: String, body: String| {
        http()
            .post(&url)
            .header("X-Roomkeeper-Timestamp", ts.to_string())
            .header("X-Roomkeeper-Signature", sig)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let sig = roomkeeper::services::notify::sign(SECRET, now, event.as_bytes());
    let r = send(now, sig.clone(), event.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    let nid = v["notification"].as_str().unwrap().to_string();
    let (s, n) = get(&format!("{}/api/notify/{nid}", ctx.http)).await;
    assert_eq!((s, n["template"].as_str()), (200, Some("payment")), "{n}");
    // The same delivery again (a provider retry): recognised, not processed twice.
    let r = send(now, sig.clone(), event.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    // Tampered body, wrong secret, stale timestamp, missing headers: refused, never processed.
    let r = send(now, sig.clone(), event.replace("199950", "1"))
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap()["error"]["code"]
                .as_str()
                .map(String::from)
        ),
        (401, Some("bad_signature".into()))
    );
    let old = now - 3600;
    let r = send(
        old,
        roomkeeper::services::notify::sign(SECRET, old, event.as_bytes()),
        event.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap()["error"]["code"]
                .as_str()
                .map(String::from)
        ),
        (401, Some("stale_timestamp".into()))
    );
    let r = http().post(&url).body(event.clone()).send().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap()["error"]["code"]
                .as_str()
                .map(String::from)
        ),
        (401, Some("missing_signature".into()))
    );
    let r = http()
        .post(format!("{}/api/webhooks/nobody", ctx.http))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// A lead whose stored status this version does not know is never read as `new`: changing
/// it answers 409 `unknown_stored_status` and writes nothing.
pub async fn an_unknown_stored_status_is_refused_not_read_as_new(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("lead-status");
    let mut server = Server::start(&persist.0);
    let (s, v) = post_json(
        &format!("{}/api/leads", server.http()),
        None,
        &json!({"name": "Odd Status", "email": format!("odd-{}@example.net", std::process::id()), "source": "web"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    server.stop();
    d1_execute(
        &persist.0,
        &format!("UPDATE leads SET status = 'archived' WHERE id = '{id}'"),
    );
    let server = Server::start(&persist.0);
    let url = format!("{}/api/leads/{id}", server.http());
    let r = http()
        .patch(&url)
        .bearer_auth(DEV_API_KEY)
        .json(&json!({"status": "contacted"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("unknown_stored_status")),
        "{v}"
    );
    let (_, lead) = get(&url).await;
    assert_eq!(lead["status"], "archived", "{lead}");
    assert!(
        !lead["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "status"),
        "nothing audited: {lead}"
    );
}

/// A flood of badly signed webhooks is refused and counted, and the log of refusals in D1
/// stays bounded by `MAX_REJECTED_WEBHOOKS` (the newest are kept).
pub async fn unverified_webhooks_keep_a_bounded_log(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("webhook-flood");
    let mut server = Server::start(&persist.0);
    let url = format!("{}/api/webhooks/payments", server.http());
    let max = roomkeeper::services::notify::MAX_REJECTED_WEBHOOKS;
    let total = max + 30;
    let client = http();
    for i in 0..total {
        let r = client
            .post(&url)
            .header("X-Roomkeeper-Timestamp", "1700000000")
            .header("X-Roomkeeper-Signature", format!("v1={:064x}", i))
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    // Every refusal is counted (metrics are flushed after the response: wait for them).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = roomkeeper_testkit::harness::metrics(&server.http()).await;
        let counted = m["roomkeeper_webhook_events_total"][r#"outcome="bad_signature""#]
            .as_u64()
            .unwrap_or(0);
        if counted == total as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{counted} of {total} refusals counted: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop();
    let rows = d1_count(
        &persist.0,
        "SELECT COUNT(*) AS n FROM webhook_events WHERE verified = 0",
    );
    assert_eq!(
        rows, max as u64,
        "refused webhooks stored: the newest {max} are kept, no more"
    );
}

/// Two concurrent status changes of one lead that cannot both apply (new → qualified and
/// new → spam): exactly one wins (200), the other is a 409 (`status_conflict` when it lost
/// the compare-and-set, `invalid_transition` when it ran second), and only the winner is
/// audited.
pub async fn racing_status_changes_audit_only_the_winner(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("lead-race");
    let server = Server::start(&persist.0);
    let base = server.http();
    let tag = format!("{}", std::process::id());
    let mut ids = Vec::new();
    for i in 0..10 {
        let (s, v) = post_json(
            &format!("{base}/api/leads"),
            None,
            &json!({"name": format!("Racer {i}"), "email": format!("racer{i}-{tag}@example.net"), "source": "web"}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let patch = |id: String, status: &'static str| {
        let url = format!("{base}/api/leads/{id}");
        async move {
            let r = http()
                .patch(url)
                .bearer_auth(DEV_API_KEY)
                .json(&json!({ "status": status }))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let races = ids.iter().map(|id| {
        futures_util::future::join(patch(id.clone(), "qualified"), patch(id.clone(), "spam"))
    });
    let outcomes = futures_util::future::join_all(races).await;
    for (id, (a, b)) in ids.iter().zip(outcomes) {
        let wins = [a.0, b.0].iter().filter(|s| **s == 200).count();
        assert_eq!(wins, 1, "exactly one change wins: {a:?} {b:?}");
        let loser = if a.0 == 200 { &b } else { &a };
        assert_eq!(loser.0, 409, "{loser:?}");
        let code = loser.1["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code == "status_conflict" || code == "invalid_transition",
            "{loser:?}"
        );
        let (_, lead) = get(&format!("{base}/api/leads/{id}")).await;
        let audited = lead["audit"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "status")
            .count();
        assert_eq!(audited, 1, "only the winning change is audited: {lead}");
    }
}

/// A sales import that takes the table past what one fit may use (`MAX_FIT_SALES`) leaves
/// estimates answering: the model is fitted on the newest `MAX_FIT_SALES` sales.
pub async fn imports_past_the_fit_cap_keep_estimates_answering(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("import-cap");
    let server = Server::start(&persist.0);
    let base = server.http();
    // The demo data has 546 sales; 4,460 more (the issue's import) is well past what one fit
    // may use.
    let mut csv = String::from(
        "price,lotsize,bedrooms,bathrms,stories,driveway,recroom,fullbase,gashw,airco,garagepl,prefarea\n",
    );
    for i in 0..4_460u64 {
        let lotsize = 2_500 + (i * 37) % 7_000;
        let bedrooms = 2 + i % 3;
        let bathrms = 1 + i % 2;
        let stories = 1 + i % 3;
        let garagepl = i % 3;
        let yn = |b: bool| if b { "yes" } else { "no" };
        let price = 20_000 + lotsize * 6 + bedrooms * 2_500 + bathrms * 9_000 + (i * 7_919) % 9_000;
        csv.push_str(&format!(
            "{price},{lotsize},{bedrooms},{bathrms},{stories},{},{},{},no,{},{garagepl},{}\n",
            yn(i % 5 != 0),
            yn(i % 4 == 0),
            yn(i % 3 == 0),
            yn(i % 6 == 0),
            yn(i % 7 == 0),
        ));
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(240))
        .build()
        .unwrap();
    let r = client
        .post(format!("{base}/api/valuation/sales"))
        .bearer_auth(DEV_API_KEY)
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["imported"], 4_460, "{v}");
    assert_eq!(
        v["sales"].as_u64(),
        Some(roomkeeper::services::valuation::MAX_FIT_SALES as u64),
        "fitted on the newest MAX_FIT_SALES sales: {v}"
    );
    let r = client
        .post(format!("{base}/api/valuation"))
        .json(&house())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "estimates still answer past the cap: {v}");
}

/// Sends a chunked body (no Content-Length) of `size` bytes over raw TCP and never ends it;
/// a body read with its cap applied while streaming is refused (413) as soon as the cap is
/// passed, without waiting for the end. Returns the status and the response text.
async fn chunked_without_end(
    base: &str,
    method: &str,
    path: &str,
    key: bool,
    size: usize,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let auth = if key {
        format!("Authorization: Bearer {DEV_API_KEY}\r\n")
    } else {
        String::new()
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 8 * 1024];
    let mut sent = 0;
    while sent < size {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if sock.write_all(&frame).await.is_err() {
            break; // the server answered and closed early
        }
        sent += chunk.len();
    }
    let _ = sock.flush().await;
    // No terminating chunk: only a reader that stops at the cap can answer now.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut part = [0u8; 4096];
        loop {
            match sock.read(&mut part).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&part[..n]);
                    if String::from_utf8_lossy(&buf).contains("payload_too_large") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    // Now end the body, so the connection closes cleanly for the proxy in front of workerd.
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let _ = sock.flush().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(
        read.is_ok() || !text.is_empty(),
        "{method} {path}: no answer while the body was still open (read whole before any check)"
    );
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Every services route caps its body while reading it: a chunked body over the route's
/// documented limit gets 413 `payload_too_large` before it ends.
pub async fn services_bodies_are_capped_while_streaming(_ctx: Arc<Ctx>) {
    // Its own server: wrangler's local proxy answers the request after an unfinished body
    // with a 503 of its own, which must not reach the tests sharing the default server.
    let persist = TempDir::new("streaming");
    let server = Server::start(&persist.0);
    let base = server.http();
    let (_, created) = post_json(
        &format!("{base}/api/leads"),
        None,
        &json!({"name": "Streamer", "email": format!("streamer-{}@example.net", std::process::id()), "source": "web"}),
    )
    .await;
    let lead = created["id"].as_str().unwrap().to_string();
    let routes: Vec<(&str, String, bool, usize)> = vec![
        (
            "POST",
            "/api/leads".into(),
            false,
            roomkeeper::services::leads::MAX_LEAD_BODY_BYTES,
        ),
        (
            "PATCH",
            format!("/api/leads/{lead}"),
            true,
            roomkeeper::http::bodies::MAX_API_BODY_BYTES,
        ),
        (
            "POST",
            "/api/notify".into(),
            true,
            roomkeeper::http::bodies::MAX_API_BODY_BYTES,
        ),
        (
            "POST",
            "/api/webhooks/payments".into(),
            false,
            roomkeeper::services::notify::MAX_EVENT_BODY_BYTES,
        ),
        (
            "POST",
            "/api/valuation".into(),
            false,
            roomkeeper::http::bodies::MAX_API_BODY_BYTES,
        ),
        (
            "POST",
            "/api/valuation/sales".into(),
            true,
            roomkeeper::services::valuation::MAX_IMPORT_BYTES,
        ),
    ];
    for (method, path, key, limit) in routes {
        let mut answer = chunked_without_end(&base, method, &path, key, limit + 16 * 1024).await;
        // wrangler's local proxy sometimes answers a request that follows a refused unfinished
        // body with its own 503 "restarted mid-request" (never the Worker's answer): retry it.
        for _ in 0..3 {
            if !(answer.0 == 503 && answer.1.contains("restarted mid-request")) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            answer = chunked_without_end(&base, method, &path, key, limit + 16 * 1024).await;
        }
        let (status, text) = answer;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(status, 413, "{method} {path}: {text}");
        assert!(
            text.contains("payload_too_large"),
            "{method} {path}: {text}"
        );
    }
}
