//! Stateless services against real workerd: valuation (D1 + KV), leads, notifications with a
//! real local webhook receiver, and signed inbound webhooks.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Ctx;
use roomkeeper_testkit::harness::{http, Client, Enc, Receiver, Server, TempDir, DEV_API_KEY};

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
