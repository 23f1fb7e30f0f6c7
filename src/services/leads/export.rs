//! Leads as rows: [`LeadRow`] (a lead as stored and listed) and its CSV export
//! ([`to_csv`], [`CSV_COLUMNS`]).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::input::Timeline;
use super::status::LeadStatus;

/// A stored lead as listed and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadRow {
    /// Lead id (`[A-Za-z0-9_-]`, at most `MAX_ID_LEN` bytes, see `is_valid_id`).
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

pub(super) fn push_cell(out: &mut String, cell: &str) {
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
