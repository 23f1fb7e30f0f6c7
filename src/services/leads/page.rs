//! Listing leads: the opaque [`Cursor`], the query's [`LeadFilter`] and one [`Page`] of rows.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

use super::codes;
use super::export::LeadRow;
use super::status::{status_names, LeadStatus};
use crate::services::fields::FieldError;

/// Page size when a listing names no `limit`.
pub const DEFAULT_PAGE: usize = 50;
/// Largest page a listing may ask for.
pub const MAX_PAGE: usize = 200;
/// Longest lead id, in bytes; ids use `[A-Za-z0-9_-]`.
pub const MAX_ID_LEN: usize = 64;
/// Longest encoded cursor accepted, in bytes (a 20-digit time, `:`, a [`MAX_ID_LEN`] id,
/// base64url-encoded, fits).
pub const MAX_CURSOR_LEN: usize = 128;

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
