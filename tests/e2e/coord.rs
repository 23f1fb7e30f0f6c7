//! Coordination objects: lease locks with fencing tokens and FIFO waiters, rate limits checked
//! over HTTP and enforced on connections and API calls, against real workerd.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use roomkeeper::coordination::limiter::{self, GcraState, Policy};

use crate::Ctx;
use roomkeeper_testkit::harness::{http, room, Server, TempDir, DEV_API_KEY};

/// An HTTP answer: status, headers and JSON body (`Null` when there is none).
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(method: Method, url: &str, key: Option<&str>, body: Option<String>) -> Answer {
    let mut req = http().request(method, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

async fn post(url: &str, body: Value) -> Answer {
    call(Method::POST, url, Some(DEV_API_KEY), Some(body.to_string())).await
}

async fn post_raw(url: &str, body: &str) -> Answer {
    call(Method::POST, url, Some(DEV_API_KEY), Some(body.to_string())).await
}

async fn status(lock: &str) -> Value {
    let a = call(Method::GET, lock, Some(DEV_API_KEY), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until the lock's status satisfies `pred`, or panics after twenty seconds.
async fn status_until(lock: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(lock).await;
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "lock never reached the state: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one of the concurrent acquirers saw.
#[derive(Debug)]
enum Outcome {
    Granted,
    Refused { elapsed_ms: u64, wait_ms: u64 },
}

pub async fn twenty_concurrent_acquirers_take_turns_in_fifo_order(ctx: Arc<Ctx>) {
    let lock = format!("{}/api/locks/{}", ctx.http, room("fifo"));
    let inside = Arc::new(AtomicUsize::new(0));
    let grants: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let (go, _) = tokio::sync::watch::channel(false);
    let go = Arc::new(go);
    let short = |i: usize| i % 5 == 4;
    let mut tasks = Vec::new();
    for i in 0..20usize {
        let (lock, inside, grants, go) = (
            lock.clone(),
            Arc::clone(&inside),
            Arc::clone(&grants),
            Arc::clone(&go),
        );
        let wait_ms = if short(i) { 3_000 } else { 30_000 };
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{i:02}");
            let started = Instant::now();
            let a = post(
                &format!("{lock}/acquire"),
                json!({"owner": owner, "ttl_ms": 20_000, "wait_ms": wait_ms}),
            )
            .await;
            if a.status != 200 {
                assert_eq!((a.status, a.code()), (409, Some("lock_busy")), "{}", a.body);
                let elapsed_ms = started.elapsed().as_millis() as u64;
                return (
                    owner,
                    Outcome::Refused {
                        elapsed_ms,
                        wait_ms,
                    },
                );
            }
            assert_eq!(a.body["owner"], owner.as_str());
            let token = a.body["token"].as_u64().unwrap();
            // The critical section: nobody else may be in it.
            assert_eq!(
                inside.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            let first = {
                let mut g = grants.lock().unwrap();
                g.push((owner.clone(), token));
                g.len() == 1
            };
            if first {
                // Hold until every other caller is queued, then past the short waits.
                let mut rx = go.subscribe();
                rx.wait_for(|go| *go).await.unwrap();
                tokio::time::sleep(Duration::from_millis(4_000)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            assert_eq!(
                inside.fetch_sub(1, Ordering::SeqCst),
                1,
                "two holders at once"
            );
            let r = post(&format!("{lock}/release"), json!({"token": token})).await;
            assert_eq!(r.status, 200, "{}", r.body);
            (owner, Outcome::Granted)
        }));
    }
    let queued = status_until(&lock, |s| s["waiters"] == 19).await;
    let first_holder = queued["holder"].as_str().unwrap().to_string();
    let queue: Vec<String> = queued["waiter_owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    go.send_replace(true);
    let mut refused = Vec::new();
    for t in tasks {
        let (owner, outcome) = t.await.expect("acquirer task");
        if let Outcome::Refused {
            elapsed_ms,
            wait_ms,
        } = outcome
        {
            assert!(
                elapsed_ms >= wait_ms && elapsed_ms < wait_ms + 3_000,
                "{owner} refused after {elapsed_ms} ms of a {wait_ms} ms wait"
            );
            refused.push(owner);
        }
    }
    let grants = grants.lock().unwrap().clone();
    let order: Vec<&str> = grants.iter().map(|(o, _)| o.as_str()).collect();
    let is_short = |o: &str| short(o[1..].parse::<usize>().unwrap());
    // The first holder, then the queue in arrival order without the callers whose wait ran out.
    let expected: Vec<&str> = std::iter::once(first_holder.as_str())
        .chain(queue.iter().map(String::as_str).filter(|o| !is_short(o)))
        .collect();
    assert_eq!(order, expected, "grants follow the queue (FIFO)");
    let mut expected_refused: Vec<&String> = queue.iter().filter(|o| is_short(o)).collect();
    expected_refused.sort();
    refused.sort();
    assert_eq!(refused.iter().collect::<Vec<_>>(), expected_refused);
    let tokens: Vec<u64> = grants.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        tokens,
        (1..=grants.len() as u64).collect::<Vec<_>>(),
        "fencing tokens increase with every grant"
    );
    assert_eq!(grants.len() + refused.len(), 20);
    let end = status(&lock).await;
    assert_eq!(
        (end["held"].as_bool(), end["waiters"].as_u64()),
        (Some(false), Some(0))
    );
}

pub async fn an_unrenewed_lease_expires_and_passes_to_the_next_waiter(ctx: Arc<Ctx>) {
    let lock = format!("{}/api/locks/{}", ctx.http, room("expiry"));
    let a = post(
        &format!("{lock}/acquire"),
        json!({"owner": "a", "ttl_ms": 1_500}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let token_a = a.body["token"].as_u64().unwrap();
    let renewed = post(
        &format!("{lock}/renew"),
        json!({"token": token_a, "ttl_ms": 2_000}),
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_eq!(renewed.body["token"], token_a, "renewal keeps the token");
    let expires_a = renewed.body["expires_at_ms"].as_u64().unwrap();
    assert!(expires_a > a.body["expires_at_ms"].as_u64().unwrap());
    // `a` stops renewing; `b` waits for the lock and gets it when a's lease runs out.
    let started = Instant::now();
    let b = post(
        &format!("{lock}/acquire"),
        json!({"owner": "b", "ttl_ms": 5_000, "wait_ms": 10_000}),
    )
    .await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["token"], token_a + 1);
    let granted_at = b.body["expires_at_ms"].as_u64().unwrap() - 5_000;
    assert!(
        granted_at >= expires_a,
        "granted at {granted_at}, before a's lease ended at {expires_a}"
    );
    assert!(
        granted_at < expires_a + 1_500,
        "the grant came {} ms late",
        granted_at - expires_a
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = status(&lock).await;
    assert_eq!(
        (s["holder"].as_str(), s["waiters"].as_u64()),
        (Some("b"), Some(0))
    );
    // The expired holder's token is refused; so is one this lock never issued.
    for (op, body) in [
        ("renew", json!({"token": token_a, "ttl_ms": 5_000})),
        ("release", json!({"token": token_a})),
    ] {
        let r = post(&format!("{lock}/{op}"), body).await;
        assert_eq!((r.status, r.code()), (409, Some("stale_token")), "{op}");
    }
    for token in [0, token_a + 2, 999_999] {
        let r = post(&format!("{lock}/release"), json!({"token": token})).await;
        assert_eq!((r.status, r.code()), (409, Some("not_holder")), "{token}");
    }
    assert_eq!(
        status(&lock).await["holder"],
        "b",
        "refusals change nothing"
    );
    let r = post(&format!("{lock}/release"), json!({"token": token_a + 1})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&format!("{lock}/release"), json!({"token": token_a + 1})).await;
    assert_eq!(
        (r.status, r.code()),
        (409, Some("stale_token")),
        "released twice"
    );
    // Without waiting, a held lock answers at once with who holds it.
    let c = post(
        &format!("{lock}/acquire"),
        json!({"owner": "c", "ttl_ms": 5_000}),
    )
    .await;
    assert_eq!(c.status, 200);
    let d = post(
        &format!("{lock}/acquire"),
        json!({"owner": "d", "ttl_ms": 5_000}),
    )
    .await;
    assert_eq!((d.status, d.code()), (409, Some("lock_busy")));
    assert_eq!(
        (d.body["holder"].as_str(), d.body["expires_at_ms"].clone()),
        (Some("c"), c.body["expires_at_ms"].clone())
    );
}

pub async fn lock_bad_input_answers_documented_errors(ctx: Arc<Ctx>) {
    let _heavy = crate::HEAVY.lock().await;
    let name = room("badlock");
    let lock = format!("{}/api/locks/{name}", ctx.http);
    let acquire = format!("{lock}/acquire");
    let long_owner = "o".repeat(129);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (&acquire, "{".into(), 400, "invalid_json"),
        (&acquire, "".into(), 400, "invalid_json"),
        (
            &acquire,
            r#"{"owner":1,"ttl_ms":5000}"#.into(),
            400,
            "invalid_request",
        ),
        (
            &acquire,
            r#"{"owner":"a","ttl_ms":"5000"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            &acquire,
            r#"{"owner":"a","ttl_ms":-1}"#.into(),
            400,
            "invalid_request",
        ),
        (&acquire, r#"{"owner":"a"}"#.into(), 400, "invalid_request"),
        (
            &acquire,
            r#"{"owner":"a","ttl_ms":5000,"x":1}"#.into(),
            400,
            "invalid_request",
        ),
        (
            &acquire,
            r#"{"owner":"a","ttl_ms":999}"#.into(),
            422,
            "invalid_ttl",
        ),
        (
            &acquire,
            r#"{"owner":"a","ttl_ms":600001}"#.into(),
            422,
            "invalid_ttl",
        ),
        (
            &acquire,
            r#"{"owner":"a","ttl_ms":5000,"wait_ms":30001}"#.into(),
            422,
            "invalid_wait",
        ),
        (
            &acquire,
            r#"{"owner":"","ttl_ms":5000}"#.into(),
            422,
            "invalid_owner",
        ),
        (
            &acquire,
            r#"{"owner":"  ","ttl_ms":5000}"#.into(),
            422,
            "invalid_owner",
        ),
        (
            &acquire,
            r#"{"owner":"a\nb","ttl_ms":5000}"#.into(),
            422,
            "invalid_owner",
        ),
        (
            &acquire,
            json!({"owner": long_owner, "ttl_ms": 5000}).to_string(),
            422,
            "invalid_owner",
        ),
        (
            &acquire,
            json!({"owner": "x".repeat(70_000), "ttl_ms": 5000}).to_string(),
            413,
            "payload_too_large",
        ),
    ];
    let renew = format!("{lock}/renew");
    let release = format!("{lock}/release");
    let more: Vec<(&str, String, u16, &str)> = vec![
        (&renew, r#"{"token":1}"#.into(), 400, "invalid_request"),
        (
            &renew,
            r#"{"token":1,"ttl_ms":0}"#.into(),
            422,
            "invalid_ttl",
        ),
        (
            &renew,
            r#"{"token":1,"ttl_ms":5000}"#.into(),
            409,
            "not_holder",
        ),
        (&release, r#"{"token":"1"}"#.into(), 400, "invalid_request"),
        (&release, "[]".into(), 400, "invalid_request"),
        (&release, r#"{"token":1}"#.into(), 409, "not_holder"),
    ];
    for (url, body, want_status, want_code) in cases.into_iter().chain(more) {
        let a = post_raw(url, &body).await;
        assert_eq!(
            (a.status, a.code()),
            (want_status, Some(want_code)),
            "{url} {}: {}",
            &body[..body.len().min(80)],
            a.body
        );
        assert!(a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Refusals changed nothing: the lock is free and no token was spent.
    let s = status(&lock).await;
    assert_eq!(
        (s["held"].as_bool(), s["waiters"].as_u64()),
        (Some(false), Some(0))
    );
    // Keys, methods and names.
    let a = call(Method::GET, &lock, None, None).await;
    assert_eq!((a.status, a.code()), (401, Some("missing_api_key")));
    let a = call(Method::GET, &lock, Some("not-the-right-key-at-all"), None).await;
    assert_eq!((a.status, a.code()), (401, Some("invalid_api_key")));
    let a = call(Method::GET, &acquire, Some(DEV_API_KEY), None).await;
    assert_eq!((a.status, a.code()), (405, Some("method_not_allowed")));
    assert_eq!(a.header("Allow"), Some("POST"));
    let a = call(Method::POST, &lock, Some(DEV_API_KEY), Some("{}".into())).await;
    assert_eq!((a.status, a.header("Allow")), (405, Some("GET")));
    let a = call(Method::DELETE, &release, Some(DEV_API_KEY), None).await;
    assert_eq!(a.status, 405);
    let a = call(
        Method::GET,
        &format!("{}/api/locks/-bad", ctx.http),
        Some(DEV_API_KEY),
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_lock_name")));
    // The first valid acquire gets the first token.
    let a = post(&acquire, json!({"owner": "a", "ttl_ms": 30_000})).await;
    assert_eq!((a.status, a.body["token"].as_u64()), (200, Some(1)));
    // The queue is bounded: 64 waiters at most, then `queue_full`, and each waiter is refused
    // when its wait runs out.
    let mut waiters = Vec::new();
    for i in 0..64 {
        let acquire = acquire.clone();
        waiters.push(tokio::spawn(async move {
            post(
                &acquire,
                // Long enough that all 64 are queued together even on a loaded machine.
                json!({"owner": format!("q{i}"), "ttl_ms": 5_000, "wait_ms": 15_000}),
            )
            .await
        }));
    }
    status_until(&lock, |s| s["waiters"] == 64).await;
    let full = post(
        &acquire,
        json!({"owner": "late", "ttl_ms": 5_000, "wait_ms": 1_000}),
    )
    .await;
    assert_eq!((full.status, full.code()), (409, Some("queue_full")));
    for w in waiters {
        let a = w.await.unwrap();
        assert_eq!((a.status, a.code()), (409, Some("lock_busy")), "{}", a.body);
        assert_eq!(a.body["holder"], "a");
    }
}

/// `POST /api/limits/:policy/:key` with a JSON body.
async fn limit(base: &str, policy: &str, key: &str, cost: u32) -> Answer {
    post(
        &format!("{base}/api/limits/{policy}/{key}"),
        json!({ "cost": cost }),
    )
    .await
}

/// Asserts the server's answer is what the pure core decides for the same check at about the
/// same time: exact counts, times within `slack_ms` (the request's own latency).
fn assert_matches_core(a: &Answer, model: &limiter::Decision, name: &str, policy: &Policy) {
    let slack_ms = 2_000;
    assert_eq!(a.status, 200, "{}", a.body);
    let b = &a.body;
    assert_eq!(
        (
            b["allowed"].as_bool(),
            b["remaining"].as_u64(),
            b["limit"].as_u64(),
            b["policy"].as_str()
        ),
        (
            Some(model.allowed),
            Some(u64::from(model.remaining)),
            Some(u64::from(model.limit)),
            Some(name)
        ),
        "{b}"
    );
    for (field, want) in [
        ("reset_ms", model.reset_ms),
        ("retry_after_ms", model.retry_after_ms),
    ] {
        let got = b[field].as_u64().unwrap();
        assert!(got.abs_diff(want) <= slack_ms, "{field}: {got} vs {want}");
    }
    let w = policy.window_ms().div_ceil(1000);
    assert_eq!(
        a.header("RateLimit-Policy"),
        Some(format!("\"{name}\";q={};w={w}", policy.burst()).as_str())
    );
    let rl = a.header("RateLimit").unwrap();
    assert!(
        rl.starts_with(&format!("\"{name}\";r={};t=", model.remaining)),
        "{rl}"
    );
    match a.header("Retry-After") {
        Some(s) => {
            assert!(!model.allowed);
            let secs: u64 = s.parse().unwrap();
            assert_eq!(
                secs,
                b["retry_after_ms"].as_u64().unwrap().div_ceil(1000).max(1)
            );
        }
        None => assert!(model.allowed, "a refusal carries Retry-After"),
    }
}

/// Policies of the limiter test server: `slow` refills one request a day, so its counts are
/// exact whatever the timing; `api` is generous because the test itself calls the API.
const LIMITER_POLICIES: &str = r#"{"slow":{"rate":1,"period_ms":86400000,"burst":5},"quick":{"rate":2,"period_ms":1000,"burst":2},"api":{"rate":10000,"period_ms":60000,"burst":2000}}"#;

pub async fn limiter_refuses_as_the_core_predicts_and_survives_a_restart(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("limits");
    let vars = [("LIMIT_POLICIES", LIMITER_POLICIES)];
    let mut server = Server::start_with(&persist.0, &vars);
    let base = server.http();
    let slow = Policy::new(1, 86_400_000, 5).unwrap();
    let key = format!("user:hammer-{}", std::process::id());
    let mut model = GcraState::default();
    let mut allowed = 0;
    // Hammer the key: the server and the core agree on every answer.
    for cost in [1, 1, 0, 2, 1, 1, 3, 0, 1] {
        let a = limit(&base, "slow", &key, cost).await;
        let want = limiter::check(&mut model, &slow, now_ms(), cost).unwrap();
        assert_matches_core(&a, &want, "slow", &slow);
        allowed += u32::from(want.allowed && cost > 0) * cost;
    }
    assert_eq!(allowed, 5, "exactly the burst was spent");
    // Fencing tokens live in storage too: hold a lock across the restart.
    let lock = format!("/api/locks/{}", room("persist"));
    let a = post(
        &format!("{base}{lock}/acquire"),
        json!({"owner": "keeper", "ttl_ms": 120_000}),
    )
    .await;
    assert_eq!(a.body["token"], 1);
    // A caller waiting for it when workerd stops is lost with the process...
    let waiter = {
        let url = format!("{base}{lock}/acquire");
        tokio::spawn(async move {
            http()
                .post(url)
                .bearer_auth(DEV_API_KEY)
                .json(&json!({"owner": "ghost", "ttl_ms": 60_000, "wait_ms": 30_000}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    status_until(&format!("{base}{lock}"), |s| s["waiters"] == 1).await;
    // Restart workerd on the same state: the bucket is still empty, the lock still held.
    server.stop();
    assert!(
        waiter.await.unwrap().is_err(),
        "the waiter's connection ended"
    );
    let server = Server::start_with(&persist.0, &vars);
    let base = server.http();
    for cost in [0, 1] {
        let a = limit(&base, "slow", &key, cost).await;
        let want = limiter::check(&mut model, &slow, now_ms(), cost).unwrap();
        assert_matches_core(&a, &want, "slow", &slow);
        assert_eq!(
            a.body["remaining"], 0,
            "a restart does not refill the bucket"
        );
    }
    assert!(!limit(&base, "slow", &key, 1).await.body["allowed"]
        .as_bool()
        .unwrap());
    // Another key has its own bucket; an empty body costs 1.
    let other = post_raw(&format!("{base}/api/limits/slow/{key}-other"), "").await;
    assert_eq!(
        (
            other.body["allowed"].as_bool(),
            other.body["remaining"].as_u64()
        ),
        (Some(true), Some(4))
    );
    let s = status(&format!("{base}{lock}")).await;
    assert_eq!(s["holder"], "keeper");
    // ...and the restarted object abandoned it rather than grant the lock to nobody.
    assert_eq!(s["waiters"], 0, "{s}");
    let busy = post(
        &format!("{base}{lock}/acquire"),
        json!({"owner": "next", "ttl_ms": 5_000}),
    )
    .await;
    assert_eq!(busy.code(), Some("lock_busy"));
    let r = post(&format!("{base}{lock}/release"), json!({"token": 1})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let a = post(
        &format!("{base}{lock}/acquire"),
        json!({"owner": "next", "ttl_ms": 5_000}),
    )
    .await;
    assert_eq!(a.body["token"], 2, "tokens continue after a restart");
    // A refill that matters: waiting exactly `retry_after_ms` is always enough.
    let quick = Policy::new(2, 1_000, 2).unwrap();
    let qkey = format!("{key}-quick");
    for _ in 0..2 {
        assert_eq!(limit(&base, "quick", &qkey, 1).await.body["allowed"], true);
    }
    let refused = limit(&base, "quick", &qkey, 1).await;
    assert_eq!(refused.body["allowed"], false);
    let wait = refused.body["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 500, "{wait}");
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert!(refused
        .header("RateLimit-Policy")
        .is_some_and(|p| p == format!("\"quick\";q=2;w={}", quick.window_ms().div_ceil(1000))));
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(limit(&base, "quick", &qkey, 1).await.body["allowed"], true);
}

pub async fn limit_check_bad_input_answers_documented_errors(ctx: Arc<Ctx>) {
    let key = format!("user:bad-{}", std::process::id());
    let url = format!("{}/api/limits/publish/{key}", ctx.http);
    let peek = post_raw(&url, r#"{"cost":0}"#).await;
    assert_eq!(peek.status, 200, "{}", peek.body);
    let burst = peek.body["limit"].as_u64().unwrap();
    assert_eq!(
        peek.body["remaining"], burst,
        "a fresh key has its whole burst"
    );
    assert!(peek.header("Retry-After").is_none());
    let over = json!({ "cost": burst + 1 }).to_string();
    let cases: Vec<(String, String, u16, &str)> = vec![
        (url.clone(), "{".into(), 400, "invalid_json"),
        (
            url.clone(),
            r#"{"cost":"1"}"#.into(),
            400,
            "invalid_request",
        ),
        (url.clone(), r#"{"cost":-1}"#.into(), 400, "invalid_request"),
        (
            url.clone(),
            r#"{"cost":4294967296}"#.into(),
            400,
            "invalid_request",
        ),
        (
            url.clone(),
            r#"{"cost":1,"x":1}"#.into(),
            400,
            "invalid_request",
        ),
        (url.clone(), over, 422, "cost_exceeds_burst"),
        (
            format!("{}/api/limits/nope/{key}", ctx.http),
            "".into(),
            404,
            "unknown_policy",
        ),
        (
            format!("{}/api/limits/bad%20policy/{key}", ctx.http),
            "".into(),
            400,
            "invalid_policy_name",
        ),
        (
            format!("{}/api/limits/publish/{}", ctx.http, "k".repeat(129)),
            "".into(),
            400,
            "invalid_key",
        ),
    ];
    for (url, body, want_status, want_code) in cases {
        let a = post_raw(&url, &body).await;
        assert_eq!(
            (a.status, a.code()),
            (want_status, Some(want_code)),
            "{url} {body}: {}",
            a.body
        );
    }
    let a = post_raw(&url, "").await;
    assert_eq!(
        (a.body["allowed"].as_bool(), a.body["remaining"].as_u64()),
        (Some(true), Some(burst - 1)),
        "refused checks spent nothing; an empty body costs 1"
    );
    let a = call(Method::POST, &url, None, None).await;
    assert_eq!((a.status, a.code()), (401, Some("missing_api_key")));
    let a = call(Method::GET, &url, Some(DEV_API_KEY), None).await;
    assert_eq!((a.status, a.header("Allow")), (405, Some("POST")));
}

/// Opens a WebSocket to `url` from the loopback address `from`; `Err` holds the refusal's
/// status.
async fn connect_from(from: IpAddr, port: u16, url: &str) -> Result<impl Sized, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind a loopback source address");
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("tcp connect");
    let req = url.into_client_request().unwrap();
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("websocket from {from}: {e}"),
    }
}

pub async fn floods_are_limited_per_ip_and_per_api_key(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("floods");
    let policies = r#"{"connect":{"rate":1,"period_ms":60000,"burst":3},"api":{"rate":1,"period_ms":60000,"burst":4}}"#;
    let keys =
        "dev[admin]:roomkeeper-local-dev-api-key,ops[coordination]:roomkeeper-ops-test-api-key";
    let server = Server::start_with(
        &persist.0,
        &[("LIMIT_POLICIES", policies), ("API_KEYS", keys)],
    );
    let url = format!("{}/api/rooms/{}/ws", server.ws(), room("flood"));
    let flooder: IpAddr = [127, 0, 0, 2].into();
    // Ten connection attempts at once from one address: exactly the burst gets in.
    let attempts = (0..10).map(|_| connect_from(flooder, server.port, &url));
    let results = futures_util::future::join_all(attempts).await;
    let refusals: Vec<u16> = results
        .iter()
        .filter_map(|r| r.as_ref().err().copied())
        .collect();
    assert_eq!(results.len() - refusals.len(), 3, "the burst connected");
    assert!(refusals.iter().all(|s| *s == 429), "{refusals:?}");
    // The refusal in full, over plain HTTP from the same address.
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(flooder)
        .build()
        .unwrap();
    let r = client
        .get(url.replacen("ws://", "http://", 1))
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry: u64 = h("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        h("RateLimit-Policy").as_deref(),
        Some("\"connect\";q=3;w=180")
    );
    assert!(h("RateLimit").unwrap().starts_with("\"connect\";r=0;t="));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another address still connects, and still has its own burst.
    for _ in 0..3 {
        assert!(connect_from([127, 0, 0, 3].into(), server.port, &url)
            .await
            .is_ok());
    }
    drop(results);
    // API calls are limited per API key: `dev` spends its burst, `ops` is untouched.
    let lock = format!("{}/api/locks/{}", server.http(), room("api"));
    for _ in 0..4 {
        let a = call(Method::GET, &lock, Some(DEV_API_KEY), None).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let a = call(Method::GET, &lock, Some(DEV_API_KEY), None).await;
    assert_eq!((a.status, a.code()), (429, Some("rate_limited")));
    assert!(a.header("Retry-After").is_some());
    assert_eq!(a.header("RateLimit-Policy"), Some("\"api\";q=4;w=240"));
    // A rate-limit check is not charged to the `api` policy: `dev`, over its own budget,
    // still asks the limiter, and the answer is the checked policy's.
    let check = format!("{}/api/limits/connect/user:checked", server.http());
    for _ in 0..2 {
        let a = call(Method::POST, &check, Some(DEV_API_KEY), None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["policy"], "connect");
        assert_eq!(a.body["allowed"], true);
    }
    let a = call(
        Method::GET,
        &lock,
        Some("roomkeeper-ops-test-api-key"),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "another key has its own budget: {}", a.body);
    // An unauthenticated call is refused for its key before any limit is spent.
    let a = call(Method::GET, &lock, None, None).await;
    assert_eq!(a.status, 401);
}
