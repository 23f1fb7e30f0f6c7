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

    /// Reads a status as stored in D1. A value this version does not know is an error, never
    /// read as some default: changing a lead whose status is unknown could skip the lifecycle.
    pub fn from_stored(s: &str) -> Result<Self, UnknownStoredStatus> {
        Self::parse(s).ok_or_else(|| UnknownStoredStatus(s.to_string()))
    }
}

/// A stored status that is not one of [`LeadStatus::ALL`] (written by another version, or by
/// hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored status {0:?} is not a known lead status")]
pub struct UnknownStoredStatus(pub String);

impl UnknownStoredStatus {
    /// Always [`codes::UNKNOWN_STORED_STATUS`] (a 409 at the edge).
    pub fn code(&self) -> &'static str {
        codes::UNKNOWN_STORED_STATUS
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

/// A status change that lost its compare-and-set: the lead's status was no longer `from` when
/// the change was written (another change got there first). Nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the lead is no longer {}: another change was made first; read the lead and retry",
    from.as_str()
)]
pub struct StatusConflict {
    /// The status the change was decided from.
    pub from: LeadStatus,
    /// The status it asked for.
    pub to: LeadStatus,
}

impl StatusConflict {
    /// Always [`codes::STATUS_CONFLICT`] (a 409 at the edge).
    pub fn code(&self) -> &'static str {
        codes::STATUS_CONFLICT
    }
}

/// Settles a compare-and-set status write (`UPDATE … WHERE id = ? AND status = from`) by the
/// rows it changed: exactly one means it applied; none means the status moved under it, a
/// [`StatusConflict`] (and its audit row, written only when the update changed a row, is not
/// written either).
pub fn settle_status_change(
    from: LeadStatus,
    to: LeadStatus,
    changed_rows: u64,
) -> Result<LeadStatus, StatusConflict> {
    if changed_rows == 1 {
        Ok(to)
    } else {
        Err(StatusConflict { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_stored_status_is_an_error_not_new() {
        for s in LeadStatus::ALL {
            assert_eq!(LeadStatus::from_stored(s.as_str()), Ok(s));
        }
        for bad in ["", "New", "archived", "new "] {
            let err = LeadStatus::from_stored(bad).unwrap_err();
            assert_eq!(err, UnknownStoredStatus(bad.to_string()));
            assert_eq!(err.code(), "unknown_stored_status");
        }
    }

    #[test]
    fn a_lost_compare_and_set_is_a_conflict() {
        use LeadStatus::*;
        assert_eq!(settle_status_change(New, Qualified, 1), Ok(Qualified));
        // A retried no-op still matches its row, so it applies.
        assert_eq!(settle_status_change(New, New, 1), Ok(New));
        let err = settle_status_change(New, Spam, 0).unwrap_err();
        assert_eq!(
            err,
            StatusConflict {
                from: New,
                to: Spam
            }
        );
        assert_eq!(err.code(), "status_conflict");
        assert!(settle_status_change(New, Spam, 2).is_err());
    }
}
