//! Lead intake: validation, normalisation, dedupe keys, scoring, status, export and listing.
//!
//! A lead is the one input of the service that a person types (into a form, or through the
//! chatbot), so it is where bad data enters. Every decision about a lead is a pure function
//! here — is it valid ([`validate`]), who is it ([`dedupe_keys`]), how promising is it
//! ([`score`]), where does it go (the notifier's `route`), what may happen to it next
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

pub mod codes;
mod email;
mod export;
mod input;
mod page;
mod phone;
mod score;
mod status;
#[cfg(test)]
mod tests;

pub use crate::services::fields::{describe, FieldError};
pub use email::{normalize_email, EmailError, MAX_EMAIL_LEN, MAX_EMAIL_LOCAL_LEN};
pub use export::{to_csv, LeadRow, CSV_COLUMNS};
pub(crate) use input::is_bidi_control;
pub use input::{
    parse_input, validate, Lead, LeadInput, Timeline, MAX_ADDRESS_CHARS, MAX_LEAD_BODY_BYTES,
    MAX_NAME_CHARS, MAX_NOTES_CHARS, MAX_PROPERTY_BYTES, MAX_SOURCE_CHARS,
};
pub use page::{
    is_valid_id, Cursor, LeadFilter, Page, DEFAULT_PAGE, MAX_CURSOR_LEN, MAX_ID_LEN, MAX_PAGE,
};
pub use phone::{
    normalize_phone, Country, PhoneError, UnknownCountry, COUNTRIES, E164_MAX_DIGITS,
    INTL_MIN_DIGITS, MAX_PHONE_CHARS,
};
pub use score::{
    dedupe_keys, score, within_dedupe_window, Score, ScoreInputs, DEDUPE_WINDOW_MS, HIGH_VALUE,
    HOT_THRESHOLD, MID_VALUE,
};
pub use status::{
    can_transition, settle_status_change, transition, LeadStatus, StatusConflict, TransitionError,
    UnknownStoredStatus,
};
