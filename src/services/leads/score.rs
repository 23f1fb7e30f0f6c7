//! Who a lead is and how promising: [`dedupe_keys`] and the dedupe window, and the explained
//! [`score`] (every rule that fired, with its points).

use serde::{Deserialize, Serialize};

use super::input::Lead;

/// How long a dedupe key blocks a repeat lead, in milliseconds (24 hours).
pub const DEDUPE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Scores at or above this are hot; the notifier routes them to its `hot-leads` channel.
pub const HOT_THRESHOLD: u8 = 80;
/// Estimated value at or above which a lead gets the top value points.
pub const HIGH_VALUE: u64 = 1_000_000;
/// Estimated value at or above which a lead gets the middle value points.
pub const MID_VALUE: u64 = 400_000;

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
