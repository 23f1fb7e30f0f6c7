//! Unit tests of notifications: templates and escaping, delivery policy, destinations,
//! webhook signatures and payment events.

use serde_json::{json, Value};

use super::delivery::*;
use super::destination::*;
use super::notice::*;
use super::payment::*;
use super::template::*;
use super::webhook::*;
use crate::services::leads::{self, Country, LeadInput, ScoreInputs, Timeline, HOT_THRESHOLD};

fn notice() -> LeadNotice {
    LeadNotice {
        lead_id: "lead_01".into(),
        name: "Jane Doe".into(),
        email: Some("jane_doe@example.com".into()),
        phone: Some("+14155552671".into()),
        address: Some("1 Main St".into()),
        timeline: Some(Timeline::Within3Months),
        source: "web".into(),
        score: 72,
        reasons: vec![
            ("contact_email_and_phone".into(), 25),
            ("negative_equity".into(), -10),
        ],
        estimated_value: Some(1_250_000),
        notes: Some("Call after 5pm\nPrefers text".into()),
    }
}

#[test]
fn new_lead_snapshot() {
    let n = Notification::NewLead(notice());
    assert_eq!(
        n.render(),
        json!({
            "text": "New lead: Jane Doe (score 72)",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": "*New lead:* Jane Doe\nScore *72*/100 · Timeline: within 3 months"}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Email*\n`jane_doe@example.com`"},
                    {"type": "mrkdwn", "text": "*Phone*\n`+14155552671`"},
                    {"type": "mrkdwn", "text": "*Address*\n1 Main St"},
                    {"type": "mrkdwn", "text": "*Estimated value*\n1,250,000"}
                ]},
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": "*Notes*\nCall after 5pm\nPrefers text"}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": "Lead `lead_01` · Source `web` · contact email and phone +25, negative equity -10"}]}
            ]
        })
    );
    assert_eq!(n.channel(), Channel::LeadsIncoming);
}

#[test]
fn hot_lead_snapshot_with_sparse_data() {
    let n = Notification::HotLead(LeadNotice {
        email: None,
        address: None,
        timeline: None,
        reasons: vec![],
        estimated_value: None,
        notes: None,
        score: 91,
        ..notice()
    });
    assert_eq!(
        n.render(),
        json!({
            "text": "Hot lead: Jane Doe (score 91)",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": ":fire: *Hot lead:* Jane Doe\nScore *91*/100 · Timeline: not given"}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Phone*\n`+14155552671`"}
                ]},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": "Lead `lead_01` · Source `web`"}]}
            ]
        })
    );
    assert_eq!(n.channel(), Channel::HotLeads);
}

fn payment() -> PaymentEvent {
    PaymentEvent {
        kind: PaymentKind::Succeeded,
        id: "evt_123".into(),
        amount: 199_950,
        currency: "USD".into(),
        customer: Some("cus_42".into()),
    }
}

#[test]
fn payment_snapshot() {
    let n = Notification::Payment(payment());
    assert_eq!(
        n.render(),
        json!({
            "text": "Payment succeeded: 1,999.50 USD from `cus_42`",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": ":white_check_mark: *Payment succeeded:* 1,999.50 USD"}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Customer*\n`cus_42`"}
                ]},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": "Event `evt_123` · payment.succeeded"}]}
            ]
        })
    );
    assert_eq!(n.channel(), Channel::Ops);
    let refund = Notification::Payment(PaymentEvent {
        kind: PaymentKind::Refunded,
        amount: 5000,
        currency: "JPY".into(),
        customer: None,
        ..payment()
    });
    assert_eq!(
        refund.render(),
        json!({
            "text": "Payment refunded: 5,000 JPY",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": ":leftwards_arrow_with_hook: *Payment refunded:* 5,000 JPY"}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": "Event `evt_123` · payment.refunded"}]}
            ]
        })
    );
}

#[test]
fn alert_snapshot() {
    let n = Notification::Alert(AlertNotice {
        id: "d1_down:2025-01-01T10".into(),
        severity: Severity::Critical,
        title: "D1 unavailable".into(),
        detail: Some("3 writes failed\nlast: timeout > 5s".into()),
    });
    assert_eq!(
        n.render(),
        json!({
            "text": "Critical alert: D1 unavailable",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": ":rotating_light: *Critical alert:* D1 unavailable"}},
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": "3 writes failed\nlast: timeout &gt; 5s"}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": "Alert `d1_down:2025-01-01T10`"}]}
            ]
        })
    );
}

#[test]
fn hostile_input_comes_out_inert() {
    let evil = "<!channel> *bold* <http://evil|click> _it_ ~s~ `code` @here @Everyone &amp;";
    let expected = "&lt;!channel&gt; ∗bold∗ &lt;http://evil|click&gt; ˍitˍ ∼s∼ ˋcodeˋ \
                    @\u{200B}here @\u{200B}Everyone &amp;amp;";
    assert_eq!(escape_mrkdwn(evil), expected);

    let n = Notification::NewLead(LeadNotice {
        name: evil.into(),
        email: Some("`@here<x>`@evil.com".into()),
        lead_id: "a`b".into(),
        address: Some("line1\nline2 *x*".into()),
        notes: Some(evil.into()),
        reasons: vec![("<!here>".into(), 1)],
        ..notice()
    });
    let rendered = n.render();
    let mut texts = vec![rendered["text"].as_str().unwrap().to_string()];
    collect_texts(&rendered["blocks"], &mut texts);
    for t in &texts {
        // Only our own markup survives: no angle brackets at all, and the only `*`/`` ` ``
        // are the ones our templates put around labels and code spans.
        assert!(!t.contains('<') && !t.contains('>'), "{t}");
        assert!(!t.contains("@here") && !t.contains("@Everyone"), "{t}");
        assert!(!t.contains("*bold*") && !t.contains("_it_"), "{t}");
    }
    assert_eq!(
        rendered["text"],
        format!(
            "New lead: {} (score 72)",
            escape(evil, Mode::Line, MAX_LINE_CHARS)
        )
    );
    assert_eq!(
        rendered["blocks"][1]["fields"][0]["text"],
        "*Email*\n`ˋ@\u{200B}here&lt;x&gt;ˋ@evil.com`"
    );
    assert_eq!(
        rendered["blocks"][1]["fields"][2]["text"],
        "*Address*\nline1 line2 ∗x∗"
    );
    assert!(rendered["blocks"][3]["elements"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("Lead `aˋb`"));
}

fn collect_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(t)) = m.get("text") {
                out.push(t.clone());
            }
            m.values().for_each(|x| collect_texts(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_texts(x, out)),
        _ => {}
    }
}

#[test]
fn escaping_modes_truncation_and_controls() {
    assert_eq!(
        escape("a\r\nb\tc\u{202E}d\u{0}", Mode::Block, 100),
        "a\nb cd "
    );
    assert_eq!(escape("a\nb", Mode::Line, 100), "a b");
    assert_eq!(escape("a_b*c~d`e", Mode::Code, 100), "a_b*c~dˋe");
    assert_eq!(escape("abcdef", Mode::Line, 3), "abc…");
    assert_eq!(escape("abc", Mode::Line, 3), "abc");
    assert_eq!(escape("<<<<", Mode::Line, 2), "&lt;&lt;…");
    assert_eq!(
        escape("@her @channels", Mode::Line, 100),
        "@her @\u{200B}channels"
    );
    assert_eq!(escape("x@", Mode::Line, 100), "x@");
    assert_eq!(code(""), "–");
}

#[test]
fn worst_case_input_stays_within_slack_limits() {
    // Slack refuses a section or context text over 3000 characters, a field over 2000.
    let worst = "&".repeat(10_000);
    let lead = LeadNotice {
        lead_id: worst.clone(),
        name: worst.clone(),
        email: Some(worst.clone()),
        phone: Some(worst.clone()),
        address: Some(worst.clone()),
        source: worst.clone(),
        reasons: vec![(worst.clone(), i32::MIN); 50],
        notes: Some(worst.clone()),
        ..notice()
    };
    let alert = AlertNotice {
        id: worst.clone(),
        severity: Severity::Warning,
        title: worst.clone(),
        detail: Some(worst.clone()),
    };
    let payment = PaymentEvent {
        id: "e".repeat(MAX_EVENT_FIELD_CHARS),
        customer: Some(worst.clone()),
        amount: u64::MAX,
        ..payment()
    };
    for n in [
        Notification::HotLead(lead),
        Notification::Alert(alert),
        Notification::Payment(payment),
    ] {
        let v = n.render();
        for block in v["blocks"].as_array().unwrap() {
            let len = |t: &Value| t["text"].as_str().unwrap().chars().count();
            match block["type"].as_str().unwrap() {
                "section" if block.get("fields").is_some() => {
                    for f in block["fields"].as_array().unwrap() {
                        assert!(len(f) <= 2000, "{}", len(f));
                    }
                }
                "section" => assert!(len(&block["text"]) <= 3000),
                _ => assert!(len(&block["elements"][0]) <= 3000),
            }
        }
    }
}

#[test]
fn amounts() {
    assert_eq!(format_amount(0, "USD"), "0.00 USD");
    assert_eq!(format_amount(5, "EUR"), "0.05 EUR");
    assert_eq!(format_amount(123_456_789, "GBP"), "1,234,567.89 GBP");
    assert_eq!(format_amount(1000, "KRW"), "1,000 KRW");
    assert_eq!(format_amount(1_234_567, "KWD"), "1,234.567 KWD");
    assert_eq!(group_thousands(999), "999");
    assert_eq!(group_thousands(1000), "1,000");
    assert_eq!(group_thousands(u64::MAX), "18,446,744,073,709,551,615");
}

#[test]
fn templates_parse_and_match_the_queue_envelope() {
    for t in Template::ALL {
        assert_eq!(Template::parse(t.name()), Ok(t));
    }
    let err = Template::parse("welcome").unwrap_err();
    assert_eq!(err.code(), "unknown_template");
    let all = [
        Notification::NewLead(notice()),
        Notification::HotLead(notice()),
        Notification::Payment(payment()),
        Notification::Alert(AlertNotice {
            id: "a1".into(),
            severity: Severity::Info,
            title: "t".into(),
            detail: None,
        }),
    ];
    for n in all {
        let encoded = n.encode();
        let v: Value = serde_json::from_str(&encoded).unwrap();
        assert_eq!(v["template"], n.template().name());
        assert_eq!(Notification::decode(encoded.as_bytes()).unwrap(), n);
        assert_eq!(serde_json::from_str::<Notification>(&encoded).unwrap(), n);
    }
    assert_eq!(
        Notification::decode(br#"{"template":"sms","data":{}}"#)
            .unwrap_err()
            .code(),
        "unknown_template"
    );
    let bad: [&[u8]; 4] = [
        br#"{"template":"alert","data":{"id":"a"}}"#,
        br#"{"template":"alert","data":{},"extra":1}"#,
        br#"{"template":"payment","data":{"type":"payment.succeeded","id":"e","amount":1,"currency":"dollars"}}"#,
        b"[",
    ];
    for bad in bad {
        assert_eq!(
            Notification::decode(bad).unwrap_err().code(),
            "invalid_notification"
        );
    }
}

#[test]
fn lead_notifications_follow_the_route() {
    let input: LeadInput = serde_json::from_value(json!({
        "name": "Jane", "email": "j@example.com", "phone": "+14155552671",
        "address": "1 Main St", "timeline": "now", "source": "web"
    }))
    .unwrap();
    let lead = leads::validate(input, Country::from_iso("US").unwrap()).unwrap();
    let score = leads::score(&lead, &ScoreInputs::default());
    assert_eq!(score.total, 70);
    let n = Notification::for_lead(LeadNotice::new("l1", &lead, &score, None));
    assert_eq!(n.template(), Template::NewLead);
    assert_eq!(n.subject_id(), "l1",);
    let score = leads::score(
        &lead,
        &ScoreInputs {
            estimated_value: Some(leads::HIGH_VALUE),
            mortgage_balance: None,
        },
    );
    assert_eq!(score.total, leads::HOT_THRESHOLD + 2);
    let n = Notification::for_lead(LeadNotice::new("l1", &lead, &score, Some(1)));
    assert_eq!(
        (n.template(), n.channel()),
        (Template::HotLead, Channel::HotLeads)
    );
}

#[test]
fn backoff_doubles_and_caps() {
    let seq: Vec<u64> = (1..=10)
        .map(|a| backoff_ms(a, BASE_BACKOFF_MS, MAX_BACKOFF_MS))
        .collect();
    assert_eq!(
        seq,
        vec![5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000, 600_000]
    );
    assert_eq!(backoff_ms(0, 100, 1000), 100);
    assert_eq!(backoff_ms(64, 100, u64::MAX), u64::MAX);
    assert_eq!(backoff_ms(u32::MAX, u64::MAX, 7), 7);
    assert_eq!(backoff_ms(3, 0, 1000), 0);
}

#[test]
fn jitter_stays_within_half_and_full() {
    for e in [0, 1, 2, 499, 500, 501, u64::MAX] {
        let d = with_jitter(1000, e);
        assert!((500..=1000).contains(&d), "{e}: {d}");
    }
    assert_eq!(with_jitter(1000, 0), 500);
    assert_eq!(with_jitter(1000, 500), 1000);
    assert_eq!(with_jitter(0, 12345), 0);
    for e in [0, 1, u64::MAX / 3, u64::MAX] {
        assert!(with_jitter(u64::MAX, e) >= u64::MAX / 2);
    }
}

#[test]
fn delivery_decisions() {
    use Action::*;
    let retry1 = Retry {
        delay_ms: BASE_BACKOFF_MS,
    };
    assert_eq!(next_action(1, Outcome::status(200)), Done);
    assert_eq!(next_action(1, Outcome::status(204)), Done);
    for s in [408, 429, 500, 502, 503, 599] {
        assert_eq!(next_action(1, Outcome::status(s)), retry1, "{s}");
    }
    assert_eq!(next_action(1, Outcome::NetworkError), retry1);
    for s in [400, 401, 403, 404, 410, 413, 499] {
        assert_eq!(
            next_action(1, Outcome::status(s)),
            DeadLetter {
                reason: "permanent_status"
            },
            "{s}"
        );
    }
    for s in [100, 301, 302, 600, 0] {
        assert_eq!(
            next_action(1, Outcome::status(s)),
            DeadLetter {
                reason: "unexpected_status"
            },
            "{s}"
        );
    }
    // The budget: attempt MAX_ATTEMPTS − 1 may still retry, attempt MAX_ATTEMPTS may not.
    assert!(matches!(
        next_action(MAX_ATTEMPTS - 1, Outcome::status(503)),
        Retry { .. }
    ));
    assert_eq!(
        next_action(MAX_ATTEMPTS, Outcome::NetworkError),
        DeadLetter {
            reason: "attempts_exhausted"
        }
    );
    // Success on the last attempt is still success.
    assert_eq!(next_action(MAX_ATTEMPTS, Outcome::status(200)), Done);
}

#[test]
fn retry_after_is_honoured_within_bounds() {
    let with = |attempt, ms| {
        next_action(
            attempt,
            Outcome::Status {
                status: 429,
                retry_after_ms: ms,
            },
        )
    };
    assert_eq!(with(1, Some(30_000)), Action::Retry { delay_ms: 30_000 });
    assert_eq!(with(4, Some(30_000)), Action::Retry { delay_ms: 40_000 });
    assert_eq!(
        with(1, Some(u64::MAX)),
        Action::Retry {
            delay_ms: MAX_RETRY_AFTER_MS
        }
    );
    assert_eq!(parse_retry_after(" 30 "), Some(30_000));
    assert_eq!(parse_retry_after("0"), Some(0));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(parse_retry_after("-1"), None);
    assert_eq!(parse_retry_after("99999999999"), None);
    let custom = DeliveryPolicy {
        base_ms: 1,
        max_ms: 4,
        max_attempts: 2,
    };
    assert_eq!(
        custom.next_action(1, Outcome::NetworkError),
        Action::Retry { delay_ms: 1 }
    );
    assert!(matches!(
        custom.next_action(2, Outcome::NetworkError),
        Action::DeadLetter { .. }
    ));
}

#[test]
fn idempotency_keys_are_deterministic() {
    assert_eq!(
        idempotency_key(Template::Payment, "evt_123"),
        "notify:payment:a404468e8bb99ce112e1187db38362059db3dc8ffcc190ad3b16963604b1e92a"
    );
    assert_ne!(
        idempotency_key(Template::NewLead, "l1"),
        idempotency_key(Template::HotLead, "l1")
    );
    assert_ne!(
        idempotency_key(Template::NewLead, "l1"),
        idempotency_key(Template::NewLead, "l2")
    );
    assert_eq!(
        Notification::Payment(payment()).idempotency_key(),
        idempotency_key(Template::Payment, "evt_123")
    );
}

const SLACK: &str = "https://hooks.slack.com/services/T000/B000/SECRETPATH?token=SECRETQUERY";

#[test]
fn destinations_parse() {
    let d = Destinations::parse(&format!(
        r#"{{"hot-leads":"{SLACK}","ops":"http://localhost:8787/hook"}}"#
    ))
    .unwrap();
    assert_eq!(d.get(Channel::HotLeads).unwrap().as_str(), SLACK);
    assert_eq!(d.get(Channel::LeadsIncoming), None);
    assert_eq!(
        d.channels().collect::<Vec<_>>(),
        vec![Channel::HotLeads, Channel::Ops]
    );
    let dbg = format!("{d:?}");
    assert!(!dbg.contains("SECRET"), "{dbg}");
    assert!(dbg.contains("https://hooks.slack.com/…"));
    assert_eq!(Destinations::parse("{}").unwrap(), Destinations::default());
    assert_eq!(
        WebhookUrl::parse("http://[::1]:8080/x").unwrap().redacted(),
        "http://[::1]:8080/…"
    );
    assert!(WebhookUrl::parse("HTTPS://example.com").is_ok());
}

#[test]
fn destination_errors_name_the_channel_never_the_url() {
    let err = |cfg: String| Destinations::parse(&cfg).unwrap_err();
    for (url, why) in [
        ("ftp://example.com/SECRET", "URL must use http or https"),
        (
            "example.com/SECRET",
            "URL must start with http:// or https://",
        ),
        ("https:///SECRET", "URL must name a host"),
        (
            "https://user:SECRET@example.com/",
            "URL must not carry credentials before the host",
        ),
        (
            "https://exa mple.com/SECRET",
            "URL must be ASCII without spaces (percent-encode the rest)",
        ),
        ("https://example.com:0/SECRET", "URL has a malformed port"),
        (
            "https://example.com:99999/SECRET",
            "URL has a malformed port",
        ),
        ("https://example.com:/SECRET", "URL has a malformed port"),
        ("https://exa_mple..com/SECRET", "URL has a malformed host"),
        ("https://[zz]/SECRET", "URL has a malformed IPv6 host"),
        ("https://[::1/SECRET", "URL has a malformed IPv6 host"),
    ] {
        let e = err(format!(r#"{{"ops":"{url}"}}"#));
        assert_eq!(
            e,
            DestinationError::InvalidUrl {
                channel: Channel::Ops,
                why
            },
            "{url}"
        );
        assert!(!e.to_string().contains("SECRET"));
        assert!(e.to_string().starts_with("channel ops: "));
        assert_eq!(e.code(), "config_error");
    }
    assert_eq!(
        err(r#"{"ops":42}"#.into()),
        DestinationError::InvalidUrl {
            channel: Channel::Ops,
            why: "must be a string"
        }
    );
    assert_eq!(
        err(r#"{"hot_leads":"https://x.io"}"#.into()),
        DestinationError::UnknownChannel("hot_leads".into())
    );
    assert_eq!(err("[]".into()), DestinationError::NotAnObject);
    let e = err(format!(r#"{{"ops":"{SLACK}""#));
    assert_eq!(e, DestinationError::NotAnObject);
    let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
    assert!(WebhookUrl::parse(&long).is_err());
}

const SECRET: &[u8] = b"whsec_test_secret";
const BODY: &[u8] = br#"{"type":"payment.succeeded"}"#;
const TS: u64 = 1_700_000_000;

#[test]
fn signatures_match_an_independent_hmac() {
    // python3: hmac.new(b"whsec_test_secret", b'1700000000.{"type":"payment.succeeded"}',
    //                   hashlib.sha256).hexdigest()
    assert_eq!(
        sign(SECRET, TS, BODY),
        "v1=3187151a9fae5b2a1eff8499c64aea7b7791b9a002e3e0c58d1a24d133f5bb4a"
    );
    let sig = sign(SECRET, TS, BODY);
    assert_eq!(
        verify_signature(SECRET, &TS.to_string(), &sig, BODY, TS, DEFAULT_TOLERANCE_S),
        Ok(())
    );
    let upper = format!("v1={}", sig[3..].to_uppercase());
    assert!(verify_signature(SECRET, "1700000000", &upper, BODY, TS, 0).is_ok());
}

#[test]
fn replay_window_boundaries_are_inclusive() {
    let sig = sign(SECRET, TS, BODY);
    let at = |now: u64, tol: u64| verify_signature(SECRET, "1700000000", &sig, BODY, now, tol);
    assert_eq!(at(TS + 300, 300), Ok(()));
    assert_eq!(
        at(TS + 301, 300),
        Err(WebhookError::Stale {
            age_s: 301,
            tolerance_s: 300
        })
    );
    assert_eq!(at(TS - 300, 300), Ok(()));
    assert_eq!(
        at(TS - 301, 300),
        Err(WebhookError::FromTheFuture {
            ahead_s: 301,
            tolerance_s: 300
        })
    );
    assert_eq!(at(TS, 0), Ok(()));
    assert_eq!(at(TS + 1, 0).unwrap_err().code(), "stale_timestamp");
    assert_eq!(at(TS - 1, 0).unwrap_err().code(), "stale_timestamp");
    // Extremes saturate instead of overflowing.
    assert_eq!(at(0, u64::MAX), Ok(()));
    let big = sign(SECRET, u64::MAX, BODY);
    assert_eq!(
        verify_signature(SECRET, &u64::MAX.to_string(), &big, BODY, 0, 10)
            .unwrap_err()
            .code(),
        "stale_timestamp"
    );
}

#[test]
fn signature_refusals() {
    let sig = sign(SECRET, TS, BODY);
    let ts = "1700000000";
    let v = |secret: &[u8], t: &str, s: &str, body: &[u8]| {
        verify_signature(secret, t, s, body, TS, DEFAULT_TOLERANCE_S).map_err(|e| e.code())
    };
    assert_eq!(v(SECRET, "", &sig, BODY), Err("missing_signature"));
    assert_eq!(v(SECRET, ts, "  ", BODY), Err("missing_signature"));
    assert_eq!(v(b"", ts, &sig, BODY), Err("config_error"));
    assert_eq!(v(SECRET, ts, &sig, b"{}"), Err("bad_signature"));
    assert_eq!(v(b"other", ts, &sig, BODY), Err("bad_signature"));
    assert_eq!(v(SECRET, "1700000001", &sig, BODY), Err("bad_signature"));
    assert_eq!(v(SECRET, "+1700000000", &sig, BODY), Err("bad_signature"));
    assert_eq!(v(SECRET, "1.7e9", &sig, BODY), Err("bad_signature"));
    assert_eq!(v(SECRET, ts, &sig[3..], BODY), Err("bad_signature"));
    assert_eq!(v(SECRET, ts, &sig[..66], BODY), Err("bad_signature"));
    assert_eq!(
        v(SECRET, ts, &format!("v0={}", &sig[3..]), BODY),
        Err("bad_signature")
    );
    assert_eq!(
        v(SECRET, ts, &format!("{sig}zz"), BODY),
        Err("bad_signature")
    );
    // Rotation: any v1 entry may match; other schemes are skipped.
    let rotated = format!("v0=abc, v1={}, {sig}", "0".repeat(64));
    assert_eq!(v(SECRET, ts, &rotated, BODY), Ok(()));
    let many = [sig.as_str(); MAX_SIGNATURES + 1].join(",");
    assert_eq!(v(SECRET, ts, &many, BODY), Err("bad_signature"));
    let many = [sig.as_str(); MAX_SIGNATURES].join(",");
    assert_eq!(v(SECRET, ts, &many, BODY), Ok(()));
    let long = format!("{sig},v0={}", "a".repeat(MAX_SIGNATURE_HEADER_LEN));
    assert_eq!(v(SECRET, ts, &long, BODY), Err("bad_signature"));
    // A forged request with an old timestamp is told "bad signature", not "stale".
    assert_eq!(
        verify_signature(SECRET, "1", &sig, BODY, TS, 300).map_err(|e| e.code()),
        Err("bad_signature")
    );
}

#[test]
fn payment_events_parse() {
    let p = PaymentEvent::parse(
        br#"{"type":"payment.succeeded","id":"evt_123","amount":199950,"currency":"usd",
            "customer":"cus_42","livemode":false,"metadata":{"x":1}}"#,
    )
    .unwrap();
    assert_eq!(p, payment());
    let p = PaymentEvent::parse(
        br#"{"type":"payment.failed","id":"evt_1","amount":0,"currency":"EUR","customer":null}"#,
    )
    .unwrap();
    assert_eq!((p.kind, p.customer), (PaymentKind::Failed, None));
    assert_eq!(
        serde_json::to_value(payment()).unwrap(),
        json!({"type":"payment.succeeded","id":"evt_123","amount":199950,"currency":"USD","customer":"cus_42"})
    );
}

#[test]
fn payment_event_refusals() {
    let code = |body: &str| PaymentEvent::parse(body.as_bytes()).unwrap_err().code();
    assert_eq!(
        code(r#"{"type":"customer.created","id":"x"}"#),
        "unsupported_event"
    );
    for body in [
        r#"{"id":"evt_1"}"#,
        r#"{"type":"payment.succeeded","id":"evt_1","currency":"USD"}"#,
        r#"{"type":"payment.succeeded","id":"evt_1","amount":-5,"currency":"USD"}"#,
        r#"{"type":"payment.succeeded","id":"evt_1","amount":1.5,"currency":"USD"}"#,
        r#"{"type":"payment.succeeded","id":"evt_1","amount":"5","currency":"USD"}"#,
        r#"{"type":"payment.succeeded","id":"","amount":5,"currency":"USD"}"#,
        r#"{"type":"payment.succeeded","id":"evt 1","amount":5,"currency":"USD"}"#,
        r#"{"type":"payment.succeeded","id":"evt_1","amount":5,"currency":"US"}"#,
        r#"{"type":"payment.succeeded","id":"evt_1","amount":5,"currency":"U$D"}"#,
        r#"{"type":"payment.succeeded","id":"evt_1","amount":5,"currency":"USD","customer":"a\nb"}"#,
        r#"{"type":"payment.succeeded","id":"evt_1","amount":5,"currency":"USD","customer":{"id":"c"}}"#,
        "not json",
    ] {
        assert_eq!(code(body), "invalid_event", "{body}");
    }
    let long_id = format!(
        r#"{{"type":"payment.succeeded","id":"{}","amount":5,"currency":"USD"}}"#,
        "e".repeat(MAX_EVENT_FIELD_CHARS + 1)
    );
    assert_eq!(code(&long_id), "invalid_event");
    let mut big = br#"{"type":"payment.succeeded"}"#.to_vec();
    big.resize(MAX_EVENT_BODY_BYTES + 1, b' ');
    assert_eq!(PaymentEvent::parse(&big).unwrap_err(), EventError::TooLarge);
}

#[test]
fn routing_threshold() {
    assert_eq!(route(HOT_THRESHOLD - 1), Channel::LeadsIncoming);
    assert_eq!(route(HOT_THRESHOLD), Channel::HotLeads);
    assert_eq!(route(100), Channel::HotLeads);
}
