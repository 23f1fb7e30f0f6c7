//! The Pusher gateway at scale, on a server of its own: one socket on 100 channels gets one
//! trigger sent to all of them; 2,000 sockets spread over the app's shards, all on one
//! channel, each get 200 events in order, none lost or duplicated. (pusher-js, Laravel Echo
//! and the SDKs are tested in tests/pusher/; these need more sockets than Node clients make
//! comfortably.)

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::Ctx;
use roomkeeper::pusher::rest::{sign_request, SignedRequest};
use roomkeeper::pusher::sign::md5_hex;
use roomkeeper_testkit::harness::{http, Client, Enc, Server, TempDir};

/// The local app of wrangler.toml's [vars] PUSHER_APPS.
const APP_ID: &str = "1";
const KEY: &str = "roomkeeper-local-key";
const SECRET: &str = "roomkeeper-local-secret";

/// A signed `POST /apps/1/events`.
async fn trigger(base: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let path = format!("/apps/{APP_ID}/events");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut query = vec![
        ("auth_key".to_string(), KEY.to_string()),
        ("auth_timestamp".to_string(), now.to_string()),
        ("auth_version".to_string(), "1.0".to_string()),
        ("body_md5".to_string(), md5_hex(body.as_bytes())),
    ];
    let signature = sign_request(
        SECRET,
        &SignedRequest {
            method: "POST",
            path: &path,
            query: &query,
            body: body.as_bytes(),
        },
    )
    .unwrap();
    query.push(("auth_signature".to_string(), signature));
    let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let r = http()
        .post(format!("{base}{path}?{}", qs.join("&")))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The next frame with this Pusher event name (others are skipped).
async fn until(c: &mut Client, event: &str) -> Value {
    loop {
        let f = c.recv().await;
        if f["event"] == event {
            return f;
        }
        assert_ne!(f["event"], "pusher:subscription_error", "{f}");
    }
}

/// A connected socket and its id.
async fn connect(ws: &str) -> (Client, String) {
    let mut c = Client::connect(
        &format!("{ws}/app/{KEY}?protocol=7&client=rust&version=1"),
        Enc::Json,
    )
    .await;
    let f = until(&mut c, "pusher:connection_established").await;
    let data: Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
    (c, data["socket_id"].as_str().unwrap().to_string())
}

async fn subscribe(c: &mut Client, channel: &str) {
    c.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
        .await;
    let ok = until(c, "pusher_internal:subscription_succeeded").await;
    assert_eq!(ok["channel"], channel);
}

pub async fn one_socket_on_100_channels_gets_one_trigger_on_all(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("pusher-100");
    let server = Server::start(&persist.0);
    let (mut c, _) = connect(&server.ws()).await;
    let channels: Vec<String> = (0..100).map(|i| format!("wide-{i}")).collect();
    for ch in &channels {
        subscribe(&mut c, ch).await;
    }
    // The 101st is refused, and the socket stays usable.
    c.send(json!({"event": "pusher:subscribe", "data": {"channel": "wide-extra"}}))
        .await;
    let refused = until(&mut c, "pusher:subscription_error").await;
    assert_eq!(refused["channel"], "wide-extra");
    let (s, v) = trigger(
        &server.http(),
        &json!({"name": "all", "data": "{\"x\":1}", "channels": channels}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut got = BTreeSet::new();
    while got.len() < 100 {
        let f = until(&mut c, "all").await;
        assert_eq!(f["data"], "{\"x\":1}");
        assert!(
            got.insert(f["channel"].as_str().unwrap().to_string()),
            "{f}"
        );
    }
    assert_eq!(got, channels.iter().cloned().collect());
    assert!(c.try_recv(Duration::from_millis(300)).await.is_none());
}

pub async fn two_thousand_sockets_over_the_shards_each_get_200_events_in_order(_ctx: Arc<Ctx>) {
    let _heavy = crate::HEAVY.lock().await;
    const SOCKETS: usize = 2000;
    const EVENTS: u64 = 200;
    let persist = TempDir::new("pusher-2000");
    // 2,000 sockets from one address within seconds: a `connect` budget to match.
    let server = Server::start_with(
        &persist.0,
        &[(
            "LIMIT_POLICIES",
            r#"{"connect":{"rate":10000,"period_ms":10000,"burst":5000}}"#,
        )],
    );
    let ws = server.ws();
    // Connect and subscribe in waves (bounded concurrency), all on one channel.
    let mut clients = Vec::with_capacity(SOCKETS);
    let mut shards = BTreeSet::new();
    for wave in 0..SOCKETS / 100 {
        let batch = join_all((0..100).map(|_| {
            let ws = ws.clone();
            async move {
                let (mut c, id) = connect(&ws).await;
                subscribe(&mut c, "hot").await;
                (c, id)
            }
        }))
        .await;
        for (c, id) in batch {
            let first: u64 = id.split('.').next().unwrap().parse().unwrap();
            shards.insert(first % 1024);
            clients.push(c);
        }
        assert_eq!(clients.len(), (wave + 1) * 100);
    }
    assert!(shards.len() >= 4, "sockets landed on shards {shards:?}");
    // 200 events, published one after another while every socket reads.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut offsets = Vec::with_capacity(EVENTS as usize);
                let mut ns = Vec::with_capacity(EVENTS as usize);
                while ns.len() < EVENTS as usize {
                    let f = until(&mut c, "tick").await;
                    let data: Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
                    ns.push(data["n"].as_u64().unwrap());
                    offsets.push(f["offset"].as_u64().unwrap());
                }
                // Nothing more: no duplicates after the last one.
                let extra = c.try_recv(Duration::from_millis(500)).await;
                (ns, offsets, extra)
            })
        })
        .collect();
    let base = server.http();
    for n in 0..EVENTS {
        let (s, v) = trigger(
            &base,
            &json!({"name": "tick", "data": json!({"n": n}).to_string(), "channel": "hot"}),
        )
        .await;
        assert_eq!(s, 200, "event {n}: {v}");
    }
    let want: Vec<u64> = (0..EVENTS).collect();
    let results = tokio::time::timeout(Duration::from_secs(120), join_all(readers))
        .await
        .expect("every socket got its 200 events within 2 minutes");
    for (k, r) in results.into_iter().enumerate() {
        let (ns, offsets, extra) = r.unwrap();
        assert_eq!(ns, want, "socket {k}");
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "socket {k}: {offsets:?}"
        );
        assert!(extra.is_none(), "socket {k} got more: {extra:?}");
    }
}

/// Pusher sockets spend the client address's `connect` budget (the default: a burst of 20),
/// as native sockets do: past it the upgrade is refused with 429 and nothing is accepted.
pub async fn pusher_sockets_spend_the_connect_budget(_ctx: Arc<Ctx>) {
    let persist = TempDir::new("pusher-connect");
    let server = Server::start_with(&persist.0, &[("LIMIT_POLICIES", "{}")]);
    let url = format!("{}/app/{KEY}?protocol=7", server.ws());
    let mut statuses = Vec::new();
    let mut open = Vec::new();
    for _ in 0..30 {
        match Client::try_connect(&url, Enc::Json, &[("CF-Connecting-IP", "203.0.113.77")]).await {
            Ok(c) => {
                statuses.push(101);
                open.push(c);
            }
            Err(r) => {
                // The WebSocket client does not always hand over the refusal's body; when it
                // does, it is the documented one.
                if !r.body.is_null() {
                    assert_eq!(r.body["error"]["code"], "rate_limited", "{}", r.body);
                }
                statuses.push(r.status);
            }
        }
    }
    let accepted = statuses.iter().filter(|s| **s == 101).count();
    assert!((20..=23).contains(&accepted), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 101 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // Another address is not affected.
    let other = Client::try_connect(&url, Enc::Json, &[("CF-Connecting-IP", "203.0.113.78")]).await;
    assert!(other.is_ok());
}
