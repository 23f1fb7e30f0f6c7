//! The edges an unauthenticated caller reaches: per-address budgets on every public route
//! (IPv6 callers by their /64), nothing charged for a socket request that is not one, and the
//! token rules (`nbf`, `TOKEN_MAX_TTL_S`), against real workerd (the strict server, whose
//! public-route policies are the defaults).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::Ctx;
use roomkeeper_testkit::harness::{http, room, Client, Enc};

/// The dev `AUTH_SECRET` of `wrangler.toml`'s top level, which both test servers use.
const DEV_SECRET: &[u8] = b"roomkeeper-local-dev-secret";

/// A documentation-range address no other test uses, so each test has fresh budgets.
fn fresh_ipv4() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + (std::process::id() % 200) * 256;
    format!("198.51.{}.{}", (n / 256) % 256, n % 256)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign_token(claims: &Value) -> String {
    use base64::Engine;
    use hmac::Mac;
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let input = format!(
        "{}.{}",
        e(br#"{"alg":"HS256","typ":"JWT"}"#),
        e(claims.to_string().as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(DEV_SECRET).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", e(&mac.finalize().into_bytes()))
}

/// Sends `POST path` with `body` from address `ip`; answers the status, `Retry-After` and
/// the error code, if any.
async fn post_from(base: &str, path: &str, ip: &str, body: &str) -> (u16, Option<String>, Value) {
    let r = http()
        .post(format!("{base}{path}"))
        .header("CF-Connecting-IP", ip)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, retry, v["error"]["code"].clone())
}

/// Spends a public route's burst from one address, all at once: the calls past it are 429
/// `rate_limited` with `Retry-After` (a few refills may land while they are in flight),
/// while another address is still served.
async fn burst_then_refused(base: &str, path: &str, body: &str, burst: usize) {
    let ip = fresh_ipv4();
    // Capacity refills while the calls are in flight (a second or so for 70 calls here:
    // `webhooks` refills one every 500 ms), so allow a few past the burst.
    let calls = (0..burst + 10).map(|_| post_from(base, path, &ip, body));
    let answers = futures_util::future::join_all(calls).await;
    let served = answers.iter().filter(|(s, _, _)| *s != 429).count();
    assert!(
        (burst..=burst + 5).contains(&served),
        "{path}: {served} of {} served with a burst of {burst}: {answers:?}",
        burst + 10
    );
    let (_, retry, code) = answers
        .iter()
        .find(|(s, _, _)| *s == 429)
        .expect("a refusal");
    assert_eq!(code.as_str(), Some("rate_limited"), "{path}");
    let retry: u64 = retry.as_ref().expect("Retry-After").parse().unwrap();
    assert!(retry >= 1, "{path}: Retry-After {retry}");
    let (status, _, _) = post_from(base, path, &fresh_ipv4(), body).await;
    assert_ne!(status, 429, "{path}: another address has its own budget");
}

pub async fn every_public_route_has_a_per_address_budget(ctx: Arc<Ctx>) {
    let base = &ctx.strict_http;
    // The bursts of the default policies (src/coordination/limiter.rs, docs/COORDINATION.md).
    burst_then_refused(base, "/api/rooms", "", 5).await;
    // Bodies that are refused after the budget check: no lead, estimate or event is stored.
    burst_then_refused(base, "/api/leads", "{}", 5).await;
    burst_then_refused(base, "/api/valuation", "{}", 20).await;
    burst_then_refused(base, "/api/webhooks/payments", "{}", 60).await;
    burst_then_refused(
        base,
        "/api/dev/token",
        r#"{"sub":"edge","rooms":["edge"]}"#,
        20,
    )
    .await;
}

pub async fn ipv6_callers_share_the_budget_of_their_64(ctx: Arc<Ctx>) {
    let base = &ctx.strict_http;
    let net = 0x1000 + (std::process::id() % 0xe000);
    // Five room creations from five addresses of one /64 spend its burst of five...
    for host in 1..=5 {
        let ip = format!("2001:db8:{net:x}:7::{host}");
        let (status, _, code) = post_from(base, "/api/rooms", &ip, "").await;
        assert_eq!(status, 201, "{ip}: {code}");
    }
    // ...so a sixth address of the same /64 is refused,
    let (status, _, code) =
        post_from(base, "/api/rooms", &format!("2001:db8:{net:x}:7::99"), "").await;
    assert_eq!((status, code.as_str()), (429, Some("rate_limited")));
    // while the neighbouring /64 has its own.
    let (status, _, _) = post_from(base, "/api/rooms", &format!("2001:db8:{net:x}:8::1"), "").await;
    assert_eq!(status, 201);
}

pub async fn a_socket_request_that_is_no_upgrade_spends_nothing(ctx: Arc<Ctx>) {
    // More plain GETs than the connect burst (500 on the test servers) from one address: every
    // one is a 426, none a 429, so none was charged to (or created) a Limiter.
    let ip = fresh_ipv4();
    let r = room("edge-no-upgrade");
    let url = format!("{}/api/rooms/{r}/ws", ctx.strict_http);
    let calls = (0..520).map(|_| {
        let (url, ip) = (url.clone(), ip.clone());
        async move {
            http()
                .get(url)
                .header("CF-Connecting-IP", ip)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    // 32 at a time: all 520 at once timed out some requests under a loaded test run (CI, this
    // session's fresh clone), and how many run at once does not change what each is answered.
    let statuses: Vec<u16> = futures_util::stream::iter(calls)
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 426), "{statuses:?}");
    // A real connection from that address is still within its budget.
    let t = sign_token(&json!({"sub": "edge", "rooms": [r], "exp": now_s() + 600}));
    let url = format!("{}/api/rooms/{r}/ws?token={t}", ctx.strict_ws);
    assert!(
        Client::try_connect(&url, Enc::Json, &[("CF-Connecting-IP", &ip)])
            .await
            .is_ok()
    );
}

pub async fn tokens_honour_nbf_and_the_maximum_lifetime(ctx: Arc<Ctx>) {
    let r = room("edge-tokens");
    let now = now_s();
    let refused = |claims: Value| {
        let url = format!(
            "{}/api/rooms/{r}/ws?token={}",
            ctx.strict_ws,
            sign_token(&claims)
        );
        async move {
            Client::try_connect(&url, Enc::Json, &[])
                .await
                .err()
                .map(|e| {
                    (
                        e.status,
                        e.body["error"]["code"].as_str().unwrap_or("").to_string(),
                    )
                })
        }
    };
    // Not valid for another ten minutes.
    let early = json!({"sub": "e", "rooms": [r], "nbf": now + 600, "exp": now + 1200});
    assert_eq!(
        refused(early).await,
        Some((401, "token_not_yet_valid".into()))
    );
    // Two days long: over TOKEN_MAX_TTL_S (one day by default), with or without iat.
    let long = json!({"sub": "e", "rooms": [r], "iat": now, "exp": now + 2 * 86_400});
    assert_eq!(refused(long).await, Some((401, "invalid_token".into())));
    let long = json!({"sub": "e", "rooms": [r], "exp": now + 2 * 86_400});
    assert_eq!(refused(long).await, Some((401, "invalid_token".into())));
    // Already valid (nbf within the leeway) and an hour long: admitted.
    let good = json!({"sub": "e", "rooms": [r], "nbf": now + 10, "iat": now, "exp": now + 3600});
    assert_eq!(refused(good).await, None);
}

pub async fn api_keys_hold_only_their_scopes(ctx: Arc<Ctx>) {
    let base = &ctx.strict_http;
    let r = room("edge-scopes");
    let call = |method: reqwest::Method, path: String, key: &'static str, body: Value| async move {
        let resp = http()
            .request(method, format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        (
            status,
            v["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    const READER: &str = "roomkeeper-reader-test-key";
    const ADMIN: &str = roomkeeper_testkit::harness::DEV_API_KEY;
    use reqwest::Method;
    // A key listed without scopes gets the defaults: publish and read.
    let (status, _) = call(
        Method::POST,
        format!("/api/rooms/{r}/broadcast"),
        READER,
        json!({"body": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::GET,
        format!("/api/rooms/{r}/history"),
        READER,
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    // Nothing else: services, coordination and admin are refused 403 insufficient_scope.
    for (method, path, body) in [
        (Method::GET, "/api/leads".to_string(), Value::Null),
        (
            Method::GET,
            "/api/locks/edge-scopes".to_string(),
            Value::Null,
        ),
        (Method::GET, "/api/admin/audit".to_string(), Value::Null),
        (
            Method::POST,
            format!("/api/admin/rooms/{r}/close"),
            json!({"reason": "scope test"}),
        ),
    ] {
        let (status, code) = call(method.clone(), path.clone(), READER, body.clone()).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "insufficient_scope"),
            "{method} {path}"
        );
        // The admin key may do all of it.
        let (status, _) = call(method.clone(), path.clone(), ADMIN, body).await;
        assert_eq!(status, 200, "admin: {method} {path}");
    }
}

pub async fn the_ops_feed_is_private(ctx: Arc<Ctx>) {
    use roomkeeper_testkit::harness::{ops_feed_url, DEV_API_KEY};
    let refused = |url: String| async move {
        let e = Client::try_connect(&url, Enc::Json, &[])
            .await
            .err()
            .expect("refused");
        (
            e.status,
            e.body["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    // Anonymous (allowed elsewhere on this server) and an all-rooms token are both refused.
    let anon = format!("{}/api/rooms/ops/ws", ctx.ws);
    assert_eq!(refused(anon).await, (403, "reserved_room".to_string()));
    let all = sign_token(&json!({"sub": "nosy", "rooms": ["*"], "exp": now_s() + 600}));
    let url = format!("{}/api/rooms/ops/ws?token={all}", ctx.ws);
    assert_eq!(refused(url).await, (403, "reserved_room".to_string()));
    // Nobody publishes there over HTTP, not even an admin key; a multi-room broadcast says so
    // for that room alone.
    let r = http()
        .post(format!("{}/api/rooms/ops/broadcast", ctx.http))
        .bearer_auth(DEV_API_KEY)
        .json(&json!({"body": {"kind": "lead", "id": "ld_fake", "name": "Fake"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "reserved_room");
    let other = room("edge-ops-other");
    let r = http()
        .post(format!("{}/api/broadcast", ctx.http))
        .bearer_auth(DEV_API_KEY)
        .json(&json!({"rooms": ["ops", other], "body": {"kind": "lead"}}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["results"][0]["error"]["code"], "reserved_room", "{v}");
    assert!(v["results"][1]["offset"].is_u64(), "{v}");
    // Reading it over HTTP is an admin's: a key with the default scopes is refused.
    let history = |key: &'static str| {
        let url = format!("{}/api/rooms/ops/history", ctx.strict_http);
        async move {
            http()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(history("roomkeeper-reader-test-key").await, 403);
    assert_eq!(history(DEV_API_KEY).await, 200);
    // An operator token reads the feed, and cannot publish into it.
    let (mut op, welcome) =
        Client::join(&ops_feed_url(&ctx.http, &ctx.ws).await, Enc::Json, "op").await;
    assert_eq!(welcome["room"], "ops");
    op.send(json!({"type": "publish", "body": {"kind": "lead", "id": "ld_fake"}, "id": "x1"}))
        .await;
    let e = op.recv_type("error").await;
    assert_eq!(e["code"], "forbidden", "{e}");
}
