//! Lead intake: validation, normalisation, dedupe keys, scoring, routing, status and export.
//!
//! A lead is the one input of the service that a person types (into a form, or through the
//! chatbot), so it is where bad data enters. Every decision about a lead is a pure function
//! here — is it valid ([`validate`]), who is it ([`dedupe_keys`]), how promising is it
//! ([`score`]), where does it go ([`route`]), what may happen to it next
//! ([`can_transition`]), how does it leave ([`to_csv`]), how is it listed ([`LeadFilter`],
//! [`Cursor`], [`Page`]) — so the Worker glue only reads the body, calls these and moves rows
//! to and from D1. Nothing here reads a clock or draws a random number: ids and times come in.
//!
//! # Choices worth knowing
//!
//! - Validation reports **every** field error at once, so a form can mark all bad fields in
//!   one round trip. Blank optional fields (`""`, whitespace) count as absent, as browsers
//!   send them.
//! - Emails are validated pragmatically (no quoted local parts, no IP-literal domains); the
//!   domain is lowercased, the local part is kept as typed (RFC 5321 lets it be
//!   case-sensitive), and only the dedupe key lowercases the whole address.
//! - Phones become E.164 with a default country for national numbers, from a small, honest
//!   table ([`COUNTRIES`]); numbers under other calling codes are accepted in international
//!   form with only E.164's own bounds checked.
//! - Scores are explained: every rule that fired is listed with its points (see [`score`]).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::error::ApiError;
use crate::services::notify::Channel;

/// Largest accepted lead body (`POST /api/leads`), in bytes.
pub const MAX_LEAD_BODY_BYTES: usize = 16 * 1024;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 120;
/// Longest email address, in bytes (RFC 5321's path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest local part (before `@`) of an email address, in bytes (RFC 5321).
pub const MAX_EMAIL_LOCAL_LEN: usize = 64;
/// Longest phone number as typed (with spaces and punctuation), in characters.
pub const MAX_PHONE_CHARS: usize = 32;
/// Longest property address, in characters.
pub const MAX_ADDRESS_CHARS: usize = 300;
/// Largest `property` facts object, in bytes of compact JSON.
pub const MAX_PROPERTY_BYTES: usize = 4 * 1024;
/// Longest source token, in characters.
pub const MAX_SOURCE_CHARS: usize = 32;
/// Longest free-text notes, in characters.
pub const MAX_NOTES_CHARS: usize = 2000;
/// Most digits of an E.164 number, country code included (ITU-T E.164).
pub const E164_MAX_DIGITS: usize = 15;
/// Fewest digits accepted for an international number under a calling code not in
/// [`COUNTRIES`] (the shortest numbers in service, e.g. small Pacific islands, have 7).
pub const INTL_MIN_DIGITS: usize = 7;
/// How long a dedupe key blocks a repeat lead, in milliseconds (24 hours).
pub const DEDUPE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Scores at or above this are hot and go to [`Channel::HotLeads`].
pub const HOT_THRESHOLD: u8 = 80;
/// Estimated value at or above which a lead gets the top value points.
pub const HIGH_VALUE: u64 = 1_000_000;
/// Estimated value at or above which a lead gets the middle value points.
pub const MID_VALUE: u64 = 400_000;
/// Page size when a listing names no `limit`.
pub const DEFAULT_PAGE: usize = 50;
/// Largest page a listing may ask for.
pub const MAX_PAGE: usize = 200;
/// Longest lead id, in bytes; ids use `[A-Za-z0-9_-]`.
pub const MAX_ID_LEN: usize = 64;
/// Longest encoded cursor accepted, in bytes (a 20-digit time, `:`, a [`MAX_ID_LEN`] id,
/// base64url-encoded, fits).
pub const MAX_CURSOR_LEN: usize = 128;

/// Every stable error code this module produces, for the README's error table.
pub mod codes {
    /// A required field is missing or blank.
    pub const REQUIRED: &str = "required";
    /// Neither `email` nor `phone` was given (reported on the pseudo-field `contact`).
    pub const CONTACT_REQUIRED: &str = "contact_required";
    /// A field is longer than its limit.
    pub const TOO_LONG: &str = "too_long";
    /// A text field contains control or bidirectional-override characters.
    pub const INVALID_CHARACTERS: &str = "invalid_characters";
    /// Not a usable email address.
    pub const INVALID_EMAIL: &str = "invalid_email";
    /// Not a usable phone number.
    pub const INVALID_PHONE: &str = "invalid_phone";
    /// Not one of the documented timelines.
    pub const INVALID_TIMELINE: &str = "invalid_timeline";
    /// Not a source token (`[a-z0-9][a-z0-9_-]*`).
    pub const INVALID_SOURCE: &str = "invalid_source";
    /// `property` is not a JSON object.
    pub const INVALID_PROPERTY: &str = "invalid_property";
    /// The whole lead was refused (422); the message lists every field error.
    pub const INVALID_LEAD: &str = "invalid_lead";
    /// Not a lead status.
    pub const INVALID_STATUS: &str = "invalid_status";
    /// The status change is not allowed from the current status (409).
    pub const INVALID_TRANSITION: &str = "invalid_transition";
    /// A listing cursor that this service did not produce.
    pub const INVALID_CURSOR: &str = "invalid_cursor";
    /// A query parameter with a malformed or out-of-range value.
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    /// A query parameter this listing does not know.
    pub const UNKNOWN_PARAMETER: &str = "unknown_parameter";
    /// A query parameter given more than once.
    pub const DUPLICATE_PARAMETER: &str = "duplicate_parameter";
    /// `since` is not before `until`.
    pub const INVALID_RANGE: &str = "invalid_range";
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The JSON key or query parameter (`contact` for the email-or-phone rule).
    pub field: String,
    /// Stable code from [`codes`].
    pub code: &'static str,
    /// Human-readable explanation (never echoes more than a short prefix of the input).
    pub message: String,
}

impl FieldError {
    fn new(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// `field: message; field: message` — the message of a refusal listing several fields.
pub fn describe(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

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

    /// Points this timeline adds to a lead's score (see [`score`]).
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

// ---------------------------------------------------------------------------------------------
// Email
// ---------------------------------------------------------------------------------------------

/// Why an email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Longer than [`MAX_EMAIL_LEN`] bytes.
    #[error("at most {MAX_EMAIL_LEN} bytes")]
    TooLong,
    /// Not of the form `local@domain.tld`; the text says which rule failed.
    #[error("not a valid email address: {0}")]
    Invalid(&'static str),
}

impl EmailError {
    /// [`codes::TOO_LONG`] or [`codes::INVALID_EMAIL`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong => codes::TOO_LONG,
            Self::Invalid(_) => codes::INVALID_EMAIL,
        }
    }
}

/// Validates an email address pragmatically and normalises it.
///
/// Accepts `local@domain` where: the whole is at most [`MAX_EMAIL_LEN`] bytes and the local
/// part at most [`MAX_EMAIL_LOCAL_LEN`]; nothing is whitespace or a control character; the
/// local part has no `"(),:;<>@[\]`, does not start or end with `.` and has no `..` (so quoted
/// local parts are refused — real forms never need them); the domain has at least two
/// dot-separated labels of 1–63 characters, each letters, digits, `-` (not at either end) or
/// non-ASCII (internationalised domains in Unicode form), and a top-level label that is not
/// all digits (so IP addresses are refused, as are `[…]` literals).
///
/// Normalisation: surrounding whitespace trimmed, the domain lowercased, the local part kept
/// as typed (RFC 5321 allows it to be case-sensitive; [`dedupe_keys`] lowercases it for
/// comparison only). Provider-specific rewrites (dots or `+tags` in Gmail) are not applied.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    let s = raw.trim();
    if s.len() > MAX_EMAIL_LEN {
        return Err(EmailError::TooLong);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EmailError::Invalid("contains spaces or control characters"));
    }
    let (local, domain) = s
        .rsplit_once('@')
        .ok_or(EmailError::Invalid("missing '@'"))?;
    if local.is_empty() || local.len() > MAX_EMAIL_LOCAL_LEN {
        return Err(EmailError::Invalid(
            "the part before '@' must be 1-64 characters",
        ));
    }
    if local.chars().any(|c| "\"(),:;<>@[\\]".contains(c)) {
        return Err(EmailError::Invalid(
            "the part before '@' has a character that needs quoting",
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(EmailError::Invalid("misplaced '.' before '@'"));
    }
    let domain = domain.to_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(EmailError::Invalid("the domain needs a dot (name.tld)"));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii());
        if !ok {
            return Err(EmailError::Invalid("the domain is malformed"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(EmailError::Invalid(
            "the domain must be a name, not an IP address",
        ));
    }
    Ok(format!("{local}@{domain}"))
}

// ---------------------------------------------------------------------------------------------
// Phone
// ---------------------------------------------------------------------------------------------

/// Telephone numbering facts for one country.
#[derive(Debug, PartialEq, Eq)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, uppercase.
    pub iso: &'static str,
    /// ITU calling code, digits without `+`.
    pub calling_code: &'static str,
    /// National trunk prefix dialled before national numbers (`0`, or `1` in the NANP), which
    /// E.164 drops; `None` where the leading digit belongs to the number (Italy, Spain).
    pub trunk_prefix: Option<char>,
    /// The international call prefix dialled there (`00`, `011` in the NANP, `0011` in
    /// Australia); `00` is accepted everywhere as well.
    pub intl_prefix: &'static str,
    /// Digits of the national significant number (after calling code and trunk prefix):
    /// inclusive bounds.
    pub nsn_digits: (usize, usize),
}

/// The countries whose numbering this module knows. National numbers are interpreted only for
/// these; numbers under other calling codes must be sent in international form.
///
/// Lengths are those of geographic, mobile and non-geographic numbers in each national plan;
/// where a plan is variable-length (Germany, Italy) the bounds are the plan's extremes.
pub static COUNTRIES: &[Country] = &[
    Country {
        iso: "US",
        calling_code: "1",
        trunk_prefix: Some('1'),
        intl_prefix: "011",
        nsn_digits: (10, 10),
    },
    Country {
        iso: "CA",
        calling_code: "1",
        trunk_prefix: Some('1'),
        intl_prefix: "011",
        nsn_digits: (10, 10),
    },
    Country {
        iso: "GB",
        calling_code: "44",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (7, 10),
    },
    Country {
        iso: "DE",
        calling_code: "49",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (6, 13),
    },
    Country {
        iso: "FR",
        calling_code: "33",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (9, 9),
    },
    Country {
        iso: "AU",
        calling_code: "61",
        trunk_prefix: Some('0'),
        intl_prefix: "0011",
        nsn_digits: (9, 9),
    },
    Country {
        iso: "IN",
        calling_code: "91",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (10, 10),
    },
    Country {
        iso: "IE",
        calling_code: "353",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (7, 9),
    },
    Country {
        iso: "NL",
        calling_code: "31",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (9, 9),
    },
    Country {
        iso: "NZ",
        calling_code: "64",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (8, 10),
    },
    Country {
        iso: "ES",
        calling_code: "34",
        trunk_prefix: None,
        intl_prefix: "00",
        nsn_digits: (9, 9),
    },
    Country {
        iso: "IT",
        calling_code: "39",
        trunk_prefix: None,
        intl_prefix: "00",
        nsn_digits: (6, 11),
    },
];

/// A default country that is not in [`COUNTRIES`]: a configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown default country {0:?}; known: {known}", known = country_list())]
pub struct UnknownCountry(pub String);

impl UnknownCountry {
    /// Always `config_error`: the fix is in the settings, not the request.
    pub fn code(&self) -> &'static str {
        "config_error"
    }
}

fn country_list() -> String {
    let isos: Vec<&str> = COUNTRIES.iter().map(|c| c.iso).collect();
    isos.join(", ")
}

impl Country {
    /// Looks a country up by ISO code (case-insensitive, surrounding space ignored).
    pub fn from_iso(iso: &str) -> Result<&'static Country, UnknownCountry> {
        let iso = iso.trim();
        COUNTRIES
            .iter()
            .find(|c| c.iso.eq_ignore_ascii_case(iso))
            .ok_or_else(|| UnknownCountry(iso.chars().take(16).collect()))
    }

    /// The known country whose calling code starts `digits`. Calling codes form a prefix code,
    /// so at most one code matches; countries sharing one (US, CA) share its rules.
    fn by_calling_code(digits: &str) -> Option<&'static Country> {
        COUNTRIES
            .iter()
            .find(|c| digits.starts_with(c.calling_code))
    }

    fn is_nanp(&self) -> bool {
        self.calling_code == "1"
    }

    /// Checks a national significant number against this country's plan.
    fn check_nsn(&self, nsn: &str) -> Result<(), PhoneError> {
        let (min, max) = self.nsn_digits;
        let invalid = |reason| PhoneError::InvalidForCountry {
            country: self.iso,
            reason,
        };
        if nsn.len() < min || nsn.len() > max {
            return Err(invalid(if min == max {
                "wrong number of digits for this country"
            } else {
                "too few or too many digits for this country"
            }));
        }
        if self.trunk_prefix == Some('0') && nsn.starts_with('0') {
            return Err(invalid("numbers here do not start with 00"));
        }
        if self.is_nanp() {
            let b = nsn.as_bytes();
            if !(b'2'..=b'9').contains(&b[0]) || !(b'2'..=b'9').contains(&b[3]) {
                return Err(invalid("area code and exchange must not start with 0 or 1"));
            }
        }
        Ok(())
    }
}

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Longer than [`MAX_PHONE_CHARS`] as typed.
    #[error("at most {MAX_PHONE_CHARS} characters")]
    TooLong,
    /// Something other than digits, a leading `+`, spaces, `-`, `.`, `(`, `)`.
    #[error("use digits, a leading '+', spaces, '-', '.', '(' and ')' only")]
    InvalidCharacter,
    /// No digits at all.
    #[error("no digits")]
    NoDigits,
    /// An international number whose country code starts with 0.
    #[error("an international number starts with a country code (1-9)")]
    InvalidCountryCode,
    /// Fewer digits than any number in service.
    #[error("too few digits")]
    TooFewDigits,
    /// More than [`E164_MAX_DIGITS`] digits with the country code.
    #[error("more than {E164_MAX_DIGITS} digits with the country code")]
    TooManyDigits,
    /// Does not fit the numbering plan of a known country.
    #[error("not a valid {country} number: {reason}")]
    InvalidForCountry {
        /// ISO code of the country whose plan was applied.
        country: &'static str,
        /// Which rule failed.
        reason: &'static str,
    },
}

impl PhoneError {
    /// [`codes::TOO_LONG`] for over-long input, otherwise [`codes::INVALID_PHONE`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong => codes::TOO_LONG,
            _ => codes::INVALID_PHONE,
        }
    }
}

/// Normalises a phone number to E.164 (`+` and digits).
///
/// Spaces, `-`, `.`, `(` and `)` are ignored. International form is a leading `+`, or `00`,
/// or the default country's own international prefix (`011` in the NANP, `0011` in
/// Australia). Anything else is a national number of `default_country`: its trunk prefix
/// (`0`, or `1` in the NANP) is dropped and the rest checked against the country's length
/// (and, in the NANP, that area code and exchange start with 2–9). In international form, a
/// known country's rules apply too, and a trunk `0` after the country code — the common
/// `+44 (0)20 …` notation — is dropped; under a calling code not in [`COUNTRIES`] only the
/// E.164 bounds ([`INTL_MIN_DIGITS`]–[`E164_MAX_DIGITS`]) are checked.
pub fn normalize_phone(raw: &str, default_country: &Country) -> Result<String, PhoneError> {
    let s = raw.trim();
    if s.chars().count() > MAX_PHONE_CHARS {
        return Err(PhoneError::TooLong);
    }
    let (plus, rest) = match s.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(PhoneError::InvalidCharacter),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::NoDigits);
    }
    let international = if plus {
        Some(digits.as_str())
    } else {
        digits
            .strip_prefix(default_country.intl_prefix)
            .or_else(|| digits.strip_prefix("00"))
    };
    match international {
        Some(d) => international_number(d),
        None => {
            let nsn = match default_country.trunk_prefix {
                Some(t) => digits.strip_prefix(t).unwrap_or(&digits),
                None => &digits,
            };
            e164(default_country, nsn)
        }
    }
}

fn international_number(d: &str) -> Result<String, PhoneError> {
    if d.is_empty() {
        return Err(PhoneError::NoDigits);
    }
    if d.starts_with('0') {
        return Err(PhoneError::InvalidCountryCode);
    }
    match Country::by_calling_code(d) {
        Some(country) => {
            let nsn = &d[country.calling_code.len()..];
            let nsn = match country.trunk_prefix {
                Some('0') => nsn.strip_prefix('0').unwrap_or(nsn),
                _ => nsn,
            };
            e164(country, nsn)
        }
        None if d.len() > E164_MAX_DIGITS => Err(PhoneError::TooManyDigits),
        None if d.len() < INTL_MIN_DIGITS => Err(PhoneError::TooFewDigits),
        None => Ok(format!("+{d}")),
    }
}

fn e164(country: &Country, nsn: &str) -> Result<String, PhoneError> {
    if country.calling_code.len() + nsn.len() > E164_MAX_DIGITS {
        return Err(PhoneError::TooManyDigits);
    }
    country.check_nsn(nsn)?;
    Ok(format!("+{}{nsn}", country.calling_code))
}

// ---------------------------------------------------------------------------------------------
// Dedupe
// ---------------------------------------------------------------------------------------------

/// Keys under which a lead is a repeat: `email:<address lowercased>` and/or
/// `phone:<E.164>`. A new lead sharing any key with a lead stored less than
/// [`DEDUPE_WINDOW_MS`] ago is a duplicate (see [`within_dedupe_window`]).
pub fn dedupe_keys(lead: &Lead) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    if let Some(email) = &lead.email {
        keys.push(format!("email:{}", email.to_lowercase()));
    }
    if let Some(phone) = &lead.phone {
        keys.push(format!("phone:{phone}"));
    }
    keys
}

/// Whether a lead stored at `previous_ms` still blocks a repeat at `now_ms`: true while less
/// than [`DEDUPE_WINDOW_MS`] has passed (a clock that went backwards counts as inside).
pub fn within_dedupe_window(previous_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(previous_ms) < DEDUPE_WINDOW_MS
}

// ---------------------------------------------------------------------------------------------
// Scoring and routing
// ---------------------------------------------------------------------------------------------

/// Facts from outside the lead that the score uses, e.g. from a valuation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreInputs {
    /// Estimated value of the property, in whole currency units.
    pub estimated_value: Option<u64>,
    /// Outstanding mortgage on the property, if known (equity = value − mortgage).
    pub mortgage_balance: Option<u64>,
}

/// A lead's score with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    /// 0–100: the sum of `reasons`, clamped.
    pub total: u8,
    /// Each rule that applied and its points, in rule order.
    pub reasons: Vec<(String, i32)>,
}

/// Scores a lead from 0 to 100. Every rule that applies is listed in [`Score::reasons`] with
/// its points; the total is their sum clamped to 0–100. The best case sums to exactly 100.
///
/// | rule | points |
/// |---|---|
/// | `contact_email_and_phone` / `contact_phone_only` / `contact_email_only` | 25 / 20 / 15 (a phone gets a callback sooner) |
/// | `timeline_now` / `_3_months` / `_6_months` / `_12_months` / `_browsing` / `timeline_unknown` | 35 / 25 / 15 / 5 / 0 / 0 |
/// | `address_given`, `property_facts_given`, `notes_given` (completeness) | 10, 5, 5 |
/// | `value_1m_plus` (≥ [`HIGH_VALUE`]) / `value_400k_plus` (≥ [`MID_VALUE`]) / `value_known` | 12 / 8 / 4 |
/// | `equity_50pct_plus` / `equity_20pct_plus` / `negative_equity` (needs value and mortgage) | 8 / 4 / −10 |
pub fn score(lead: &Lead, inputs: &ScoreInputs) -> Score {
    let mut reasons: Vec<(String, i32)> = Vec::new();
    let mut add = |rule: &str, points: i32| reasons.push((rule.to_string(), points));

    match (lead.email.is_some(), lead.phone.is_some()) {
        (true, true) => add("contact_email_and_phone", 25),
        (false, true) => add("contact_phone_only", 20),
        (true, false) => add("contact_email_only", 15),
        (false, false) => {}
    }
    match lead.timeline {
        Some(t) => add(&format!("timeline_{}", t.as_str()), t.points()),
        None => add("timeline_unknown", 0),
    }
    if lead.address.is_some() {
        add("address_given", 10);
    }
    if lead.property.is_some() {
        add("property_facts_given", 5);
    }
    if lead.notes.is_some() {
        add("notes_given", 5);
    }
    if let Some(value) = inputs.estimated_value {
        if value >= HIGH_VALUE {
            add("value_1m_plus", 12);
        } else if value >= MID_VALUE {
            add("value_400k_plus", 8);
        } else {
            add("value_known", 4);
        }
    }
    if let (Some(value), Some(mortgage)) = (inputs.estimated_value, inputs.mortgage_balance) {
        let (value, mortgage) = (u128::from(value), u128::from(mortgage));
        if mortgage > value {
            add("negative_equity", -10);
        } else if value > 0 && (value - mortgage) * 2 >= value {
            add("equity_50pct_plus", 8);
        } else if value > 0 && (value - mortgage) * 5 >= value {
            add("equity_20pct_plus", 4);
        }
    }
    let sum: i32 = reasons.iter().map(|(_, p)| p).sum();
    Score {
        total: u8::try_from(sum.clamp(0, 100)).unwrap_or(0),
        reasons,
    }
}

/// Where a lead's notification goes: [`Channel::HotLeads`] from [`HOT_THRESHOLD`] up,
/// otherwise [`Channel::LeadsIncoming`].
pub fn route(score: u8) -> Channel {
    if score >= HOT_THRESHOLD {
        Channel::HotLeads
    } else {
        Channel::LeadsIncoming
    }
}

// ---------------------------------------------------------------------------------------------
// Status lifecycle
// ---------------------------------------------------------------------------------------------

/// Where a lead is in the sales process. Wire names are lowercase (`new`, `contacted`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum LeadStatus {
    /// Just arrived; nobody has acted on it.
    New,
    /// Someone reached out.
    Contacted,
    /// Confirmed as a real prospect.
    Qualified,
    /// Became business. Terminal.
    Won,
    /// Did not become business (can be re-opened as contacted).
    Lost,
    /// Not a real lead (can be restored to new if marked by mistake).
    Spam,
}

impl LeadStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [LeadStatus; 6] = [
        Self::New,
        Self::Contacted,
        Self::Qualified,
        Self::Won,
        Self::Lost,
        Self::Spam,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Contacted => "contacted",
            Self::Qualified => "qualified",
            Self::Won => "won",
            Self::Lost => "lost",
            Self::Spam => "spam",
        }
    }

    /// Parses a wire name (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl TryFrom<String> for LeadStatus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown status; use one of {}", status_names()))
    }
}

impl From<LeadStatus> for &'static str {
    fn from(s: LeadStatus) -> Self {
        s.as_str()
    }
}

fn status_names() -> String {
    let names: Vec<&str> = LeadStatus::ALL.iter().map(|s| s.as_str()).collect();
    names.join(", ")
}

/// Whether `PATCH` may move a lead from `from` to `to`.
///
/// - `new` → `contacted`, `qualified`, `lost`, `spam`
/// - `contacted` → `qualified`, `lost`, `spam`
/// - `qualified` → `won`, `lost`
/// - `lost` → `contacted` (the person came back)
/// - `spam` → `new` (marked by mistake)
/// - `won` → nothing: a closed deal is history.
///
/// Staying in the same status is allowed, so a retried `PATCH` succeeds as a no-op.
pub fn can_transition(from: LeadStatus, to: LeadStatus) -> bool {
    use LeadStatus::*;
    from == to
        || matches!(
            (from, to),
            (New, Contacted | Qualified | Lost | Spam)
                | (Contacted, Qualified | Lost | Spam)
                | (Qualified, Won | Lost)
                | (Lost, Contacted)
                | (Spam, New)
        )
}

/// A status change [`can_transition`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} lead cannot become {}", from.as_str(), to.as_str())]
pub struct TransitionError {
    /// Current status.
    pub from: LeadStatus,
    /// Requested status.
    pub to: LeadStatus,
}

impl TransitionError {
    /// Always [`codes::INVALID_TRANSITION`] (a 409 at the edge).
    pub fn code(&self) -> &'static str {
        codes::INVALID_TRANSITION
    }
}

/// The new status, or why the change is refused.
pub fn transition(from: LeadStatus, to: LeadStatus) -> Result<LeadStatus, TransitionError> {
    if can_transition(from, to) {
        Ok(to)
    } else {
        Err(TransitionError { from, to })
    }
}

// ---------------------------------------------------------------------------------------------
// Rows, CSV export
// ---------------------------------------------------------------------------------------------

/// A stored lead as listed and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadRow {
    /// Lead id (`[A-Za-z0-9_-]`, at most [`MAX_ID_LEN`]).
    pub id: String,
    /// When the lead was stored, Unix milliseconds.
    pub created_at_ms: u64,
    /// Name.
    pub name: String,
    /// Normalised email.
    pub email: Option<String>,
    /// E.164 phone.
    pub phone: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Timeline.
    pub timeline: Option<Timeline>,
    /// Source token.
    pub source: String,
    /// Score 0–100.
    pub score: u8,
    /// Current status.
    pub status: LeadStatus,
    /// Estimated property value, if a valuation was made.
    pub estimated_value: Option<u64>,
}

/// The CSV header, in column order.
pub const CSV_COLUMNS: [&str; 11] = [
    "id",
    "created_at_ms",
    "name",
    "email",
    "phone",
    "address",
    "timeline",
    "source",
    "score",
    "status",
    "estimated_value",
];

impl LeadRow {
    fn cells(&self) -> [Cow<'_, str>; 11] {
        fn opt(v: &Option<String>) -> Cow<'_, str> {
            Cow::Borrowed(v.as_deref().unwrap_or(""))
        }
        [
            Cow::Borrowed(self.id.as_str()),
            Cow::Owned(self.created_at_ms.to_string()),
            Cow::Borrowed(self.name.as_str()),
            opt(&self.email),
            opt(&self.phone),
            opt(&self.address),
            Cow::Borrowed(self.timeline.map_or("", Timeline::as_str)),
            Cow::Borrowed(self.source.as_str()),
            Cow::Owned(self.score.to_string()),
            Cow::Borrowed(self.status.as_str()),
            Cow::Owned(
                self.estimated_value
                    .map_or(String::new(), |v| v.to_string()),
            ),
        ]
    }
}

/// Exports rows as CSV (RFC 4180): a header line of [`CSV_COLUMNS`], one record per row,
/// every line ended by CRLF; a field containing `,`, `"`, CR or LF is enclosed in double quotes
/// with inner quotes doubled; absent values are empty fields.
///
/// Formula-injection guard: spreadsheet programs execute a cell that starts with `=`, `+`,
/// `-` or `@` (and tab or CR can hide such a start), so any cell starting with one of these
/// six characters gets a leading `'`, which spreadsheets treat as "this is text" and do not
/// display. A consequence: E.164 phone numbers appear as `'+14155552671` in the raw file — and
/// are shown as text, which also keeps spreadsheets from turning them into numbers.
pub fn to_csv(leads: &[LeadRow]) -> String {
    let mut out = String::new();
    push_record(&mut out, CSV_COLUMNS.iter().copied());
    for row in leads {
        let cells = row.cells();
        push_record(&mut out, cells.iter().map(|c| c.as_ref()));
    }
    out
}

fn push_record<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_cell(out, cell);
    }
    out.push_str("\r\n");
}

fn push_cell(out: &mut String, cell: &str) {
    let guard = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = cell.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if guard {
        out.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

// ---------------------------------------------------------------------------------------------
// Listing: cursor, filter, page
// ---------------------------------------------------------------------------------------------

/// A position in the newest-first listing: the last row of the previous page.
///
/// Rows are ordered by `(created_at_ms DESC, id DESC)`; the next page holds the rows strictly
/// after the cursor in that order. In SQL:
/// `WHERE created_at_ms < ?1 OR (created_at_ms = ?1 AND id < ?2)
///  ORDER BY created_at_ms DESC, id DESC LIMIT <limit + 1>`.
/// Encoded as base64url (no padding) of `created_at_ms:id`; callers treat it as opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last row shown.
    pub created_at_ms: u64,
    /// Id of the last row shown (breaks ties between rows of the same millisecond).
    pub id: String,
}

impl Cursor {
    /// The cursor just after `row`.
    pub fn after(row: &LeadRow) -> Self {
        Self {
            created_at_ms: row.created_at_ms,
            id: row.id.clone(),
        }
    }

    /// The opaque string form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at_ms, self.id))
    }

    /// Parses the string form; anything this service did not produce is
    /// [`codes::INVALID_CURSOR`] on the `cursor` parameter.
    pub fn decode(s: &str) -> Result<Self, FieldError> {
        let invalid = || {
            FieldError::new(
                "cursor",
                codes::INVALID_CURSOR,
                "cursor is not one this listing returned",
            )
        };
        if s.len() > MAX_CURSOR_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (ms, id) = text.split_once(':').ok_or_else(invalid)?;
        let canonical = !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit());
        let created_at_ms = ms.parse().ok().filter(|_| canonical).ok_or_else(invalid)?;
        if !is_valid_id(id) {
            return Err(invalid());
        }
        Ok(Self {
            created_at_ms,
            id: id.to_string(),
        })
    }

    /// Whether `row` comes after this cursor in newest-first order.
    pub fn precedes(&self, row: &LeadRow) -> bool {
        (row.created_at_ms, row.id.as_str()) < (self.created_at_ms, self.id.as_str())
    }
}

/// Whether `id` is a well-formed lead id: 1–[`MAX_ID_LEN`] bytes of `[A-Za-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `GET /api/leads` query: which leads, how many, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadFilter {
    /// `min_score`: only scores at or above (0–100).
    pub min_score: Option<u8>,
    /// `status`: only this status.
    pub status: Option<LeadStatus>,
    /// `since`: only leads created at or after this Unix millisecond.
    pub since_ms: Option<u64>,
    /// `until`: only leads created before this Unix millisecond.
    pub until_ms: Option<u64>,
    /// `limit`: page size, 1–[`MAX_PAGE`], default [`DEFAULT_PAGE`].
    pub limit: usize,
    /// `cursor`: continue after this position.
    pub cursor: Option<Cursor>,
}

impl Default for LeadFilter {
    fn default() -> Self {
        Self {
            min_score: None,
            status: None,
            since_ms: None,
            until_ms: None,
            limit: DEFAULT_PAGE,
            cursor: None,
        }
    }
}

impl LeadFilter {
    /// Parses already-decoded query pairs, reporting every problem at once. Unknown and
    /// repeated parameters are errors (a typo such as `minscore` must not silently list
    /// everything); `since` must be before `until`.
    pub fn from_query<I, K, V>(pairs: I) -> Result<Self, Vec<FieldError>>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut filter = Self::default();
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            let known = matches!(
                key,
                "min_score" | "status" | "since" | "until" | "limit" | "cursor"
            );
            let shown: String = key.chars().take(32).collect();
            if !known {
                errors.push(FieldError::new(
                    &shown,
                    codes::UNKNOWN_PARAMETER,
                    "unknown parameter; use min_score, status, since, until, limit, cursor",
                ));
                continue;
            }
            if !seen.insert(key.to_string()) {
                errors.push(FieldError::new(
                    key,
                    codes::DUPLICATE_PARAMETER,
                    "given more than once",
                ));
                continue;
            }
            let bad = |what: &str| FieldError::new(key, codes::INVALID_PARAMETER, what);
            let result = match key {
                "min_score" => number(value)
                    .and_then(|n| u8::try_from(n).ok())
                    .filter(|n| *n <= 100)
                    .map(|n| filter.min_score = Some(n))
                    .ok_or_else(|| bad("an integer from 0 to 100")),
                "status" => LeadStatus::parse(value)
                    .map(|s| filter.status = Some(s))
                    .ok_or_else(|| {
                        FieldError::new(
                            key,
                            codes::INVALID_STATUS,
                            format!("one of {}", status_names()),
                        )
                    }),
                "since" => number(value)
                    .map(|n| filter.since_ms = Some(n))
                    .ok_or_else(|| bad("Unix time in milliseconds")),
                "until" => number(value)
                    .map(|n| filter.until_ms = Some(n))
                    .ok_or_else(|| bad("Unix time in milliseconds")),
                "limit" => number(value)
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .map(|n| filter.limit = n)
                    .ok_or_else(|| bad(&format!("an integer from 1 to {MAX_PAGE}"))),
                _ => Cursor::decode(value).map(|c| filter.cursor = Some(c)),
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if let (Some(since), Some(until)) = (filter.since_ms, filter.until_ms) {
            if since >= until {
                errors.push(FieldError::new(
                    "until",
                    codes::INVALID_RANGE,
                    "until must be after since",
                ));
            }
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(errors)
        }
    }

    /// Whether `row` belongs in this listing (page size aside): the reference semantics the
    /// D1 query implements, and what in-memory stores use.
    pub fn matches(&self, row: &LeadRow) -> bool {
        self.min_score.is_none_or(|m| row.score >= m)
            && self.status.is_none_or(|s| row.status == s)
            && self.since_ms.is_none_or(|t| row.created_at_ms >= t)
            && self.until_ms.is_none_or(|t| row.created_at_ms < t)
            && self.cursor.as_ref().is_none_or(|c| c.precedes(row))
    }
}

/// A plain decimal integer (digits only: no sign, no spaces, no `1e3`).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One page of a listing, as returned to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    /// The rows, newest first.
    pub leads: Vec<LeadRow>,
    /// Cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl Page {
    /// Builds a page from rows fetched in listing order with `LIMIT limit + 1`: one row more
    /// than the page shows says whether another page exists without a count query.
    pub fn from_rows(mut rows: Vec<LeadRow>, limit: usize) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|r| Cursor::after(r).encode())
        } else {
            None
        };
        Self {
            leads: rows,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(route(s.total), Channel::HotLeads);
    }

    #[test]
    fn sparse_lead_scores_low() {
        let s = score(&bare_lead(), &ScoreInputs::default());
        assert_eq!(
            rules(&s),
            vec![("contact_email_only", 15), ("timeline_unknown", 0)]
        );
        assert_eq!(s.total, 15);
        assert_eq!(route(s.total), Channel::LeadsIncoming);
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
    fn routing_threshold() {
        assert_eq!(route(HOT_THRESHOLD - 1), Channel::LeadsIncoming);
        assert_eq!(route(HOT_THRESHOLD), Channel::HotLeads);
        assert_eq!(route(100), Channel::HotLeads);
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

        let f = LeadFilter::from_query([("status", "won"), ("since", "1002"), ("until", "1004")])
            .unwrap();
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
}
