//! The lead lifecycle: [`LeadStatus`] and which [`transition`]s are allowed.

use serde::{Deserialize, Serialize};

use super::codes;

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

pub(super) fn status_names() -> String {
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
