//! What is notified and where: [`Channel`], [`Template`], the typed notices ([`LeadNotice`],
//! [`AlertNotice`]), [`Notification`] with its Queue envelope, and [`route`] (a lead's score
//! to its channel).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::payment::PaymentEvent;
use crate::services::leads::{Lead, Score, Timeline, HOT_THRESHOLD};

/// A destination channel, named as in the destinations configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// `hot-leads`: leads scoring at least [`crate::services::leads::HOT_THRESHOLD`].
    HotLeads,
    /// `leads-incoming`: every other lead.
    LeadsIncoming,
    /// `ops`: payments and alerts.
    Ops,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Self::HotLeads, Self::LeadsIncoming, Self::Ops];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HotLeads => "hot-leads",
            Self::LeadsIncoming => "leads-incoming",
            Self::Ops => "ops",
        }
    }

    /// Parses a configuration name (exact).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A notification template. Adding one means a variant here, its data type in
/// [`Notification`], and a render function; [`Template::parse`] and the Queue envelope pick it
/// up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    /// `new_lead`: a lead below the hot threshold.
    NewLead,
    /// `hot_lead`: a lead at or above the hot threshold.
    HotLead,
    /// `payment`: a verified payment event.
    Payment,
    /// `alert`: an operational alert.
    Alert,
}

impl Template {
    /// Every template.
    pub const ALL: [Template; 4] = [Self::NewLead, Self::HotLead, Self::Payment, Self::Alert];

    /// The template's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NewLead => "new_lead",
            Self::HotLead => "hot_lead",
            Self::Payment => "payment",
            Self::Alert => "alert",
        }
    }

    /// Parses a template name; an unknown one is [`NotifyError::UnknownTemplate`].
    pub fn parse(name: &str) -> Result<Self, NotifyError> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| NotifyError::UnknownTemplate(name.chars().take(32).collect()))
    }
}

/// A notification that cannot be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// No template has this name.
    #[error("unknown template {0:?}; known: new_lead, hot_lead, payment, alert")]
    UnknownTemplate(String),
    /// The envelope or the template's data has the wrong shape.
    #[error("invalid notification: {0}")]
    InvalidNotification(String),
}

impl NotifyError {
    /// `unknown_template` or `invalid_notification`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownTemplate(_) => "unknown_template",
            Self::InvalidNotification(_) => "invalid_notification",
        }
    }
}

/// Data of the `new_lead` and `hot_lead` templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadNotice {
    /// The stored lead's id.
    pub lead_id: String,
    /// Name.
    pub name: String,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// E.164 phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// Source token.
    pub source: String,
    /// Score 0–100.
    pub score: u8,
    /// The score's reasons (rule, points).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<(String, i32)>,
    /// Estimated property value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_value: Option<u64>,
    /// Notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

impl LeadNotice {
    /// The notice for a stored, scored lead.
    pub fn new(lead_id: &str, lead: &Lead, score: &Score, estimated_value: Option<u64>) -> Self {
        Self {
            lead_id: lead_id.to_string(),
            name: lead.name.clone(),
            email: lead.email.clone(),
            phone: lead.phone.clone(),
            address: lead.address.clone(),
            timeline: lead.timeline,
            source: lead.source.clone(),
            score: score.total,
            reasons: score.reasons.clone(),
            estimated_value,
            notes: lead.notes.clone(),
        }
    }
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Needs a look soon.
    Warning,
    /// Needs a look now.
    Critical,
}

impl Severity {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Info => "Info",
            Self::Warning => "Warning",
            Self::Critical => "Critical",
        }
    }

    pub(super) fn icon(self) -> &'static str {
        match self {
            Self::Info => ":information_source:",
            Self::Warning => ":warning:",
            Self::Critical => ":rotating_light:",
        }
    }
}

/// Data of the `alert` template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertNotice {
    /// Caller-chosen id; alerts with the same id are delivered once (include a time bucket,
    /// e.g. `d1_unavailable:2025-01-01T10`, to alert again later).
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// One-line title.
    pub title: String,
    /// Details (multi-line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A notification: a template and its data.
///
/// On a Queue it travels as `{"template":"<name>","data":{…}}`; [`Notification::decode`] and
/// the `Deserialize` impl read that envelope through [`Template::parse`], so an unknown
/// template is refused by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "template", content = "data", rename_all = "snake_case")]
pub enum Notification {
    /// `new_lead`.
    NewLead(LeadNotice),
    /// `hot_lead`.
    HotLead(LeadNotice),
    /// `payment`.
    Payment(PaymentEvent),
    /// `alert`.
    Alert(AlertNotice),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    template: String,
    data: Value,
}

impl Notification {
    /// The lead's notification: `hot_lead` when [`route`] sends its score to
    /// [`Channel::HotLeads`], else `new_lead`.
    pub fn for_lead(notice: LeadNotice) -> Self {
        match route(notice.score) {
            Channel::HotLeads => Self::HotLead(notice),
            _ => Self::NewLead(notice),
        }
    }

    /// Builds a notification from a template name and its JSON data.
    pub fn from_parts(template: &str, data: Value) -> Result<Self, NotifyError> {
        let template = Template::parse(template)?;
        let invalid = |e: serde_json::Error| {
            NotifyError::InvalidNotification(format!("{}: {e}", template.name()))
        };
        Ok(match template {
            Template::NewLead => Self::NewLead(serde_json::from_value(data).map_err(invalid)?),
            Template::HotLead => Self::HotLead(serde_json::from_value(data).map_err(invalid)?),
            Template::Payment => Self::Payment(serde_json::from_value(data).map_err(invalid)?),
            Template::Alert => Self::Alert(serde_json::from_value(data).map_err(invalid)?),
        })
    }

    /// Decodes a Queue message body (`{"template":…,"data":…}`).
    pub fn decode(bytes: &[u8]) -> Result<Self, NotifyError> {
        let env: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| NotifyError::InvalidNotification(e.to_string()))?;
        Self::from_parts(&env.template, env.data)
    }

    /// Encodes the Queue message body that [`Notification::decode`] reads.
    pub fn encode(&self) -> String {
        // Strings, integers, options and unit enums always serialize.
        serde_json::to_string(self).expect("Notification always serializes")
    }

    /// The template.
    pub fn template(&self) -> Template {
        match self {
            Self::NewLead(_) => Template::NewLead,
            Self::HotLead(_) => Template::HotLead,
            Self::Payment(_) => Template::Payment,
            Self::Alert(_) => Template::Alert,
        }
    }

    /// Where it goes: leads by their template, payments and alerts to [`Channel::Ops`].
    pub fn channel(&self) -> Channel {
        match self {
            Self::NewLead(_) => Channel::LeadsIncoming,
            Self::HotLead(_) => Channel::HotLeads,
            Self::Payment(_) | Self::Alert(_) => Channel::Ops,
        }
    }

    /// What the notification is about: the lead id, the payment event id or the alert id.
    pub fn subject_id(&self) -> &str {
        match self {
            Self::NewLead(n) | Self::HotLead(n) => &n.lead_id,
            Self::Payment(p) => &p.id,
            Self::Alert(a) => &a.id,
        }
    }
}

impl<'de> Deserialize<'de> for Notification {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let env = Envelope::deserialize(deserializer)?;
        Self::from_parts(&env.template, env.data).map_err(serde::de::Error::custom)
    }
}

/// Where a lead's notification goes: [`Channel::HotLeads`] from
/// [`HOT_THRESHOLD`](crate::services::leads::HOT_THRESHOLD) up, otherwise
/// [`Channel::LeadsIncoming`].
pub fn route(score: u8) -> Channel {
    if score >= HOT_THRESHOLD {
        Channel::HotLeads
    } else {
        Channel::LeadsIncoming
    }
}
