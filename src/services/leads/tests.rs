//! Unit tests of lead intake: validation, normalisation, dedupe, scoring, status, export and
//! listing.

use super::codes;
use super::email::*;
use super::export::*;
use super::input::*;
use super::page::*;
use super::phone::*;
use super::score::*;
use super::status::*;
use crate::services::fields::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
use serde_json::Value;

fn us() -> &'static Country {
    Country::from_iso("US").unwrap()
}

fn country(iso: &str) -> &'static Country {
    Country::from_iso(iso).unwrap()
}

fn input(v: Value) -> LeadInput {
    serde_json::from_value(v).unwrap()
}

fn full_input() -> LeadInput {
    input(json!({
        "name": "  Jane Doe ",
        "email": "Jane.Doe@Example.COM",
        "phone": "(415) 555-2671",
        "address": "1 Main St, Springfield",
        "property": {"lotsize": 5000, "bedrooms": 3},
        "timeline": "now",
        "source": "Web",
        "notes": "Call after 5pm.\nPrefers text."
    }))
}

fn codes_of(errors: &[FieldError]) -> Vec<(String, &'static str)> {
    errors.iter().map(|e| (e.field.clone(), e.code)).collect()
}

fn pair(field: &str, code: &'static str) -> (String, &'static str) {
    (field.to_string(), code)
}

#[test]
fn valid_lead_is_normalised() {
    let lead = validate(full_input(), us()).unwrap();
    assert_eq!(lead.name, "Jane Doe");
    assert_eq!(lead.email.as_deref(), Some("Jane.Doe@example.com"));
    assert_eq!(lead.phone.as_deref(), Some("+14155552671"));
    assert_eq!(lead.timeline, Some(Timeline::Now));
    assert_eq!(lead.source, "web");
    assert_eq!(lead.property, Some(json!({"lotsize": 5000, "bedrooms": 3})));
    assert_eq!(
        lead.notes.as_deref(),
        Some("Call after 5pm.\nPrefers text.")
    );
}

#[test]
fn every_field_error_is_reported_at_once() {
    let errors = validate(
        input(json!({
            "name": "x".repeat(MAX_NAME_CHARS + 1),
            "email": "not-an-email",
            "phone": "12",
            "address": "a\u{202E}b",
            "property": [1, 2],
            "timeline": "soon",
            "source": "web site",
            "notes": "n".repeat(MAX_NOTES_CHARS + 1)
        })),
        us(),
    )
    .unwrap_err();
    assert_eq!(
        codes_of(&errors),
        vec![
            pair("name", codes::TOO_LONG),
            pair("email", codes::INVALID_EMAIL),
            pair("phone", codes::INVALID_PHONE),
            pair("address", codes::INVALID_CHARACTERS),
            pair("property", codes::INVALID_PROPERTY),
            pair("timeline", codes::INVALID_TIMELINE),
            pair("source", codes::INVALID_SOURCE),
            pair("notes", codes::TOO_LONG),
        ]
    );
    assert!(describe(&errors).starts_with("name: at most 120 characters"));
}

#[test]
fn required_fields_and_contact_rule() {
    let errors = validate(LeadInput::default(), us()).unwrap_err();
    assert_eq!(
        codes_of(&errors),
        vec![
            pair("name", codes::REQUIRED),
            pair("source", codes::REQUIRED),
            pair("contact", codes::CONTACT_REQUIRED),
        ]
    );
    // Blank strings are absent, as browsers send empty inputs.
    let errors = validate(
        input(json!({"name": " ", "email": "", "phone": "  ", "source": "web"})),
        us(),
    )
    .unwrap_err();
    assert_eq!(
        codes_of(&errors),
        vec![
            pair("name", codes::REQUIRED),
            pair("contact", codes::CONTACT_REQUIRED)
        ]
    );
    // A bad email is its own error, not also "contact required".
    let errors = validate(
        input(json!({"name": "A", "email": "x", "source": "web"})),
        us(),
    )
    .unwrap_err();
    assert_eq!(codes_of(&errors), vec![pair("email", codes::INVALID_EMAIL)]);
    // Either contact alone suffices.
    for extra in [
        json!({"email": "a@b.co"}),
        json!({"phone": "+447946095800"}),
    ] {
        let mut v = json!({"name": "A", "source": "chatbot"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert!(validate(input(v), us()).is_ok());
    }
}

#[test]
fn input_refuses_unknown_fields_and_oversized_bodies() {
    assert_eq!(
        parse_input(br#"{"name":"A","nmae":"B"}"#)
            .unwrap_err()
            .code(),
        "invalid_request"
    );
    assert_eq!(parse_input(b"{").unwrap_err().code(), "invalid_json");
    let big = vec![b' '; MAX_LEAD_BODY_BYTES + 1];
    assert_eq!(parse_input(&big).unwrap_err().status(), 413);
    let mut ok = br#"{"name":"A"}"#.to_vec();
    ok.resize(MAX_LEAD_BODY_BYTES, b' ');
    assert!(parse_input(&ok).is_ok());
    assert_eq!(parse_input(br#"{"property":null}"#).unwrap().property, None);
}

#[test]
fn field_limits_are_exact() {
    let base = || json!({"name": "A", "email": "a@b.co", "source": "web"});
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        validate(input(b), us())
    };
    assert!(with("name", json!("é".repeat(MAX_NAME_CHARS))).is_ok());
    assert!(with("name", json!("é".repeat(MAX_NAME_CHARS + 1))).is_err());
    assert!(with("address", json!("a".repeat(MAX_ADDRESS_CHARS))).is_ok());
    assert!(with("address", json!("a".repeat(MAX_ADDRESS_CHARS + 1))).is_err());
    assert!(with("notes", json!("a".repeat(MAX_NOTES_CHARS))).is_ok());
    assert!(with("source", json!("a".repeat(MAX_SOURCE_CHARS))).is_ok());
    assert_eq!(
        codes_of(&with("source", json!("a".repeat(MAX_SOURCE_CHARS + 1))).unwrap_err()),
        vec![pair("source", codes::TOO_LONG)]
    );
    // Property: size counted on compact JSON.
    let pad = |n: usize| json!({"k": "x".repeat(n)});
    let overhead = pad(0).to_string().len();
    assert!(with("property", pad(MAX_PROPERTY_BYTES - overhead)).is_ok());
    assert_eq!(
        codes_of(&with("property", pad(MAX_PROPERTY_BYTES - overhead + 1)).unwrap_err()),
        vec![pair("property", codes::TOO_LONG)]
    );
    // Control characters: refused on one line, tab and newlines allowed in notes.
    assert!(with("name", json!("A\u{0007}")).is_err());
    assert!(with("name", json!("A\nB")).is_err());
    assert!(with("notes", json!("a\r\n\tb")).is_ok());
    assert!(with("notes", json!("a\u{2066}b")).is_err());
}

#[test]
fn timelines_and_statuses_round_trip_their_wire_names() {
    for t in Timeline::ALL {
        assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        assert_eq!(
            serde_json::from_value::<Timeline>(json!(t.as_str())).unwrap(),
            t
        );
    }
    assert!(serde_json::from_value::<Timeline>(json!("Now")).is_err());
    for s in LeadStatus::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        assert_eq!(LeadStatus::parse(s.as_str()), Some(s));
    }
    assert!(serde_json::from_value::<LeadStatus>(json!("open")).is_err());
}

#[test]
fn emails() {
    let ok = |s: &str| normalize_email(s).unwrap();
    let bad = |s: &str| normalize_email(s).unwrap_err();
    assert_eq!(ok(" Jane+tag@Example.Co.UK "), "Jane+tag@example.co.uk");
    assert_eq!(ok("o'brien@müller.de"), "o'brien@müller.de");
    assert_eq!(ok("x@ÉXAMPLE.com"), "x@éxample.com");
    for s in [
        "plain",
        "@example.com",
        "a@",
        "a@localhost",
        "a b@example.com",
        "a@exa mple.com",
        ".a@example.com",
        "a.@example.com",
        "a..b@example.com",
        "\"a\"@example.com",
        "a@b@example.com",
        "a@-example.com",
        "a@example-.com",
        "a@example..com",
        "a@example.com.",
        "a@1.2.3.4",
        "a@[1.2.3.4]",
        "a@exa_mple.com",
    ] {
        assert_eq!(bad(s).code(), codes::INVALID_EMAIL, "{s}");
    }
    let local = "l".repeat(MAX_EMAIL_LOCAL_LEN);
    assert!(normalize_email(&format!("{local}@example.com")).is_ok());
    assert!(normalize_email(&format!("{local}l@example.com")).is_err());
    assert!(normalize_email(&format!("a@{}.com", "d".repeat(63))).is_ok());
    assert!(normalize_email(&format!("a@{}.com", "d".repeat(64))).is_err());
    // Total length boundary at exactly MAX_EMAIL_LEN bytes.
    let label = "d".repeat(60);
    let domain = format!("{label}.{label}.{label}.{label}");
    let at_limit = format!("{}@{domain}", "l".repeat(MAX_EMAIL_LEN - 1 - domain.len()));
    assert_eq!(at_limit.len(), MAX_EMAIL_LEN);
    assert!(normalize_email(&at_limit).is_ok());
    assert_eq!(bad(&format!("l{at_limit}")), EmailError::TooLong);
    assert_eq!(EmailError::TooLong.code(), codes::TOO_LONG);
}

#[test]
fn phones_in_national_form() {
    let n = |raw: &str, iso: &str| normalize_phone(raw, country(iso));
    assert_eq!(n("(415) 555-2671", "US").unwrap(), "+14155552671");
    assert_eq!(n("1-415-555-2671", "US").unwrap(), "+14155552671");
    assert_eq!(n("415.555.2671", "CA").unwrap(), "+14155552671");
    assert_eq!(n("020 7946 0958", "GB").unwrap(), "+442079460958");
    assert_eq!(n("07700 900123", "GB").unwrap(), "+447700900123");
    assert_eq!(n("030 1234567", "DE").unwrap(), "+49301234567");
    assert_eq!(n("0151 23456789", "DE").unwrap(), "+4915123456789");
    assert_eq!(n("06 12 34 56 78", "FR").unwrap(), "+33612345678");
    assert_eq!(n("0412 345 678", "AU").unwrap(), "+61412345678");
    assert_eq!(n("09876543210", "IN").unwrap(), "+919876543210");
    assert_eq!(n("98765 43210", "IN").unwrap(), "+919876543210");
    // Italy keeps its leading 0: it is part of the number, not a trunk prefix.
    assert_eq!(n("06 1234 5678", "IT").unwrap(), "+390612345678");
    assert_eq!(n("912 345 678", "ES").unwrap(), "+34912345678");

    // NANP: exactly ten digits, area code and exchange start with 2-9.
    for raw in [
        "555 2671",
        "415 555 26710",
        "115 555 2671",
        "415 155 2671",
        "2 415 555 2671",
    ] {
        assert_eq!(
            n(raw, "US").unwrap_err().code(),
            codes::INVALID_PHONE,
            "{raw}"
        );
    }
    assert!(matches!(
        n("06 12 34 56 7", "FR").unwrap_err(),
        PhoneError::InvalidForCountry { country: "FR", .. }
    ));
    // A trunk 0 after the country code is dropped once; a second 0 is not a number.
    assert!(matches!(
        n("+44 00 20 7946 095", "US").unwrap_err(),
        PhoneError::InvalidForCountry { country: "GB", .. }
    ));
}

#[test]
fn phones_in_international_form() {
    let n = |raw: &str, iso: &str| normalize_phone(raw, country(iso));
    assert_eq!(n("+44 20 7946 0958", "US").unwrap(), "+442079460958");
    assert_eq!(n("+44 (0)20 7946 0958", "US").unwrap(), "+442079460958");
    assert_eq!(n("0044 20 7946 0958", "US").unwrap(), "+442079460958");
    assert_eq!(n("011 44 20 7946 0958", "US").unwrap(), "+442079460958");
    assert_eq!(n("0011 44 20 7946 0958", "AU").unwrap(), "+442079460958");
    assert_eq!(n("00 1 415 555 2671", "GB").unwrap(), "+14155552671");
    assert_eq!(n("+1 (415) 555-2671", "DE").unwrap(), "+14155552671");
    assert_eq!(n("+353 1 234 5678", "US").unwrap(), "+35312345678");
    assert_eq!(n("+39 06 1234 5678", "US").unwrap(), "+390612345678");
    // Unknown calling code: only E.164 bounds.
    assert_eq!(n("+81 3-1234-5678", "US").unwrap(), "+81312345678");
    assert_eq!(n("+683 4002", "US").unwrap(), "+6834002");
    assert_eq!(n("+683 400", "US").unwrap_err(), PhoneError::TooFewDigits);
    assert_eq!(n("+81 1234 5678 90123", "US").unwrap(), "+811234567890123");
    assert_eq!(
        n("+81 1234 5678 901234", "US").unwrap_err(),
        PhoneError::TooManyDigits
    );
    // Known code: that country's plan applies.
    assert!(n("+1 115 555 2671", "GB").is_err());
    assert!(n("+33 6 12 34 56 789", "US").is_err());
    assert_eq!(
        n("+0 123 4567", "US").unwrap_err(),
        PhoneError::InvalidCountryCode
    );
    assert_eq!(n("+", "US").unwrap_err(), PhoneError::NoDigits);
}

#[test]
fn phone_characters_and_length() {
    let n = |raw: &str| normalize_phone(raw, us());
    assert_eq!(
        n("415 555 2671 ext 3").unwrap_err(),
        PhoneError::InvalidCharacter
    );
    assert_eq!(
        n("++1 415 555 2671").unwrap_err(),
        PhoneError::InvalidCharacter
    );
    assert_eq!(n("415+555+2671").unwrap_err(), PhoneError::InvalidCharacter);
    assert_eq!(n("()-").unwrap_err(), PhoneError::NoDigits);
    let padded = format!("{:<width$}", "+14155552671", width = MAX_PHONE_CHARS);
    let padded = padded.replace(' ', "-");
    assert_eq!(n(&padded).unwrap(), "+14155552671");
    assert_eq!(n(&format!("{padded}-")).unwrap_err(), PhoneError::TooLong);
    assert_eq!(PhoneError::TooLong.code(), codes::TOO_LONG);
}

#[test]
fn default_country_is_a_config_choice() {
    assert_eq!(Country::from_iso(" gb ").unwrap().calling_code, "44");
    let err = Country::from_iso("XX").unwrap_err();
    assert_eq!(err.code(), "config_error");
    assert!(err.to_string().contains("known: US, CA, GB"));
    // Calling codes in the table form a prefix code, so a lookup is unambiguous.
    for a in COUNTRIES {
        for b in COUNTRIES {
            if a.calling_code != b.calling_code {
                assert!(!a.calling_code.starts_with(b.calling_code), "{}", a.iso);
            }
        }
        assert!(a.calling_code.len() + a.nsn_digits.1 <= E164_MAX_DIGITS);
    }
}

#[test]
fn dedupe_keys_and_window() {
    let lead = validate(full_input(), us()).unwrap();
    assert_eq!(
        dedupe_keys(&lead),
        vec!["email:jane.doe@example.com", "phone:+14155552671"]
    );
    let email_only = Lead {
        phone: None,
        ..lead.clone()
    };
    assert_eq!(dedupe_keys(&email_only), vec!["email:jane.doe@example.com"]);
    assert!(within_dedupe_window(1000, 1000 + DEDUPE_WINDOW_MS - 1));
    assert!(!within_dedupe_window(1000, 1000 + DEDUPE_WINDOW_MS));
    assert!(within_dedupe_window(5000, 1000));
}

fn bare_lead() -> Lead {
    Lead {
        name: "A".into(),
        email: Some("a@b.co".into()),
        phone: None,
        address: None,
        property: None,
        timeline: None,
        source: "web".into(),
        notes: None,
    }
}

fn rules(s: &Score) -> Vec<(&str, i32)> {
    s.reasons.iter().map(|(r, p)| (r.as_str(), *p)).collect()
}

#[test]
fn best_lead_scores_exactly_100_with_every_reason() {
    let lead = validate(full_input(), us()).unwrap();
    let s = score(
        &lead,
        &ScoreInputs {
            estimated_value: Some(HIGH_VALUE),
            mortgage_balance: Some(HIGH_VALUE / 2),
        },
    );
    assert_eq!(
        rules(&s),
        vec![
            ("contact_email_and_phone", 25),
            ("timeline_now", 35),
            ("address_given", 10),
            ("property_facts_given", 5),
            ("notes_given", 5),
            ("value_1m_plus", 12),
            ("equity_50pct_plus", 8),
        ]
    );
    assert_eq!(s.total, 100);
    assert!(s.total >= HOT_THRESHOLD);
}

#[test]
fn sparse_lead_scores_low() {
    let s = score(&bare_lead(), &ScoreInputs::default());
    assert_eq!(
        rules(&s),
        vec![("contact_email_only", 15), ("timeline_unknown", 0)]
    );
    assert_eq!(s.total, 15);
    assert!(s.total < HOT_THRESHOLD);
    let phone = Lead {
        email: None,
        phone: Some("+14155552671".into()),
        timeline: Some(Timeline::Browsing),
        ..bare_lead()
    };
    let s = score(&phone, &ScoreInputs::default());
    assert_eq!(
        rules(&s),
        vec![("contact_phone_only", 20), ("timeline_browsing", 0)]
    );
}

#[test]
fn timeline_and_value_tiers() {
    let with = |t: Timeline, v: Option<u64>| {
        let lead = Lead {
            timeline: Some(t),
            ..bare_lead()
        };
        score(
            &lead,
            &ScoreInputs {
                estimated_value: v,
                mortgage_balance: None,
            },
        )
        .total
    };
    assert_eq!(
        Timeline::ALL.map(|t| with(t, None)),
        [15 + 35, 15 + 25, 15 + 15, 15 + 5, 15]
    );
    assert_eq!(with(Timeline::Browsing, Some(MID_VALUE - 1)), 15 + 4);
    assert_eq!(with(Timeline::Browsing, Some(MID_VALUE)), 15 + 8);
    assert_eq!(with(Timeline::Browsing, Some(HIGH_VALUE - 1)), 15 + 8);
    assert_eq!(with(Timeline::Browsing, Some(HIGH_VALUE)), 15 + 12);
}

#[test]
fn equity_rules_and_clamping() {
    let eq = |value: u64, mortgage: u64| {
        let s = score(
            &bare_lead(),
            &ScoreInputs {
                estimated_value: Some(value),
                mortgage_balance: Some(mortgage),
            },
        );
        s.reasons.last().cloned().unwrap()
    };
    assert_eq!(eq(500_000, 250_000), ("equity_50pct_plus".into(), 8));
    assert_eq!(eq(500_000, 250_001), ("equity_20pct_plus".into(), 4));
    assert_eq!(eq(500_000, 400_000), ("equity_20pct_plus".into(), 4));
    assert_eq!(eq(500_000, 400_001).0, "value_400k_plus"); // no equity rule
    assert_eq!(eq(500_000, 500_001), ("negative_equity".into(), -10));
    assert_eq!(eq(u64::MAX, 0), ("equity_50pct_plus".into(), 8));
    // The sum can go below zero only through penalties; the total is clamped.
    let worst = Lead {
        email: None,
        ..bare_lead()
    };
    let s = score(
        &worst,
        &ScoreInputs {
            estimated_value: Some(1),
            mortgage_balance: Some(2),
        },
    );
    assert_eq!(s.reasons.iter().map(|r| r.1).sum::<i32>(), -6);
    assert_eq!(s.total, 0);
}

#[test]
fn status_transitions() {
    use LeadStatus::*;
    let allowed: Vec<(LeadStatus, LeadStatus)> = LeadStatus::ALL
        .into_iter()
        .flat_map(|a| LeadStatus::ALL.into_iter().map(move |b| (a, b)))
        .filter(|(a, b)| a != b && can_transition(*a, *b))
        .collect();
    assert_eq!(
        allowed,
        vec![
            (New, Contacted),
            (New, Qualified),
            (New, Lost),
            (New, Spam),
            (Contacted, Qualified),
            (Contacted, Lost),
            (Contacted, Spam),
            (Qualified, Won),
            (Qualified, Lost),
            (Lost, Contacted),
            (Spam, New),
        ]
    );
    for s in LeadStatus::ALL {
        assert!(can_transition(s, s));
    }
    assert_eq!(transition(New, Contacted), Ok(Contacted));
    let err = transition(Won, Lost).unwrap_err();
    assert_eq!(err.code(), codes::INVALID_TRANSITION);
    assert_eq!(err.to_string(), "a won lead cannot become lost");
}

fn row(id: &str, created_at_ms: u64, score: u8, status: LeadStatus) -> LeadRow {
    LeadRow {
        id: id.into(),
        created_at_ms,
        name: "Jane".into(),
        email: Some("jane@example.com".into()),
        phone: None,
        address: None,
        timeline: None,
        source: "web".into(),
        score,
        status,
        estimated_value: None,
    }
}

#[test]
fn csv_quotes_and_guards() {
    let r = LeadRow {
        name: "Doe, \"JJ\"".into(),
        phone: Some("+14155552671".into()),
        address: Some("=HYPERLINK(\"http://x\")".into()),
        timeline: Some(Timeline::Within3Months),
        estimated_value: Some(450_000),
        ..row("l1", 1_700_000_000_000, 72, LeadStatus::New)
    };
    let r2 = LeadRow {
        name: "line1\nline2".into(),
        email: None,
        address: Some("@SUM(A1)".into()),
        source: "-2+3".into(),
        ..row("l2", 5, 0, LeadStatus::Spam)
    };
    assert_eq!(
        to_csv(&[r, r2]),
        "id,created_at_ms,name,email,phone,address,timeline,source,score,status,estimated_value\r\n\
         l1,1700000000000,\"Doe, \"\"JJ\"\"\",jane@example.com,'+14155552671,\
         \"'=HYPERLINK(\"\"http://x\"\")\",3_months,web,72,new,450000\r\n\
         l2,5,\"line1\nline2\",,,'@SUM(A1),,'-2+3,0,spam,\r\n"
    );
    assert_eq!(to_csv(&[]), format!("{}\r\n", CSV_COLUMNS.join(",")));
    let mut out = String::new();
    for cell in ["\tx", "\rx", "a-b", "ok"] {
        push_cell(&mut out, cell);
        out.push('|');
    }
    assert_eq!(out, "'\tx|\"'\rx\"|a-b|ok|");
}

#[test]
fn cursors_round_trip_and_refuse_forgeries() {
    let c = Cursor {
        created_at_ms: 1_700_000_000_123,
        id: "lead_Ab-9".into(),
    };
    let s = c.encode();
    assert!(!s.contains(['=', '+', '/']));
    assert_eq!(Cursor::decode(&s).unwrap(), c);
    let enc = |t: &str| URL_SAFE_NO_PAD.encode(t);
    for bad in [
        "!!!".to_string(),
        enc("123"),
        enc(":abc"),
        enc("12x:abc"),
        enc("+12:abc"),
        enc("99999999999999999999:abc"),
        enc("12:"),
        enc("12:a b"),
        enc(&format!("12:{}", "a".repeat(MAX_ID_LEN + 1))),
        "A".repeat(MAX_CURSOR_LEN + 1),
    ] {
        assert_eq!(
            Cursor::decode(&bad).unwrap_err().code,
            codes::INVALID_CURSOR,
            "{bad}"
        );
    }
    let longest = Cursor {
        created_at_ms: u64::MAX,
        id: "a".repeat(MAX_ID_LEN),
    };
    assert_eq!(Cursor::decode(&longest.encode()).unwrap(), longest);
}

#[test]
fn filter_parsing() {
    let f = LeadFilter::from_query([
        ("min_score", "80"),
        ("status", "qualified"),
        ("since", "1000"),
        ("until", "2000"),
        ("limit", "200"),
    ])
    .unwrap();
    assert_eq!(
        f,
        LeadFilter {
            min_score: Some(80),
            status: Some(LeadStatus::Qualified),
            since_ms: Some(1000),
            until_ms: Some(2000),
            limit: MAX_PAGE,
            cursor: None,
        }
    );
    assert_eq!(
        LeadFilter::from_query(Vec::<(String, String)>::new()).unwrap(),
        LeadFilter::default()
    );
    let errors = LeadFilter::from_query([
        ("min_score", "101"),
        ("status", "open"),
        ("since", "-1"),
        ("limit", "0"),
        ("limit", "5"),
        ("cursor", "zzz"),
        ("minscore", "5"),
    ])
    .unwrap_err();
    assert_eq!(
        codes_of(&errors),
        vec![
            pair("min_score", codes::INVALID_PARAMETER),
            pair("status", codes::INVALID_STATUS),
            pair("since", codes::INVALID_PARAMETER),
            pair("limit", codes::INVALID_PARAMETER),
            pair("limit", codes::DUPLICATE_PARAMETER),
            pair("cursor", codes::INVALID_CURSOR),
            pair("minscore", codes::UNKNOWN_PARAMETER),
        ]
    );
    let errors = LeadFilter::from_query([("since", "2000"), ("until", "2000")]).unwrap_err();
    assert_eq!(codes_of(&errors), vec![pair("until", codes::INVALID_RANGE)]);
    for (v, ok) in [("1", true), ("201", false), ("1.5", false), (" 5", false)] {
        assert_eq!(LeadFilter::from_query([("limit", v)]).is_ok(), ok, "{v}");
    }
}

#[test]
fn filter_semantics_and_pagination_visit_every_row_once() {
    // 30 rows, several sharing a millisecond, listed newest first in pages of 7.
    let mut rows: Vec<LeadRow> = (0..30)
        .map(|i| {
            let status = if i % 3 == 0 {
                LeadStatus::Won
            } else {
                LeadStatus::New
            };
            row(
                &format!("id{i:02}"),
                1000 + (i / 4) as u64,
                (i * 3) as u8,
                status,
            )
        })
        .collect();
    rows.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
    let base = LeadFilter::from_query([("limit", "7"), ("min_score", "9")]).unwrap();
    let expected: Vec<String> = rows
        .iter()
        .filter(|r| r.score >= 9)
        .map(|r| r.id.clone())
        .collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut f = base.clone();
        f.cursor = cursor.as_deref().map(|c| Cursor::decode(c).unwrap());
        let fetched: Vec<LeadRow> = rows
            .iter()
            .filter(|r| f.matches(r))
            .take(f.limit + 1)
            .cloned()
            .collect();
        let page = Page::from_rows(fetched, f.limit);
        assert!(page.leads.len() <= 7);
        seen.extend(page.leads.iter().map(|r| r.id.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, expected);

    let f =
        LeadFilter::from_query([("status", "won"), ("since", "1002"), ("until", "1004")]).unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .filter(|r| f.matches(r))
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, vec!["id15", "id12", "id09"]);
}

#[test]
fn exact_page_has_no_next_cursor() {
    let rows: Vec<LeadRow> = (0..3)
        .map(|i| row(&format!("r{i}"), 10 - i, 0, LeadStatus::New))
        .collect();
    let page = Page::from_rows(rows.clone(), 3);
    assert_eq!((page.leads.len(), page.next_cursor), (3, None));
    let page = Page::from_rows(rows, 2);
    assert_eq!(
        page.next_cursor
            .as_deref()
            .map(|c| Cursor::decode(c).unwrap()),
        Some(Cursor {
            created_at_ms: 9,
            id: "r1".into()
        })
    );
}
