//! Fuzz-style property tests of every decoder that reads untrusted input: the WebSocket frame
//! decoders (JSON and MessagePack) and what a room does with what they accept (stored, read
//! back through history), connection tokens, the sales CSV import, the router's path
//! parsing, and the batch frame encoder. None may panic on any input; where an answer can be
//! checked, it is.
//!
//! Inputs are random bytes and strings, and — because random bytes rarely get past the first
//! check — mutations of valid inputs (a real token with a byte changed, a real CSV with a
//! field replaced, a real frame with a field of the wrong type). `make test` runs a few hundred
//! cases of each; `make fuzz` runs many more (`PROPTEST_CASES`, bounded in time by the case
//! count: see the Makefile).

use proptest::prelude::*;
use serde_json::{json, Value};

use roomkeeper::auth::{self, Claims, Perm};
use roomkeeper::http::route::{self, Method};
use roomkeeper::rooms::limits::RoomLimits;
use roomkeeper::rooms::protocol::{
    decode, depth, encode_batch, ClientFrame, Encoded, Encoding, Message, RawFrame, ServerFrame,
    MAX_BODY_DEPTH,
};
use roomkeeper::rooms::room::{Effect, Room};
use roomkeeper::rooms::session::Session;
use roomkeeper::rooms::store::{decode_rows, sql_int, MemoryStore, Store, StoreError, StoredRow};
use roomkeeper::services::valuation::parse_sales_csv;

const SECRET: &[u8] = b"fuzz-secret-0123456789";

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // Failures are shrunk and reported; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Any finite float: serde_json is built with `float_roundtrip`, so a float read back
        // from JSON text is the same float (without it some moved by one ulp, e.g.
        // 4.2434902381660746e-210 read back as 4.243490238166074e-210).
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("join"),
            Just("publish"),
            Just("type"),
            Just("name"),
            Just("body")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("name".to_string()),
                    Just("body".to_string()),
                    Just("id".to_string()),
                    Just("since".to_string()),
                    Just("history".to_string()),
                    Just("meta".to_string()),
                    Just("epoch".to_string()),
                    Just("offset".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame that is nearly valid: a real join or publish with one field replaced.
fn near_frame() -> impl Strategy<Value = Value> {
    let base = prop_oneof![
        Just(
            json!({"type": "join", "name": "ann", "since": {"epoch": "e", "offset": 3}, "history": 5})
        ),
        Just(json!({"type": "publish", "body": {"text": "hi"}, "id": "m1"})),
    ];
    (
        base,
        prop_oneof![
            Just("type"),
            Just("name"),
            Just("since"),
            Just("history"),
            Just("body"),
            Just("id"),
            Just("extra")
        ],
        json_value(),
    )
        .prop_map(|(mut f, k, v)| {
            f[k] = v;
            f
        })
}

fn check_decoded(
    size: usize,
    limit: usize,
    r: Result<ClientFrame, roomkeeper::rooms::protocol::FrameError>,
) {
    match r {
        Err(e) => {
            // Every refusal has a documented code.
            assert!(
                [
                    "too_large",
                    "malformed",
                    "wrong_frame_kind",
                    "unknown_type",
                    "invalid_frame"
                ]
                .contains(&e.code()),
                "{e:?}"
            );
            if size > limit {
                assert_eq!(e.code(), "too_large");
            }
        }
        Ok(_) => assert!(size <= limit, "a frame over the limit was accepted"),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_frames_never_panic(s in "\\PC{0,200}", limit in 0usize..300) {
        check_decoded(s.len(), limit, decode(Encoding::Json, RawFrame::Text(&s), limit));
    }

    #[test]
    fn json_like_frames_decode_or_are_refused(v in prop_oneof![json_value(), near_frame()]) {
        let s = v.to_string();
        check_decoded(s.len(), 16 * 1024, decode(Encoding::Json, RawFrame::Text(&s), 16 * 1024));
    }

    #[test]
    fn msgpack_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_decoded(b.len(), 16 * 1024, decode(Encoding::Msgpack, RawFrame::Binary(&b), 16 * 1024));
    }

    #[test]
    fn msgpack_frames_agree_with_json(v in prop_oneof![json_value(), near_frame()]) {
        let b = rmp_serde::to_vec_named(&v).unwrap();
        let from_msgpack = decode(Encoding::Msgpack, RawFrame::Binary(&b), 1 << 20);
        let from_json = decode(Encoding::Json, RawFrame::Text(&v.to_string()), 1 << 20);
        // The same frame means the same thing in both encodings.
        match (&from_msgpack, &from_json) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.code(), b.code()),
            _ => prop_assert!(false, "{from_msgpack:?} vs {from_json:?}"),
        }
    }

    #[test]
    fn mutated_msgpack_frames_never_panic(
        v in near_frame(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let mut b = rmp_serde::to_vec_named(&v).unwrap();
        for (i, x) in flips {
            let n = b.len();
            b[i % n] = x;
        }
        b.truncate(cut % (b.len() + 1));
        check_decoded(b.len(), 16 * 1024, decode(Encoding::Msgpack, RawFrame::Binary(&b), 16 * 1024));
    }

    #[test]
    fn tokens_never_panic(s in "\\PC{0,300}") {
        prop_assert!(auth::verify(&s, SECRET, 1_000).is_err());
    }

    #[test]
    fn mutated_tokens_are_refused(
        sub in "[a-z0-9]{1,20}",
        rooms in proptest::collection::vec("[a-z*-]{1,10}", 0..4),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let claims = Claims {
            sub,
            name: None,
            rooms,
            perms: vec![Perm::Publish],
            exp: 2_000,
            iat: None,
            nbf: None,
            ops: false,
        };
        let token = auth::mint(&claims, SECRET);
        prop_assert_eq!(auth::verify(&token, SECRET, 1_000).map(|c| c.sub), Ok(claims.sub.clone()));
        // One byte changed: refused (unless the change left the token as it was).
        let mut bytes = token.clone().into_bytes();
        let i = at % bytes.len();
        bytes[i] = byte;
        if let Ok(mutated) = String::from_utf8(bytes) {
            if mutated != token {
                prop_assert!(auth::verify(&mutated, SECRET, 1_000).is_err(), "{mutated}");
            }
        }
        // Truncated: refused.
        let n = cut % token.len();
        prop_assert!(auth::verify(&token[..n], SECRET, 1_000).is_err());
        // Another secret: refused.
        prop_assert!(auth::verify(&token, b"another-secret-0123456789", 1_000).is_err());
    }

    #[test]
    fn csv_never_panics(s in "\\PC{0,400}") {
        let (_sales, errors) = parse_sales_csv(&s);
        prop_assert!(errors.iter().all(|e| e.line >= 1 && !e.message.is_empty()));
    }

    #[test]
    fn mutated_csv_rows_are_parsed_or_reported(
        rows in proptest::collection::vec(
            (0usize..13, prop_oneof![
                Just(String::new()),
                Just("yes".to_string()),
                Just("-1".to_string()),
                Just("1e99".to_string()),
                Just("\"".to_string()),
                Just("\"a,b\"".to_string()),
                Just("18446744073709551616".to_string()),
                "\\PC{0,8}",
            ]),
            1..20,
        ),
    ) {
        let header = r#""","price","lotsize","bedrooms","bathrms","stories","driveway","recroom","fullbase","gashw","airco","garagepl","prefarea""#;
        let good = r#""1",42000,5850,3,1,2,"yes","no","yes","no","no",1,"no""#;
        let mut text = String::from(header);
        for (field, value) in &rows {
            let mut cells: Vec<String> = good.split(',').map(str::to_string).collect();
            cells[*field] = value.clone();
            text.push('\n');
            text.push_str(&cells.join(","));
        }
        let (sales, errors) = parse_sales_csv(&text);
        // Every data line is either a sale or reported (a broken quote may swallow lines).
        prop_assert!(sales.len() + errors.len() <= rows.len());
        prop_assert!(errors.iter().all(|e| e.line >= 2 && !e.message.is_empty()));
    }

    #[test]
    fn paths_never_panic(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PATCH"), Just("DELETE"), Just("PUT"), Just("BREW")],
        segments in proptest::collection::vec(prop_oneof![
            Just("api".to_string()),
            Just("rooms".to_string()),
            Just("ws".to_string()),
            Just("bench".to_string()),
            Just("raw".to_string()),
            Just("locks".to_string()),
            Just("limits".to_string()),
            Just("leads".to_string()),
            Just("".to_string()),
            Just("a".repeat(64)),
            "\\PC{0,70}",
        ], 0..7),
    ) {
        let path = format!("/{}", segments.join("/"));
        match route::parse(Method::parse(method), &path) {
            Ok(r) => {
                // A route that parsed names only valid rooms.
                if let route::Route::RoomSocket(k) | route::Route::RoomInfo(k) = &r {
                    prop_assert!(route::RoomKey::parse(k.as_str()).is_ok());
                }
                let _ = r.label();
            }
            Err(e) => prop_assert!((400..=405).contains(&e.status()), "{}", e.status()),
        }
    }

    #[test]
    fn batches_of_any_messages_decode_to_their_parts(
        bodies in proptest::collection::vec(json_value(), 0..40),
    ) {
        use roomkeeper::rooms::protocol::MemberInfo;
        let frames: Vec<ServerFrame> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| ServerFrame::Message(Message {
                offset: i as u64 + 1,
                from: MemberInfo { id: "u".into(), name: "u".into(), meta: None, conns: 0 },
                body,
                ts: 1,
            }))
            .collect();
        let want: Vec<Value> = frames.iter().map(|f| serde_json::to_value(f).unwrap()).collect();
        for enc in [Encoding::Json, Encoding::Msgpack] {
            let parts: Vec<Encoded> = frames.iter().map(|f| f.encode(enc)).collect();
            let got: Value = match encode_batch(enc, &parts) {
                Encoded::Text(t) => serde_json::from_str(&t).unwrap(),
                Encoded::Binary(b) => rmp_serde::from_slice(&b).unwrap(),
            };
            prop_assert_eq!(&got["type"], "batch");
            prop_assert_eq!(got["messages"].as_array().unwrap(), &want);
        }
    }

    #[test]
    fn every_accepted_publish_reads_back_through_history(
        bodies in proptest::collection::vec(deep_or_huge(), 1..8),
        msgpack in any::<bool>(),
    ) {
        let enc = if msgpack { Encoding::Msgpack } else { Encoding::Json };
        let limits = RoomLimits {
            max_frame_bytes: 64 * 1024,
            publish_rate: 1000,
            publish_burst: 1000,
            max_strikes: 1000,
            ..RoomLimits::default()
        };
        let mut room = Room::new("fuzz", "e", 0, limits);
        let mut store = JsonStore::default();
        room.attach(Session::new("c", "u", enc));
        let frame = |v: Value| match enc {
            Encoding::Json => Encoded::Text(v.to_string()),
            Encoding::Msgpack => Encoded::Binary(rmp_serde::to_vec_named(&v).unwrap()),
        };
        let send = |room: &mut Room, store: &mut JsonStore, v: Value| {
            let f = frame(v);
            let raw = match &f {
                Encoded::Text(t) => RawFrame::Text(t),
                Encoded::Binary(b) => RawFrame::Binary(b),
            };
            let size = raw.len();
            (size, room.receive(store, "c", raw, 1_000))
        };
        let (_, fx) = send(&mut room, &mut store, json!({"type": "join", "name": "f"}));
        let welcomed = fx.iter().any(|e| matches!(e, Effect::Send { frame: ServerFrame::Welcome { .. }, .. }));
        prop_assert!(welcomed, "join was not welcomed");
        let mut accepted = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let id = format!("m{i}");
            let (size, fx) = send(&mut room, &mut store, json!({"type": "publish", "body": body, "id": id}));
            let answer = fx.iter().find_map(|e| match e {
                Effect::Send { frame: f @ (ServerFrame::Ack { .. } | ServerFrame::Error { .. }), .. } => Some(f.clone()),
                _ => None,
            });
            match answer {
                Some(ServerFrame::Ack { offset, .. }) => {
                    prop_assert!(depth(&body) <= MAX_BODY_DEPTH, "a body nested {} deep was accepted", depth(&body));
                    accepted.push((offset, body));
                }
                Some(ServerFrame::Error { code, .. }) => {
                    prop_assert_eq!(code.as_str(), "too_large");
                    let body_bytes = body.to_string().len();
                    prop_assert!(
                        depth(&body) > MAX_BODY_DEPTH || body_bytes > limits.max_body_bytes || size > limits.max_frame_bytes,
                        "refused a body within every limit"
                    );
                }
                other => prop_assert!(false, "no answer to a publish with an id: {other:?}"),
            }
        }
        // Every accepted message reads back, through the JSON text the SQL store keeps: over
        // HTTP history and on a join asking for history.
        let page = room.history(&store, 0, 1000).unwrap();
        let got: Vec<(u64, Value)> = page.messages.into_iter().map(|m| (m.offset, m.body)).collect();
        prop_assert_eq!(&got, &accepted);
        room.attach(Session::new("late", "v", enc));
        let join = frame(json!({"type": "join", "name": "late", "history": 1000}));
        let raw = match &join {
            Encoded::Text(t) => RawFrame::Text(t),
            Encoded::Binary(b) => RawFrame::Binary(b),
        };
        let fx = room.receive(&mut store, "late", raw, 2_000);
        let replayed: Vec<(u64, Value)> = fx
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send { conn, frame: ServerFrame::Message(m) } if conn == "late" => Some((m.offset, m.body)),
                _ => None,
            })
            .collect();
        prop_assert_eq!(&replayed, &accepted);
    }
}

/// A message body that is deeply nested (up to 200 levels of arrays and objects, past
/// [`MAX_BODY_DEPTH`] and serde_json's own 128), huge (past `ROOM_MAX_BODY_BYTES`), or any value.
fn deep_or_huge() -> impl Strategy<Value = Value> {
    let deep = (
        proptest::collection::vec(any::<bool>(), 0..200),
        json_value(),
    )
        .prop_map(|(levels, core)| {
            levels.into_iter().fold(core, |v, object| {
                if object {
                    json!({ "k": v })
                } else {
                    json!([v])
                }
            })
        });
    let huge = (1usize..20_000, 0usize..4).prop_map(|(n, shape)| match shape {
        0 => json!("x".repeat(n)),
        1 => json!(vec![1; n / 2]),
        2 => json!({"text": "é".repeat(n / 2)}),
        _ => json!((0..n / 8)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect::<serde_json::Map<_, _>>()),
    });
    prop_oneof![deep, huge, json_value()]
}

/// A [`Store`] that keeps bodies as the SQL store does (JSON text, `serde_json::to_string`)
/// and reads them back through the same decoder ([`decode_rows`]).
#[derive(Default)]
struct JsonStore {
    rows: std::collections::BTreeMap<u64, StoredRow>,
    dedupe: MemoryStore,
}

impl JsonStore {
    fn read(&self, rows: Vec<StoredRow>) -> Vec<Message> {
        let (messages, unreadable) = decode_rows(rows);
        assert!(
            unreadable.is_empty(),
            "stored rows did not read back: {unreadable:?}"
        );
        messages
    }
}

impl Store for JsonStore {
    fn append_once(&mut self, m: &Message, key: Option<&str>) -> Result<Option<u64>, StoreError> {
        if let Some(k) = key {
            if let Some(first) = self.dedupe.dedupe_get(k)? {
                return Ok(Some(first));
            }
            self.dedupe.dedupe.insert(k.to_string(), (m.offset, m.ts));
        }
        let body = serde_json::to_string(&m.body).map_err(|e| StoreError(e.to_string()))?;
        let row = StoredRow {
            seq: sql_int(m.offset),
            ts: sql_int(m.ts),
            from_id: m.from.id.clone(),
            from_name: m.from.name.clone(),
            body,
        };
        self.rows.insert(m.offset, row);
        Ok(None)
    }
    fn after(&self, after: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let rows = self.rows.range(after.saturating_add(1)..).take(limit);
        Ok(self.read(rows.map(|(_, r)| r.clone()).collect()))
    }
    fn latest(&self, limit: usize) -> Result<Vec<Message>, StoreError> {
        let mut rows: Vec<StoredRow> = self.rows.values().rev().take(limit).cloned().collect();
        rows.reverse();
        Ok(self.read(rows))
    }
    fn first_offset(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.rows.keys().next().copied())
    }
    fn trim_through(&mut self, offset: u64) -> Result<(), StoreError> {
        self.rows = self.rows.split_off(&offset.saturating_add(1));
        Ok(())
    }
    fn trim_older(&mut self, ts: u64) -> Result<(), StoreError> {
        self.rows.retain(|_, r| r.ts >= sql_int(ts));
        Ok(())
    }
    fn dedupe_get(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.dedupe.dedupe_get(key)
    }
    fn dedupe_expire(&mut self, ts: u64) -> Result<(), StoreError> {
        self.dedupe.dedupe_expire(ts)
    }
}
