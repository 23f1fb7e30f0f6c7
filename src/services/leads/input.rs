//! A lead as sent and as accepted: [`LeadInput`] (the body of `POST /api/leads`),
//! [`parse_input`], [`validate`] into a [`Lead`], the [`Timeline`] and the text rules every
//! typed field obeys (length, control and bidi characters, source tokens).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::codes;
use super::email::{normalize_email, MAX_EMAIL_LEN};
use super::phone::{normalize_phone, Country, MAX_PHONE_CHARS};
use crate::http::error::ApiError;
use crate::services::fields::FieldError;

/// Largest accepted lead body (`POST /api/leads`), in bytes.
pub const MAX_LEAD_BODY_BYTES: usize = 16 * 1024;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 120;
/// Longest property address, in characters.
pub const MAX_ADDRESS_CHARS: usize = 300;
/// Largest `property` facts object, in bytes of compact JSON.
pub const MAX_PROPERTY_BYTES: usize = 4 * 1024;
/// Longest source token, in characters.
pub const MAX_SOURCE_CHARS: usize = 32;
/// Longest free-text notes, in characters.
pub const MAX_NOTES_CHARS: usize = 2000;

/// `POST /api/leads` as sent. Every field is optional at this stage so that [`validate`] can
/// report all missing ones together; only a wrong JSON type or an unknown key fails earlier
/// (as `invalid_request`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    /// The person's name. Required.
    #[serde(default)]
    pub name: Option<String>,
    /// Email address. At least one of `email` and `phone` is required.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number, national (in the default country) or international (`+…` or `00…`).
    #[serde(default)]
    pub phone: Option<String>,
    /// The property's address, free text.
    #[serde(default)]
    pub address: Option<String>,
    /// Structured property facts for a valuation, passed through untouched: only its size and
    /// that it is an object are checked here; the valuation module validates its contents.
    #[serde(default)]
    pub property: Option<Value>,
    /// When the person wants to move: one of [`Timeline::ALL`]'s names. Optional.
    #[serde(default)]
    pub timeline: Option<String>,
    /// Where the lead came from: a short token such as `web`, `chatbot`, `referral`. Required.
    #[serde(default)]
    pub source: Option<String>,
    /// Free-text notes (multi-line).
    #[serde(default)]
    pub notes: Option<String>,
}

/// Parses a lead body: refuses more than [`MAX_LEAD_BODY_BYTES`] (413) before parsing, then
/// classifies bad JSON like every other endpoint (`invalid_json` / `invalid_request`).
pub fn parse_input(body: &[u8]) -> Result<LeadInput, ApiError> {
    if body.len() > MAX_LEAD_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_LEAD_BODY_BYTES,
        });
    }
    crate::http::bodies::parse_json(body)
}

/// How soon the person wants to buy or sell.
///
/// Wire names: `now`, `3_months`, `6_months`, `12_months`, `browsing` ("within N months";
/// `browsing` means no plan yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Timeline {
    /// Ready now.
    Now,
    /// Within three months.
    Within3Months,
    /// Within six months.
    Within6Months,
    /// Within a year.
    Within12Months,
    /// Just looking.
    Browsing,
}

impl Timeline {
    /// Every timeline, most urgent first.
    pub const ALL: [Timeline; 5] = [
        Self::Now,
        Self::Within3Months,
        Self::Within6Months,
        Self::Within12Months,
        Self::Browsing,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Now => "now",
            Self::Within3Months => "3_months",
            Self::Within6Months => "6_months",
            Self::Within12Months => "12_months",
            Self::Browsing => "browsing",
        }
    }

    /// Parses a wire name (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// A short human label for notifications and the ops view.
    pub fn label(self) -> &'static str {
        match self {
            Self::Now => "now",
            Self::Within3Months => "within 3 months",
            Self::Within6Months => "within 6 months",
            Self::Within12Months => "within 12 months",
            Self::Browsing => "just browsing",
        }
    }

    /// Points this timeline adds to a lead's score (see `score`).
    pub fn points(self) -> i32 {
        match self {
            Self::Now => 35,
            Self::Within3Months => 25,
            Self::Within6Months => 15,
            Self::Within12Months => 5,
            Self::Browsing => 0,
        }
    }
}

impl TryFrom<String> for Timeline {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown timeline; use one of {}", timeline_names()))
    }
}

impl From<Timeline> for &'static str {
    fn from(t: Timeline) -> Self {
        t.as_str()
    }
}

fn timeline_names() -> String {
    let names: Vec<&str> = Timeline::ALL.iter().map(|t| t.as_str()).collect();
    names.join(", ")
}

/// A validated, normalised lead, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// Trimmed name.
    pub name: String,
    /// Normalised email (see [`normalize_email`]).
    pub email: Option<String>,
    /// E.164 phone number (see [`normalize_phone`]).
    pub phone: Option<String>,
    /// Trimmed address.
    pub address: Option<String>,
    /// Property facts, exactly as sent.
    pub property: Option<Value>,
    /// Timeline, if given.
    pub timeline: Option<Timeline>,
    /// Lowercase source token.
    pub source: String,
    /// Trimmed notes.
    pub notes: Option<String>,
}

/// Validates and normalises a lead, reporting every field error at once.
///
/// `default_country` interprets national phone numbers; it comes from configuration through
/// [`Country::from_iso`], so an unknown country is a startup error, never a per-lead one.
/// Rules: `name` and `source` required; at least one of `email`/`phone` (else `contact`
/// gets [`codes::CONTACT_REQUIRED`]); every text within its `MAX_*` limit; single-line fields
/// free of control characters, notes free of them except tab and line breaks; no field may
/// carry bidirectional-override characters (they make the ops view lie about the text).
pub fn validate(input: LeadInput, default_country: &Country) -> Result<Lead, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = keep(&mut errors, "name", text(input.name, MAX_NAME_CHARS, false));
    let email = keep(
        &mut errors,
        "email",
        text(input.email, MAX_EMAIL_LEN, false).and_then(|v| {
            v.map(|raw| normalize_email(&raw).map_err(|e| (e.code(), e.to_string())))
                .transpose()
        }),
    );
    let phone = keep(
        &mut errors,
        "phone",
        text(input.phone, MAX_PHONE_CHARS, false).and_then(|v| {
            v.map(|raw| {
                normalize_phone(&raw, default_country).map_err(|e| (e.code(), e.to_string()))
            })
            .transpose()
        }),
    );
    let address = keep(
        &mut errors,
        "address",
        text(input.address, MAX_ADDRESS_CHARS, false),
    );
    let property = keep(&mut errors, "property", check_property(input.property));
    let timeline = keep(&mut errors, "timeline", timeline(input.timeline));
    let source = keep(
        &mut errors,
        "source",
        text(input.source, MAX_SOURCE_CHARS, false).and_then(|v| v.map(source_token).transpose()),
    );
    let notes = keep(
        &mut errors,
        "notes",
        text(input.notes, MAX_NOTES_CHARS, true),
    );

    for (field, missing) in [("name", name.is_none()), ("source", source.is_none())] {
        if missing && !errors.iter().any(|e| e.field == field) {
            errors.push(FieldError::new(
                field,
                codes::REQUIRED,
                format!("{field} is required"),
            ));
        }
    }
    let contact_failed = errors
        .iter()
        .any(|e| e.field == "email" || e.field == "phone");
    if email.is_none() && phone.is_none() && !contact_failed {
        errors.push(FieldError::new(
            "contact",
            codes::CONTACT_REQUIRED,
            "give an email address or a phone number (or both)",
        ));
    }

    match (name, source) {
        (Some(name), Some(source)) if errors.is_empty() => Ok(Lead {
            name,
            email,
            phone,
            address,
            property,
            timeline,
            source,
            notes,
        }),
        _ => Err(errors),
    }
}

/// A field check's failure: stable code and message.
type Problem = (&'static str, String);

/// Records a field's failure and yields its value (absent on failure).
fn keep<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    result: Result<Option<T>, Problem>,
) -> Option<T> {
    result.unwrap_or_else(|(code, message)| {
        errors.push(FieldError::new(field, code, message));
        None
    })
}

fn timeline(value: Option<String>) -> Result<Option<Timeline>, Problem> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => Timeline::parse(t).map(Some).ok_or_else(|| {
            (
                codes::INVALID_TIMELINE,
                format!("timeline must be one of {}", timeline_names()),
            )
        }),
    }
}

/// Trims a text field, treats blank as absent, and checks its length and characters.
fn text(
    value: Option<String>,
    max_chars: usize,
    multiline: bool,
) -> Result<Option<String>, Problem> {
    let Some(value) = value else { return Ok(None) };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err((
            codes::TOO_LONG,
            format!("at most {max_chars} characters (got {chars})"),
        ));
    }
    let bad = |c: char| {
        is_bidi_control(c) || (c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
    };
    if trimmed.chars().any(bad) {
        return Err((
            codes::INVALID_CHARACTERS,
            "contains control or bidirectional-override characters".into(),
        ));
    }
    Ok(Some(trimmed.to_string()))
}

/// Unicode bidirectional embedding/override/isolate controls (U+202A–U+202E, U+2066–U+2069).
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn source_token(raw: String) -> Result<String, Problem> {
    let s = raw.to_ascii_lowercase();
    let mut chars = s.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(s)
    } else {
        Err((
            codes::INVALID_SOURCE,
            "source is a short token of letters, digits, '_' and '-' (e.g. web, chatbot, referral)"
                .into(),
        ))
    }
}

fn check_property(property: Option<Value>) -> Result<Option<Value>, Problem> {
    match property {
        None => Ok(None),
        Some(v @ Value::Object(_)) => {
            let size = v.to_string().len();
            if size > MAX_PROPERTY_BYTES {
                Err((
                    codes::TOO_LONG,
                    format!("at most {MAX_PROPERTY_BYTES} bytes of JSON (got {size})"),
                ))
            } else {
                Ok(Some(v))
            }
        }
        Some(_) => Err((
            codes::INVALID_PROPERTY,
            "property must be a JSON object of property facts".into(),
        )),
    }
}
