//! Notifications: what to say, where, how hard to try, and which inbound webhooks to believe.
//!
//! Notifications leave the service as webhook calls (Slack-compatible JSON) through a Queue, so
//! a slow or failing receiver never holds up the request that caused them. Everything that
//! decides about them is pure and here, so the Queue consumer is a loop of "render, send,
//! ask [`next_action`]":
//!
//! - **Templates** ([`Template`], [`Notification`]): typed data rendered to
//!   `{"text": fallback, "blocks": [...]}`. Every piece of user data goes through one escaping
//!   function ([`escape_mrkdwn`]), so a lead named `<!channel>` cannot ping anybody.
//! - **Destinations** ([`Destinations`]): the channel → webhook URL map from configuration.
//!   Webhook URLs carry their secret in the path (Slack) or query, so a [`WebhookUrl`] never
//!   prints more than its scheme and host, and configuration errors name the channel only.
//! - **Delivery policy** ([`backoff_ms`], [`next_action`]): capped exponential backoff, a
//!   fixed attempt budget, and which HTTP outcomes are worth retrying.
//! - **Idempotency** ([`idempotency_key`]): one key per template and subject, so a redelivered
//!   Queue message or a retried provider webhook notifies once.
//! - **Inbound webhooks** ([`verify_signature`], [`PaymentEvent::parse`]): HMAC-SHA256 over
//!   `{timestamp}.{body}` with a replay window, then the payment event's accepted shape.
//!
//! Nothing here reads a clock or draws randomness: `now_s`, attempts and jitter come in.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::services::leads::{is_bidi_control, route, Lead, Score, Timeline};

// ---------------------------------------------------------------------------------------------
// Channels and templates
// ---------------------------------------------------------------------------------------------

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
    fn label(self) -> &'static str {
        match self {
            Self::Info => "Info",
            Self::Warning => "Warning",
            Self::Critical => "Critical",
        }
    }

    fn icon(self) -> &'static str {
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

    /// [`idempotency_key`] of this notification's template and subject.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.template(), self.subject_id())
    }

    /// The Slack-compatible webhook body: `{"text": fallback, "blocks": [...]}`.
    pub fn render(&self) -> Value {
        match self {
            Self::NewLead(n) => render_lead(n, "New lead", ""),
            Self::HotLead(n) => render_lead(n, "Hot lead", ":fire: "),
            Self::Payment(p) => render_payment(p),
            Self::Alert(a) => render_alert(a),
        }
    }
}

impl<'de> Deserialize<'de> for Notification {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let env = Envelope::deserialize(deserializer)?;
        Self::from_parts(&env.template, env.data).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering and escaping
// ---------------------------------------------------------------------------------------------

/// Most characters of a one-line user value shown (longer values end in `…`).
pub const MAX_LINE_CHARS: usize = 200;
/// Most characters of multi-line user text (notes, alert detail) shown. Escaping can grow a
/// character fivefold (`&` → `&amp;`), and Slack refuses section text over 3000 characters.
pub const MAX_BLOCK_CHARS: usize = 500;
/// Most characters of a score rule's name shown.
const MAX_RULE_CHARS: usize = 32;
/// Most characters of an identifier (lead, event, alert id, source) shown.
pub const MAX_ID_CHARS: usize = 100;
/// Most score reasons shown.
pub const MAX_REASONS_SHOWN: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One line of mrkdwn text.
    Line,
    /// Several lines of mrkdwn text.
    Block,
    /// The inside of an inline code span (identifiers, emails, phones).
    Code,
}

/// Escapes user text for Slack mrkdwn so that it is shown, never interpreted.
///
/// Exactly this is changed:
/// - `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;` (Slack's own escaping). With no `<` left, no
///   `<!channel>`, `<!here>`, `<@U…>`, `<#C…>` or `<http://…|disguised link>` can form.
/// - `*` → `∗` (U+2217), `_` → `ˍ` (U+02CD), `~` → `∼` (U+223C), `` ` `` → `ˋ` (U+02CB):
///   look-alikes, because Slack has no escape for its emphasis markers; bold, italics,
///   strike-through and code cannot be opened.
/// - `@here`, `@channel`, `@everyone` (any case) get a zero-width space (U+200B) after the `@`,
///   so legacy name-linking cannot turn them into mentions; other `@`s (emails) are kept.
/// - Bidirectional controls (U+202A–U+202E, U+2066–U+2069) and CR are removed; line feeds are
///   kept (this function is for multi-line text); other control characters become spaces.
///
/// Not changed: `:emoji:` codes (harmless) and bare URLs, which Slack may still make clickable
/// but always showing their real target.
pub fn escape_mrkdwn(s: &str) -> String {
    escape(s, Mode::Block, usize::MAX)
}

fn escape(s: &str, mode: Mode, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for (n, (i, c)) in s.char_indices().enumerate() {
        if n == max_chars {
            out.push('…');
            break;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\u{02CB}'),
            '*' if mode != Mode::Code => out.push('\u{2217}'),
            '_' if mode != Mode::Code => out.push('\u{02CD}'),
            '~' if mode != Mode::Code => out.push('\u{223C}'),
            '@' => {
                out.push('@');
                if is_broadcast_mention(&s[i + 1..]) {
                    out.push('\u{200B}');
                }
            }
            '\n' if mode == Mode::Block => out.push('\n'),
            '\r' => {}
            c if is_bidi_control(c) => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn is_broadcast_mention(after_at: &str) -> bool {
    ["here", "channel", "everyone"].iter().any(|w| {
        after_at
            .get(..w.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(w))
    })
}

/// One line of user text.
fn line(s: &str) -> String {
    escape(s, Mode::Line, MAX_LINE_CHARS)
}

/// Multi-line user text.
fn block(s: &str) -> String {
    escape(s, Mode::Block, MAX_BLOCK_CHARS)
}

/// An email, phone or customer shown exactly, in an inline code span.
fn code(s: &str) -> String {
    code_span(s, MAX_LINE_CHARS)
}

/// An identifier shown exactly, in an inline code span.
fn ident(s: &str) -> String {
    code_span(s, MAX_ID_CHARS)
}

/// No emphasis applies inside a code span, so `_` and `*` need no look-alikes there; backticks
/// still do, so the span cannot be closed early.
fn code_span(s: &str, max_chars: usize) -> String {
    if s.is_empty() {
        return "–".to_string();
    }
    format!("`{}`", escape(s, Mode::Code, max_chars))
}

fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": mrkdwn(text)})
}

fn fields(pairs: Vec<(&str, String)>) -> Value {
    let items: Vec<Value> = pairs
        .into_iter()
        .map(|(label, value)| mrkdwn(format!("*{label}*\n{value}")))
        .collect();
    json!({"type": "section", "fields": items})
}

fn context(text: String) -> Value {
    json!({"type": "context", "elements": [mrkdwn(text)]})
}

fn message(fallback: String, blocks: Vec<Value>) -> Value {
    json!({"text": fallback, "blocks": blocks})
}

fn render_lead(n: &LeadNotice, title: &str, icon: &str) -> Value {
    let name = line(&n.name);
    let timeline = n.timeline.map_or("not given", Timeline::label);
    let mut blocks = vec![section(format!(
        "{icon}*{title}:* {name}\nScore *{}*/100 · Timeline: {timeline}",
        n.score
    ))];
    let mut pairs = Vec::new();
    if let Some(email) = &n.email {
        pairs.push(("Email", code(email)));
    }
    if let Some(phone) = &n.phone {
        pairs.push(("Phone", code(phone)));
    }
    if let Some(address) = &n.address {
        pairs.push(("Address", line(address)));
    }
    if let Some(value) = n.estimated_value {
        pairs.push(("Estimated value", group_thousands(value)));
    }
    if !pairs.is_empty() {
        blocks.push(fields(pairs));
    }
    if let Some(notes) = &n.notes {
        blocks.push(section(format!("*Notes*\n{}", block(notes))));
    }
    let mut ctx = format!("Lead {} · Source {}", ident(&n.lead_id), ident(&n.source));
    if !n.reasons.is_empty() {
        let reasons: Vec<String> = n
            .reasons
            .iter()
            .take(MAX_REASONS_SHOWN)
            .map(|(rule, points)| {
                let rule = escape(&rule.replace('_', " "), Mode::Line, MAX_RULE_CHARS);
                format!("{rule} {points:+}")
            })
            .collect();
        ctx.push_str(" · ");
        ctx.push_str(&reasons.join(", "));
    }
    blocks.push(context(ctx));
    message(format!("{title}: {name} (score {})", n.score), blocks)
}

fn render_payment(p: &PaymentEvent) -> Value {
    let amount = format_amount(p.amount, &p.currency);
    let title = p.kind.label();
    let mut fallback = format!("{title}: {amount}");
    let mut blocks = vec![section(format!("{} *{title}:* {amount}", p.kind.icon()))];
    if let Some(customer) = &p.customer {
        let customer = code(customer);
        fallback.push_str(&format!(" from {customer}"));
        blocks.push(fields(vec![("Customer", customer)]));
    }
    blocks.push(context(format!(
        "Event {} · {}",
        ident(&p.id),
        p.kind.as_str()
    )));
    message(fallback, blocks)
}

fn render_alert(a: &AlertNotice) -> Value {
    let title = line(&a.title);
    let label = a.severity.label();
    let mut blocks = vec![section(format!(
        "{} *{label} alert:* {title}",
        a.severity.icon()
    ))];
    if let Some(detail) = &a.detail {
        blocks.push(section(block(detail)));
    }
    blocks.push(context(format!("Alert {}", ident(&a.id))));
    message(format!("{label} alert: {title}"), blocks)
}

/// `1234567` → `1,234,567`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217): 0 for the
/// zero-decimal currencies, 3 for the three-decimal ones, 2 otherwise.
fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// An amount in minor units shown in major units: `(199950, "USD")` → `1,999.50 USD`.
pub fn format_amount(minor: u64, currency: &str) -> String {
    let digits = minor_unit_digits(currency);
    if digits == 0 {
        return format!("{} {currency}", group_thousands(minor));
    }
    let scale = 10u64.pow(digits);
    format!(
        "{}.{:0width$} {currency}",
        group_thousands(minor / scale),
        minor % scale,
        width = digits as usize
    )
}

// ---------------------------------------------------------------------------------------------
// Delivery policy
// ---------------------------------------------------------------------------------------------

/// Attempts per notification, the first included; after the last failure it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 10;
/// Delay before the second attempt, in milliseconds.
pub const BASE_BACKOFF_MS: u64 = 5_000;
/// Longest delay between attempts, in milliseconds (10 minutes). With [`MAX_ATTEMPTS`] the
/// whole schedule spans about 30 minutes — a receiver's typical short outage.
pub const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;
/// Longest `Retry-After` honoured, in milliseconds (1 hour); longer hints are cut to this.
pub const MAX_RETRY_AFTER_MS: u64 = 60 * 60 * 1000;

/// Delay before retrying after `attempt` failed attempts: `base_ms · 2^(attempt − 1)`, capped
/// at `max_ms`, saturating instead of overflowing. `attempt` 0 is treated as 1.
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64) -> u64 {
    let factor = 1u64
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u64::MAX);
    base_ms.saturating_mul(factor).min(max_ms)
}

/// Spreads retries of many messages ("equal jitter"): a delay in `[delay/2, delay]` chosen by
/// `entropy`, which the caller draws (this module has no randomness).
pub fn with_jitter(delay_ms: u64, entropy: u64) -> u64 {
    let half = delay_ms / 2;
    let spread = delay_ms - half;
    half + entropy % spread.saturating_add(1)
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The webhook answered with this HTTP status (and maybe a `Retry-After`).
    Status {
        /// HTTP status code.
        status: u16,
        /// The `Retry-After` header as milliseconds ([`parse_retry_after`]).
        retry_after_ms: Option<u64>,
    },
    /// No HTTP answer: DNS, connection, TLS or timeout failure.
    NetworkError,
}

impl Outcome {
    /// An answer with `status` and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after_ms: None,
        }
    }
}

/// Reads a `Retry-After` header given in seconds (the HTTP-date form is not used by webhook
/// receivers and yields `None`).
pub fn parse_retry_after(header: &str) -> Option<u64> {
    let h = header.trim();
    if h.is_empty() || h.len() > 10 || !h.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    h.parse::<u64>().ok().map(|s| s.saturating_mul(1000))
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivered; acknowledge the message.
    Done,
    /// Try again after this delay.
    Retry {
        /// Milliseconds to wait.
        delay_ms: u64,
    },
    /// Give up and keep the message for inspection.
    DeadLetter {
        /// Why: `permanent_status`, `unexpected_status` or `attempts_exhausted`.
        reason: &'static str,
    },
}

/// Retry settings; [`DeliveryPolicy::DEFAULT`] uses the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// First retry delay.
    pub base_ms: u64,
    /// Delay cap.
    pub max_ms: u64,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
}

impl DeliveryPolicy {
    /// [`BASE_BACKOFF_MS`], [`MAX_BACKOFF_MS`], [`MAX_ATTEMPTS`].
    pub const DEFAULT: Self = Self {
        base_ms: BASE_BACKOFF_MS,
        max_ms: MAX_BACKOFF_MS,
        max_attempts: MAX_ATTEMPTS,
    };

    /// Decides after attempt number `attempt` (1 for the first) ended in `outcome`:
    ///
    /// - 2xx → [`Action::Done`].
    /// - 408, 429, 5xx, network error → retry after [`backoff_ms`], or after `Retry-After`
    ///   if that is longer (at most [`MAX_RETRY_AFTER_MS`]); once `attempt` reaches
    ///   `max_attempts`, dead-letter (`attempts_exhausted`).
    /// - Any other 4xx → dead-letter at once (`permanent_status`): the payload is refused or
    ///   the webhook revoked or gone (Slack answers 400/403/404/410), and repeating the same
    ///   request cannot change that.
    /// - 1xx, 3xx and anything else → dead-letter (`unexpected_status`): webhooks are not
    ///   followed through redirects, so a redirecting URL is a configuration error.
    pub fn next_action(&self, attempt: u32, outcome: Outcome) -> Action {
        let retry_after_ms = match outcome {
            Outcome::Status { status, .. } if (200..300).contains(&status) => return Action::Done,
            Outcome::Status {
                status,
                retry_after_ms,
            } if status == 408 || status == 429 || (500..600).contains(&status) => retry_after_ms,
            Outcome::Status { status, .. } if (400..500).contains(&status) => {
                return Action::DeadLetter {
                    reason: "permanent_status",
                }
            }
            Outcome::Status { .. } => {
                return Action::DeadLetter {
                    reason: "unexpected_status",
                }
            }
            Outcome::NetworkError => None,
        };
        if attempt >= self.max_attempts {
            return Action::DeadLetter {
                reason: "attempts_exhausted",
            };
        }
        let backoff = backoff_ms(attempt, self.base_ms, self.max_ms);
        let hinted = retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS);
        Action::Retry {
            delay_ms: backoff.max(hinted),
        }
    }
}

/// [`DeliveryPolicy::next_action`] under [`DeliveryPolicy::DEFAULT`].
pub fn next_action(attempt: u32, outcome: Outcome) -> Action {
    DeliveryPolicy::DEFAULT.next_action(attempt, outcome)
}

/// The deduplication key of a notification: `notify:<template>:<hex SHA-256 of subject_id>`.
///
/// Deterministic, so a redelivered Queue message or a provider's retried webhook maps to the
/// same key; the template is part of it, so a lead's `new_lead` and a later `hot_lead` are
/// distinct. The subject is hashed so the key has a fixed length and charset whatever the id
/// (KV keys are at most 512 bytes).
pub fn idempotency_key(template: Template, subject_id: &str) -> String {
    format!(
        "notify:{}:{}",
        template.name(),
        hex(&Sha256::digest(subject_id.as_bytes()))
    )
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Destinations
// ---------------------------------------------------------------------------------------------

/// Longest webhook URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// A webhook URL: `http` or `https`, with a host, no credentials, ASCII without spaces.
///
/// Its `Debug` form (and [`WebhookUrl::redacted`]) shows only scheme and host: the path and
/// query of a webhook URL are its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// Checks a URL; the error says what is wrong without repeating the URL.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.len() > MAX_URL_LEN {
            return Err("URL longer than 2048 bytes");
        }
        if !s.is_ascii() || s.chars().any(|c| c.is_ascii_whitespace() || c.is_control()) {
            return Err("URL must be ASCII without spaces (percent-encode the rest)");
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("URL must start with http:// or https://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err("URL must use http or https");
        }
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if authority.contains('@') {
            return Err("URL must not carry credentials before the host");
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or("URL has a malformed IPv6 host")?;
                let ok = !host.is_empty()
                    && host.contains(':')
                    && host
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
                if !ok {
                    return Err("URL has a malformed IPv6 host");
                }
                match after {
                    "" => (host, None),
                    _ => (
                        host,
                        Some(after.strip_prefix(':').ok_or("URL has a malformed port")?),
                    ),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err("URL must name a host");
        }
        if !authority.starts_with('[')
            && !host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        {
            return Err("URL has a malformed host");
        }
        if let Some(port) = port {
            let ok = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p > 0);
            if !ok {
                return Err("URL has a malformed port");
            }
        }
        Ok(Self(s.to_string()))
    }

    /// The full URL, for the request only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `scheme://host[:port]/…` — safe to log.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        format!("{}://{authority}/…", scheme.to_ascii_lowercase())
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

/// A destinations setting that cannot be used. Messages name the channel, never a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Not a JSON object.
    #[error("webhook destinations must be a JSON object mapping channel names to URLs")]
    NotAnObject,
    /// A key that is not a [`Channel`] name.
    #[error("unknown channel {0:?}; known: hot-leads, leads-incoming, ops")]
    UnknownChannel(String),
    /// A channel whose URL is unusable.
    #[error("channel {}: {why}", channel.as_str())]
    InvalidUrl {
        /// The channel.
        channel: Channel,
        /// What is wrong (from [`WebhookUrl::parse`], or "must be a string").
        why: &'static str,
    },
}

impl DestinationError {
    /// Always `config_error`.
    pub fn code(&self) -> &'static str {
        "config_error"
    }
}

/// Where each channel's notifications go. A channel without a URL is not notified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations(BTreeMap<Channel, WebhookUrl>);

impl Destinations {
    /// Parses `{"hot-leads":"https://…","leads-incoming":"https://…","ops":"https://…"}`.
    /// Every key must be a [`Channel`] name (a typo must not silently drop notifications);
    /// any subset may be present.
    pub fn parse(config: &str) -> Result<Self, DestinationError> {
        let value: Value =
            serde_json::from_str(config).map_err(|_| DestinationError::NotAnObject)?;
        let Value::Object(map) = value else {
            return Err(DestinationError::NotAnObject);
        };
        let mut out = BTreeMap::new();
        for (name, url) in map {
            let channel = Channel::parse(&name)
                .ok_or_else(|| DestinationError::UnknownChannel(name.chars().take(32).collect()))?;
            let invalid = |why| DestinationError::InvalidUrl { channel, why };
            let url = url.as_str().ok_or_else(|| invalid("must be a string"))?;
            out.insert(channel, WebhookUrl::parse(url).map_err(invalid)?);
        }
        Ok(Self(out))
    }

    /// The URL for `channel`, if configured.
    pub fn get(&self, channel: Channel) -> Option<&WebhookUrl> {
        self.0.get(&channel)
    }

    /// The configured channels.
    pub fn channels(&self) -> impl Iterator<Item = Channel> + '_ {
        self.0.keys().copied()
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound webhooks
// ---------------------------------------------------------------------------------------------

/// Header carrying the Unix time (seconds, decimal) at which the sender signed.
pub const TIMESTAMP_HEADER: &str = "X-Roomkeeper-Timestamp";
/// Header carrying the signature(s): `v1=<hex>`, comma-separated when several are sent
/// (during a secret rotation); entries of other schemes are ignored.
pub const SIGNATURE_HEADER: &str = "X-Roomkeeper-Signature";
/// Default replay window, in seconds, either side of `now`.
pub const DEFAULT_TOLERANCE_S: u64 = 300;
/// Longest signature header accepted, in bytes.
pub const MAX_SIGNATURE_HEADER_LEN: usize = 1024;
/// Most `v1` entries compared.
pub const MAX_SIGNATURES: usize = 8;

/// Why an inbound webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A header is absent or empty.
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    /// The headers are malformed or no signature matches.
    #[error("bad signature: {0}")]
    BadSignature(&'static str),
    /// Correctly signed, but longer ago than the tolerance: possibly a replay.
    #[error("timestamp is {age_s}s old; at most {tolerance_s}s is accepted")]
    Stale {
        /// Seconds since the signature's timestamp.
        age_s: u64,
        /// The tolerance.
        tolerance_s: u64,
    },
    /// Correctly signed, but dated further in the future than the tolerance.
    #[error("timestamp is {ahead_s}s in the future; at most {tolerance_s}s is accepted")]
    FromTheFuture {
        /// Seconds the timestamp is ahead of `now`.
        ahead_s: u64,
        /// The tolerance.
        tolerance_s: u64,
    },
    /// The verifying secret is empty: every signature would be forgeable.
    #[error("webhook secret is not configured")]
    NoSecret,
}

impl WebhookError {
    /// `missing_signature`, `bad_signature`, `stale_timestamp` (401 at the edge), or
    /// `config_error` (500).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature(_) => "missing_signature",
            Self::BadSignature(_) => "bad_signature",
            Self::Stale { .. } | Self::FromTheFuture { .. } => "stale_timestamp",
            Self::NoSecret => "config_error",
        }
    }
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp` (Unix seconds):
/// `v1=` and the lowercase hex HMAC-SHA256, keyed by `secret`, of `{timestamp}.{body}`.
/// The sender puts `timestamp` in [`TIMESTAMP_HEADER`].
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("v1={}", hex(&mac(secret, &timestamp.to_string(), body)))
}

/// Verifies an inbound webhook signed as [`sign`] does.
///
/// `timestamp_header` and `signature_header` are the values of [`TIMESTAMP_HEADER`] and
/// [`SIGNATURE_HEADER`] (empty when absent). The signed payload is the timestamp header's
/// digits exactly as sent, `.`, and the raw body. Checks, in order: a secret is configured;
/// both headers present; the timestamp is decimal digits; some `v1` entry (at most
/// [`MAX_SIGNATURES`], hex in either case) equals the expected HMAC, compared in constant
/// time; and only then the replay window — `now_s − tolerance_s ≤ timestamp ≤ now_s +
/// tolerance_s`, both ends inclusive — so a forged request learns nothing about the clock.
/// The window bounds replays; the receiver still deduplicates by event id
/// ([`idempotency_key`]) to stop replays inside it.
pub fn verify_signature(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let ts_text = timestamp_header.trim();
    if ts_text.is_empty() {
        return Err(WebhookError::MissingSignature(TIMESTAMP_HEADER));
    }
    let sig_text = signature_header.trim();
    if sig_text.is_empty() {
        return Err(WebhookError::MissingSignature(SIGNATURE_HEADER));
    }
    if ts_text.len() > 20 || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::BadSignature("malformed timestamp"));
    }
    let timestamp: u64 = ts_text
        .parse()
        .map_err(|_| WebhookError::BadSignature("malformed timestamp"))?;
    if sig_text.len() > MAX_SIGNATURE_HEADER_LEN {
        return Err(WebhookError::BadSignature("signature header too long"));
    }
    let mut candidates = Vec::new();
    for part in sig_text.split(',') {
        let (scheme, value) = part
            .trim()
            .split_once('=')
            .ok_or(WebhookError::BadSignature("malformed signature header"))?;
        if scheme == "v1" {
            candidates.push(value);
        }
    }
    if candidates.is_empty() {
        return Err(WebhookError::BadSignature("no v1 signature"));
    }
    if candidates.len() > MAX_SIGNATURES {
        return Err(WebhookError::BadSignature("too many signatures"));
    }
    let expected = mac(secret, ts_text, body);
    let mut matched = Choice::from(0);
    for candidate in candidates {
        if let Some(given) = unhex32(candidate) {
            matched |= given.ct_eq(&expected);
        }
    }
    if !bool::from(matched) {
        return Err(WebhookError::BadSignature("no signature matches"));
    }
    if timestamp > now_s.saturating_add(tolerance_s) {
        return Err(WebhookError::FromTheFuture {
            ahead_s: timestamp - now_s,
            tolerance_s,
        });
    }
    let age_s = now_s.saturating_sub(timestamp);
    if age_s > tolerance_s {
        return Err(WebhookError::Stale { age_s, tolerance_s });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Payment events
// ---------------------------------------------------------------------------------------------

/// Largest inbound event body, in bytes.
pub const MAX_EVENT_BODY_BYTES: usize = 64 * 1024;
/// Longest event id and customer, in characters.
pub const MAX_EVENT_FIELD_CHARS: usize = 255;

/// The payment event types accepted. Wire names: `payment.succeeded`, `payment.failed`,
/// `payment.refunded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "&'static str")]
pub enum PaymentKind {
    /// Money arrived.
    Succeeded,
    /// A charge failed.
    Failed,
    /// Money went back.
    Refunded,
}

impl PaymentKind {
    /// Every kind.
    pub const ALL: [PaymentKind; 3] = [Self::Succeeded, Self::Failed, Self::Refunded];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "payment.succeeded",
            Self::Failed => "payment.failed",
            Self::Refunded => "payment.refunded",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "Payment succeeded",
            Self::Failed => "Payment failed",
            Self::Refunded => "Payment refunded",
        }
    }

    fn icon(self) -> &'static str {
        match self {
            Self::Succeeded => ":white_check_mark:",
            Self::Failed => ":x:",
            Self::Refunded => ":leftwards_arrow_with_hook:",
        }
    }
}

impl From<PaymentKind> for &'static str {
    fn from(k: PaymentKind) -> Self {
        k.as_str()
    }
}

/// A verified payment event; the data of the `payment` template.
///
/// Accepted body: `{"type":"payment.succeeded"|"payment.failed"|"payment.refunded",
/// "id":"evt_…","amount":<integer minor units ≥ 0>,"currency":"<3 letters>",
/// "customer":"<id or email>"|null}`. Other fields are ignored, so the sender may add some
/// without breaking us. `id` is 1–255 of `[A-Za-z0-9_-]`; `currency` is stored uppercase;
/// `customer` (optional) is at most 255 characters without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPaymentEvent")]
pub struct PaymentEvent {
    /// Event type.
    #[serde(rename = "type")]
    pub kind: PaymentKind,
    /// Provider's event id (the idempotency subject).
    pub id: String,
    /// Amount in the currency's minor unit (cents).
    pub amount: u64,
    /// ISO 4217 code, uppercase.
    pub currency: String,
    /// Customer id or email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

#[derive(Deserialize)]
struct RawPaymentEvent {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    amount: u64,
    currency: String,
    #[serde(default)]
    customer: Option<String>,
}

/// An inbound event that is not a usable payment event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Larger than [`MAX_EVENT_BODY_BYTES`].
    #[error("event body larger than {MAX_EVENT_BODY_BYTES} bytes")]
    TooLarge,
    /// Well-signed but of a type this service does not handle; acknowledge and ignore it.
    #[error("unsupported event type {0:?}")]
    Unsupported(String),
    /// Not of the accepted shape.
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl EventError {
    /// `payload_too_large`, `unsupported_event` or `invalid_event`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "payload_too_large",
            Self::Unsupported(_) => "unsupported_event",
            Self::Invalid(_) => "invalid_event",
        }
    }
}

impl PaymentEvent {
    /// Parses a verified event body (see the type's docs for the accepted shape). The type is
    /// read first, so an event of another type is [`EventError::Unsupported`] whatever its
    /// other fields look like.
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        #[derive(Deserialize)]
        struct TypeOnly {
            #[serde(rename = "type")]
            kind: String,
        }
        if body.len() > MAX_EVENT_BODY_BYTES {
            return Err(EventError::TooLarge);
        }
        let invalid = |e: serde_json::Error| EventError::Invalid(e.to_string());
        let TypeOnly { kind } = serde_json::from_slice(body).map_err(invalid)?;
        if PaymentKind::parse(&kind).is_none() {
            return Err(EventError::Unsupported(kind.chars().take(64).collect()));
        }
        let raw: RawPaymentEvent = serde_json::from_slice(body).map_err(invalid)?;
        Self::try_from(raw)
    }
}

impl TryFrom<RawPaymentEvent> for PaymentEvent {
    type Error = EventError;

    fn try_from(raw: RawPaymentEvent) -> Result<Self, EventError> {
        let kind = PaymentKind::parse(&raw.kind)
            .ok_or_else(|| EventError::Unsupported(raw.kind.chars().take(64).collect()))?;
        let id_ok = !raw.id.is_empty()
            && raw.id.len() <= MAX_EVENT_FIELD_CHARS
            && raw
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(EventError::Invalid(
                "id must be 1-255 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        if raw.currency.len() != 3 || !raw.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(EventError::Invalid(
                "currency must be a 3-letter ISO 4217 code".into(),
            ));
        }
        let customer = match raw.customer.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => {
                if c.chars().count() > MAX_EVENT_FIELD_CHARS || c.chars().any(char::is_control) {
                    return Err(EventError::Invalid(
                        "customer must be at most 255 characters without control characters".into(),
                    ));
                }
                Some(c.to_string())
            }
        };
        Ok(Self {
            kind,
            id: raw.id,
            amount: raw.amount,
            currency: raw.currency.to_ascii_uppercase(),
            customer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::leads::{self, Country, LeadInput, ScoreInputs};

    fn notice() -> LeadNotice {
        LeadNotice {
            lead_id: "lead_01".into(),
            name: "Jane Doe".into(),
            email: Some("jane_doe@example.com".into()),
            phone: Some("+14155552671".into()),
            address: Some("1 Main St".into()),
            timeline: Some(Timeline::Within3Months),
            source: "web".into(),
            score: 72,
            reasons: vec![
                ("contact_email_and_phone".into(), 25),
                ("negative_equity".into(), -10),
            ],
            estimated_value: Some(1_250_000),
            notes: Some("Call after 5pm\nPrefers text".into()),
        }
    }

    #[test]
    fn new_lead_snapshot() {
        let n = Notification::NewLead(notice());
        assert_eq!(
            n.render(),
            json!({
                "text": "New lead: Jane Doe (score 72)",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": "*New lead:* Jane Doe\nScore *72*/100 · Timeline: within 3 months"}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": "*Email*\n`jane_doe@example.com`"},
                        {"type": "mrkdwn", "text": "*Phone*\n`+14155552671`"},
                        {"type": "mrkdwn", "text": "*Address*\n1 Main St"},
                        {"type": "mrkdwn", "text": "*Estimated value*\n1,250,000"}
                    ]},
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": "*Notes*\nCall after 5pm\nPrefers text"}},
                    {"type": "context", "elements": [{"type": "mrkdwn",
                        "text": "Lead `lead_01` · Source `web` · contact email and phone +25, negative equity -10"}]}
                ]
            })
        );
        assert_eq!(n.channel(), Channel::LeadsIncoming);
    }

    #[test]
    fn hot_lead_snapshot_with_sparse_data() {
        let n = Notification::HotLead(LeadNotice {
            email: None,
            address: None,
            timeline: None,
            reasons: vec![],
            estimated_value: None,
            notes: None,
            score: 91,
            ..notice()
        });
        assert_eq!(
            n.render(),
            json!({
                "text": "Hot lead: Jane Doe (score 91)",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": ":fire: *Hot lead:* Jane Doe\nScore *91*/100 · Timeline: not given"}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": "*Phone*\n`+14155552671`"}
                    ]},
                    {"type": "context", "elements": [{"type": "mrkdwn",
                        "text": "Lead `lead_01` · Source `web`"}]}
                ]
            })
        );
        assert_eq!(n.channel(), Channel::HotLeads);
    }

    fn payment() -> PaymentEvent {
        PaymentEvent {
            kind: PaymentKind::Succeeded,
            id: "evt_123".into(),
            amount: 199_950,
            currency: "USD".into(),
            customer: Some("cus_42".into()),
        }
    }

    #[test]
    fn payment_snapshot() {
        let n = Notification::Payment(payment());
        assert_eq!(
            n.render(),
            json!({
                "text": "Payment succeeded: 1,999.50 USD from `cus_42`",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": ":white_check_mark: *Payment succeeded:* 1,999.50 USD"}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": "*Customer*\n`cus_42`"}
                    ]},
                    {"type": "context", "elements": [{"type": "mrkdwn",
                        "text": "Event `evt_123` · payment.succeeded"}]}
                ]
            })
        );
        assert_eq!(n.channel(), Channel::Ops);
        let refund = Notification::Payment(PaymentEvent {
            kind: PaymentKind::Refunded,
            amount: 5000,
            currency: "JPY".into(),
            customer: None,
            ..payment()
        });
        assert_eq!(
            refund.render(),
            json!({
                "text": "Payment refunded: 5,000 JPY",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": ":leftwards_arrow_with_hook: *Payment refunded:* 5,000 JPY"}},
                    {"type": "context", "elements": [{"type": "mrkdwn",
                        "text": "Event `evt_123` · payment.refunded"}]}
                ]
            })
        );
    }

    #[test]
    fn alert_snapshot() {
        let n = Notification::Alert(AlertNotice {
            id: "d1_down:2025-01-01T10".into(),
            severity: Severity::Critical,
            title: "D1 unavailable".into(),
            detail: Some("3 writes failed\nlast: timeout > 5s".into()),
        });
        assert_eq!(
            n.render(),
            json!({
                "text": "Critical alert: D1 unavailable",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": ":rotating_light: *Critical alert:* D1 unavailable"}},
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": "3 writes failed\nlast: timeout &gt; 5s"}},
                    {"type": "context", "elements": [{"type": "mrkdwn",
                        "text": "Alert `d1_down:2025-01-01T10`"}]}
                ]
            })
        );
    }

    #[test]
    fn hostile_input_comes_out_inert() {
        let evil = "<!channel> *bold* <http://evil|click> _it_ ~s~ `code` @here @Everyone &amp;";
        let expected = "&lt;!channel&gt; ∗bold∗ &lt;http://evil|click&gt; ˍitˍ ∼s∼ ˋcodeˋ \
                        @\u{200B}here @\u{200B}Everyone &amp;amp;";
        assert_eq!(escape_mrkdwn(evil), expected);

        let n = Notification::NewLead(LeadNotice {
            name: evil.into(),
            email: Some("`@here<x>`@evil.com".into()),
            lead_id: "a`b".into(),
            address: Some("line1\nline2 *x*".into()),
            notes: Some(evil.into()),
            reasons: vec![("<!here>".into(), 1)],
            ..notice()
        });
        let rendered = n.render();
        let mut texts = vec![rendered["text"].as_str().unwrap().to_string()];
        collect_texts(&rendered["blocks"], &mut texts);
        for t in &texts {
            // Only our own markup survives: no angle brackets at all, and the only `*`/`` ` ``
            // are the ones our templates put around labels and code spans.
            assert!(!t.contains('<') && !t.contains('>'), "{t}");
            assert!(!t.contains("@here") && !t.contains("@Everyone"), "{t}");
            assert!(!t.contains("*bold*") && !t.contains("_it_"), "{t}");
        }
        assert_eq!(
            rendered["text"],
            format!(
                "New lead: {} (score 72)",
                escape(evil, Mode::Line, MAX_LINE_CHARS)
            )
        );
        assert_eq!(
            rendered["blocks"][1]["fields"][0]["text"],
            "*Email*\n`ˋ@\u{200B}here&lt;x&gt;ˋ@evil.com`"
        );
        assert_eq!(
            rendered["blocks"][1]["fields"][2]["text"],
            "*Address*\nline1 line2 ∗x∗"
        );
        assert!(rendered["blocks"][3]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Lead `aˋb`"));
    }

    fn collect_texts(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(t)) = m.get("text") {
                    out.push(t.clone());
                }
                m.values().for_each(|x| collect_texts(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| collect_texts(x, out)),
            _ => {}
        }
    }

    #[test]
    fn escaping_modes_truncation_and_controls() {
        assert_eq!(
            escape("a\r\nb\tc\u{202E}d\u{0}", Mode::Block, 100),
            "a\nb cd "
        );
        assert_eq!(escape("a\nb", Mode::Line, 100), "a b");
        assert_eq!(escape("a_b*c~d`e", Mode::Code, 100), "a_b*c~dˋe");
        assert_eq!(escape("abcdef", Mode::Line, 3), "abc…");
        assert_eq!(escape("abc", Mode::Line, 3), "abc");
        assert_eq!(escape("<<<<", Mode::Line, 2), "&lt;&lt;…");
        assert_eq!(
            escape("@her @channels", Mode::Line, 100),
            "@her @\u{200B}channels"
        );
        assert_eq!(escape("x@", Mode::Line, 100), "x@");
        assert_eq!(code(""), "–");
    }

    #[test]
    fn worst_case_input_stays_within_slack_limits() {
        // Slack refuses a section or context text over 3000 characters, a field over 2000.
        let worst = "&".repeat(10_000);
        let lead = LeadNotice {
            lead_id: worst.clone(),
            name: worst.clone(),
            email: Some(worst.clone()),
            phone: Some(worst.clone()),
            address: Some(worst.clone()),
            source: worst.clone(),
            reasons: vec![(worst.clone(), i32::MIN); 50],
            notes: Some(worst.clone()),
            ..notice()
        };
        let alert = AlertNotice {
            id: worst.clone(),
            severity: Severity::Warning,
            title: worst.clone(),
            detail: Some(worst.clone()),
        };
        let payment = PaymentEvent {
            id: "e".repeat(MAX_EVENT_FIELD_CHARS),
            customer: Some(worst.clone()),
            amount: u64::MAX,
            ..payment()
        };
        for n in [
            Notification::HotLead(lead),
            Notification::Alert(alert),
            Notification::Payment(payment),
        ] {
            let v = n.render();
            for block in v["blocks"].as_array().unwrap() {
                let len = |t: &Value| t["text"].as_str().unwrap().chars().count();
                match block["type"].as_str().unwrap() {
                    "section" if block.get("fields").is_some() => {
                        for f in block["fields"].as_array().unwrap() {
                            assert!(len(f) <= 2000, "{}", len(f));
                        }
                    }
                    "section" => assert!(len(&block["text"]) <= 3000),
                    _ => assert!(len(&block["elements"][0]) <= 3000),
                }
            }
        }
    }

    #[test]
    fn amounts() {
        assert_eq!(format_amount(0, "USD"), "0.00 USD");
        assert_eq!(format_amount(5, "EUR"), "0.05 EUR");
        assert_eq!(format_amount(123_456_789, "GBP"), "1,234,567.89 GBP");
        assert_eq!(format_amount(1000, "KRW"), "1,000 KRW");
        assert_eq!(format_amount(1_234_567, "KWD"), "1,234.567 KWD");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn templates_parse_and_match_the_queue_envelope() {
        for t in Template::ALL {
            assert_eq!(Template::parse(t.name()), Ok(t));
        }
        let err = Template::parse("welcome").unwrap_err();
        assert_eq!(err.code(), "unknown_template");
        let all = [
            Notification::NewLead(notice()),
            Notification::HotLead(notice()),
            Notification::Payment(payment()),
            Notification::Alert(AlertNotice {
                id: "a1".into(),
                severity: Severity::Info,
                title: "t".into(),
                detail: None,
            }),
        ];
        for n in all {
            let encoded = n.encode();
            let v: Value = serde_json::from_str(&encoded).unwrap();
            assert_eq!(v["template"], n.template().name());
            assert_eq!(Notification::decode(encoded.as_bytes()).unwrap(), n);
            assert_eq!(serde_json::from_str::<Notification>(&encoded).unwrap(), n);
        }
        assert_eq!(
            Notification::decode(br#"{"template":"sms","data":{}}"#)
                .unwrap_err()
                .code(),
            "unknown_template"
        );
        let bad: [&[u8]; 4] = [
            br#"{"template":"alert","data":{"id":"a"}}"#,
            br#"{"template":"alert","data":{},"extra":1}"#,
            br#"{"template":"payment","data":{"type":"payment.succeeded","id":"e","amount":1,"currency":"dollars"}}"#,
            b"[",
        ];
        for bad in bad {
            assert_eq!(
                Notification::decode(bad).unwrap_err().code(),
                "invalid_notification"
            );
        }
    }

    #[test]
    fn lead_notifications_follow_the_route() {
        let input: LeadInput = serde_json::from_value(json!({
            "name": "Jane", "email": "j@example.com", "phone": "+14155552671",
            "address": "1 Main St", "timeline": "now", "source": "web"
        }))
        .unwrap();
        let lead = leads::validate(input, Country::from_iso("US").unwrap()).unwrap();
        let score = leads::score(&lead, &ScoreInputs::default());
        assert_eq!(score.total, 70);
        let n = Notification::for_lead(LeadNotice::new("l1", &lead, &score, None));
        assert_eq!(n.template(), Template::NewLead);
        assert_eq!(n.subject_id(), "l1",);
        let score = leads::score(
            &lead,
            &ScoreInputs {
                estimated_value: Some(leads::HIGH_VALUE),
                mortgage_balance: None,
            },
        );
        assert_eq!(score.total, leads::HOT_THRESHOLD + 2);
        let n = Notification::for_lead(LeadNotice::new("l1", &lead, &score, Some(1)));
        assert_eq!(
            (n.template(), n.channel()),
            (Template::HotLead, Channel::HotLeads)
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let seq: Vec<u64> = (1..=10)
            .map(|a| backoff_ms(a, BASE_BACKOFF_MS, MAX_BACKOFF_MS))
            .collect();
        assert_eq!(
            seq,
            vec![
                5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000, 600_000
            ]
        );
        assert_eq!(backoff_ms(0, 100, 1000), 100);
        assert_eq!(backoff_ms(64, 100, u64::MAX), u64::MAX);
        assert_eq!(backoff_ms(u32::MAX, u64::MAX, 7), 7);
        assert_eq!(backoff_ms(3, 0, 1000), 0);
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        for e in [0, 1, 2, 499, 500, 501, u64::MAX] {
            let d = with_jitter(1000, e);
            assert!((500..=1000).contains(&d), "{e}: {d}");
        }
        assert_eq!(with_jitter(1000, 0), 500);
        assert_eq!(with_jitter(1000, 500), 1000);
        assert_eq!(with_jitter(0, 12345), 0);
        for e in [0, 1, u64::MAX / 3, u64::MAX] {
            assert!(with_jitter(u64::MAX, e) >= u64::MAX / 2);
        }
    }

    #[test]
    fn delivery_decisions() {
        use Action::*;
        let retry1 = Retry {
            delay_ms: BASE_BACKOFF_MS,
        };
        assert_eq!(next_action(1, Outcome::status(200)), Done);
        assert_eq!(next_action(1, Outcome::status(204)), Done);
        for s in [408, 429, 500, 502, 503, 599] {
            assert_eq!(next_action(1, Outcome::status(s)), retry1, "{s}");
        }
        assert_eq!(next_action(1, Outcome::NetworkError), retry1);
        for s in [400, 401, 403, 404, 410, 413, 499] {
            assert_eq!(
                next_action(1, Outcome::status(s)),
                DeadLetter {
                    reason: "permanent_status"
                },
                "{s}"
            );
        }
        for s in [100, 301, 302, 600, 0] {
            assert_eq!(
                next_action(1, Outcome::status(s)),
                DeadLetter {
                    reason: "unexpected_status"
                },
                "{s}"
            );
        }
        // The budget: attempt MAX_ATTEMPTS − 1 may still retry, attempt MAX_ATTEMPTS may not.
        assert!(matches!(
            next_action(MAX_ATTEMPTS - 1, Outcome::status(503)),
            Retry { .. }
        ));
        assert_eq!(
            next_action(MAX_ATTEMPTS, Outcome::NetworkError),
            DeadLetter {
                reason: "attempts_exhausted"
            }
        );
        // Success on the last attempt is still success.
        assert_eq!(next_action(MAX_ATTEMPTS, Outcome::status(200)), Done);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let with = |attempt, ms| {
            next_action(
                attempt,
                Outcome::Status {
                    status: 429,
                    retry_after_ms: ms,
                },
            )
        };
        assert_eq!(with(1, Some(30_000)), Action::Retry { delay_ms: 30_000 });
        assert_eq!(with(4, Some(30_000)), Action::Retry { delay_ms: 40_000 });
        assert_eq!(
            with(1, Some(u64::MAX)),
            Action::Retry {
                delay_ms: MAX_RETRY_AFTER_MS
            }
        );
        assert_eq!(parse_retry_after(" 30 "), Some(30_000));
        assert_eq!(parse_retry_after("0"), Some(0));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("99999999999"), None);
        let custom = DeliveryPolicy {
            base_ms: 1,
            max_ms: 4,
            max_attempts: 2,
        };
        assert_eq!(
            custom.next_action(1, Outcome::NetworkError),
            Action::Retry { delay_ms: 1 }
        );
        assert!(matches!(
            custom.next_action(2, Outcome::NetworkError),
            Action::DeadLetter { .. }
        ));
    }

    #[test]
    fn idempotency_keys_are_deterministic() {
        assert_eq!(
            idempotency_key(Template::Payment, "evt_123"),
            "notify:payment:a404468e8bb99ce112e1187db38362059db3dc8ffcc190ad3b16963604b1e92a"
        );
        assert_ne!(
            idempotency_key(Template::NewLead, "l1"),
            idempotency_key(Template::HotLead, "l1")
        );
        assert_ne!(
            idempotency_key(Template::NewLead, "l1"),
            idempotency_key(Template::NewLead, "l2")
        );
        assert_eq!(
            Notification::Payment(payment()).idempotency_key(),
            idempotency_key(Template::Payment, "evt_123")
        );
    }

    const SLACK: &str = "https://hooks.slack.com/services/T000/B000/SECRETPATH?token=SECRETQUERY";

    #[test]
    fn destinations_parse() {
        let d = Destinations::parse(&format!(
            r#"{{"hot-leads":"{SLACK}","ops":"http://localhost:8787/hook"}}"#
        ))
        .unwrap();
        assert_eq!(d.get(Channel::HotLeads).unwrap().as_str(), SLACK);
        assert_eq!(d.get(Channel::LeadsIncoming), None);
        assert_eq!(
            d.channels().collect::<Vec<_>>(),
            vec![Channel::HotLeads, Channel::Ops]
        );
        let dbg = format!("{d:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        assert!(dbg.contains("https://hooks.slack.com/…"));
        assert_eq!(Destinations::parse("{}").unwrap(), Destinations::default());
        assert_eq!(
            WebhookUrl::parse("http://[::1]:8080/x").unwrap().redacted(),
            "http://[::1]:8080/…"
        );
        assert!(WebhookUrl::parse("HTTPS://example.com").is_ok());
    }

    #[test]
    fn destination_errors_name_the_channel_never_the_url() {
        let err = |cfg: String| Destinations::parse(&cfg).unwrap_err();
        for (url, why) in [
            ("ftp://example.com/SECRET", "URL must use http or https"),
            (
                "example.com/SECRET",
                "URL must start with http:// or https://",
            ),
            ("https:///SECRET", "URL must name a host"),
            (
                "https://user:SECRET@example.com/",
                "URL must not carry credentials before the host",
            ),
            (
                "https://exa mple.com/SECRET",
                "URL must be ASCII without spaces (percent-encode the rest)",
            ),
            ("https://example.com:0/SECRET", "URL has a malformed port"),
            (
                "https://example.com:99999/SECRET",
                "URL has a malformed port",
            ),
            ("https://example.com:/SECRET", "URL has a malformed port"),
            ("https://exa_mple..com/SECRET", "URL has a malformed host"),
            ("https://[zz]/SECRET", "URL has a malformed IPv6 host"),
            ("https://[::1/SECRET", "URL has a malformed IPv6 host"),
        ] {
            let e = err(format!(r#"{{"ops":"{url}"}}"#));
            assert_eq!(
                e,
                DestinationError::InvalidUrl {
                    channel: Channel::Ops,
                    why
                },
                "{url}"
            );
            assert!(!e.to_string().contains("SECRET"));
            assert!(e.to_string().starts_with("channel ops: "));
            assert_eq!(e.code(), "config_error");
        }
        assert_eq!(
            err(r#"{"ops":42}"#.into()),
            DestinationError::InvalidUrl {
                channel: Channel::Ops,
                why: "must be a string"
            }
        );
        assert_eq!(
            err(r#"{"hot_leads":"https://x.io"}"#.into()),
            DestinationError::UnknownChannel("hot_leads".into())
        );
        assert_eq!(err("[]".into()), DestinationError::NotAnObject);
        let e = err(format!(r#"{{"ops":"{SLACK}""#));
        assert_eq!(e, DestinationError::NotAnObject);
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(WebhookUrl::parse(&long).is_err());
    }

    const SECRET: &[u8] = b"whsec_test_secret";
    const BODY: &[u8] = br#"{"type":"payment.succeeded"}"#;
    const TS: u64 = 1_700_000_000;

    #[test]
    fn signatures_match_an_independent_hmac() {
        // python3: hmac.new(b"whsec_test_secret", b'1700000000.{"type":"payment.succeeded"}',
        //                   hashlib.sha256).hexdigest()
        assert_eq!(
            sign(SECRET, TS, BODY),
            "v1=3187151a9fae5b2a1eff8499c64aea7b7791b9a002e3e0c58d1a24d133f5bb4a"
        );
        let sig = sign(SECRET, TS, BODY);
        assert_eq!(
            verify_signature(SECRET, &TS.to_string(), &sig, BODY, TS, DEFAULT_TOLERANCE_S),
            Ok(())
        );
        let upper = format!("v1={}", sig[3..].to_uppercase());
        assert!(verify_signature(SECRET, "1700000000", &upper, BODY, TS, 0).is_ok());
    }

    #[test]
    fn replay_window_boundaries_are_inclusive() {
        let sig = sign(SECRET, TS, BODY);
        let at = |now: u64, tol: u64| verify_signature(SECRET, "1700000000", &sig, BODY, now, tol);
        assert_eq!(at(TS + 300, 300), Ok(()));
        assert_eq!(
            at(TS + 301, 300),
            Err(WebhookError::Stale {
                age_s: 301,
                tolerance_s: 300
            })
        );
        assert_eq!(at(TS - 300, 300), Ok(()));
        assert_eq!(
            at(TS - 301, 300),
            Err(WebhookError::FromTheFuture {
                ahead_s: 301,
                tolerance_s: 300
            })
        );
        assert_eq!(at(TS, 0), Ok(()));
        assert_eq!(at(TS + 1, 0).unwrap_err().code(), "stale_timestamp");
        assert_eq!(at(TS - 1, 0).unwrap_err().code(), "stale_timestamp");
        // Extremes saturate instead of overflowing.
        assert_eq!(at(0, u64::MAX), Ok(()));
        let big = sign(SECRET, u64::MAX, BODY);
        assert_eq!(
            verify_signature(SECRET, &u64::MAX.to_string(), &big, BODY, 0, 10)
                .unwrap_err()
                .code(),
            "stale_timestamp"
        );
    }

    #[test]
    fn signature_refusals() {
        let sig = sign(SECRET, TS, BODY);
        let ts = "1700000000";
        let v = |secret: &[u8], t: &str, s: &str, body: &[u8]| {
            verify_signature(secret, t, s, body, TS, DEFAULT_TOLERANCE_S).map_err(|e| e.code())
        };
        assert_eq!(v(SECRET, "", &sig, BODY), Err("missing_signature"));
        assert_eq!(v(SECRET, ts, "  ", BODY), Err("missing_signature"));
        assert_eq!(v(b"", ts, &sig, BODY), Err("config_error"));
        assert_eq!(v(SECRET, ts, &sig, b"{}"), Err("bad_signature"));
        assert_eq!(v(b"other", ts, &sig, BODY), Err("bad_signature"));
        assert_eq!(v(SECRET, "1700000001", &sig, BODY), Err("bad_signature"));
        assert_eq!(v(SECRET, "+1700000000", &sig, BODY), Err("bad_signature"));
        assert_eq!(v(SECRET, "1.7e9", &sig, BODY), Err("bad_signature"));
        assert_eq!(v(SECRET, ts, &sig[3..], BODY), Err("bad_signature"));
        assert_eq!(v(SECRET, ts, &sig[..66], BODY), Err("bad_signature"));
        assert_eq!(
            v(SECRET, ts, &format!("v0={}", &sig[3..]), BODY),
            Err("bad_signature")
        );
        assert_eq!(
            v(SECRET, ts, &format!("{sig}zz"), BODY),
            Err("bad_signature")
        );
        // Rotation: any v1 entry may match; other schemes are skipped.
        let rotated = format!("v0=abc, v1={}, {sig}", "0".repeat(64));
        assert_eq!(v(SECRET, ts, &rotated, BODY), Ok(()));
        let many = [sig.as_str(); MAX_SIGNATURES + 1].join(",");
        assert_eq!(v(SECRET, ts, &many, BODY), Err("bad_signature"));
        let many = [sig.as_str(); MAX_SIGNATURES].join(",");
        assert_eq!(v(SECRET, ts, &many, BODY), Ok(()));
        let long = format!("{sig},v0={}", "a".repeat(MAX_SIGNATURE_HEADER_LEN));
        assert_eq!(v(SECRET, ts, &long, BODY), Err("bad_signature"));
        // A forged request with an old timestamp is told "bad signature", not "stale".
        assert_eq!(
            verify_signature(SECRET, "1", &sig, BODY, TS, 300).map_err(|e| e.code()),
            Err("bad_signature")
        );
    }

    #[test]
    fn payment_events_parse() {
        let p = PaymentEvent::parse(
            br#"{"type":"payment.succeeded","id":"evt_123","amount":199950,"currency":"usd",
                "customer":"cus_42","livemode":false,"metadata":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(p, payment());
        let p = PaymentEvent::parse(
            br#"{"type":"payment.failed","id":"evt_1","amount":0,"currency":"EUR","customer":null}"#,
        )
        .unwrap();
        assert_eq!((p.kind, p.customer), (PaymentKind::Failed, None));
        assert_eq!(
            serde_json::to_value(payment()).unwrap(),
            json!({"type":"payment.succeeded","id":"evt_123","amount":199950,"currency":"USD","customer":"cus_42"})
        );
    }

    #[test]
    fn payment_event_refusals() {
        let code = |body: &str| PaymentEvent::parse(body.as_bytes()).unwrap_err().code();
        assert_eq!(
            code(r#"{"type":"customer.created","id":"x"}"#),
            "unsupported_event"
        );
        for body in [
            r#"{"id":"evt_1"}"#,
            r#"{"type":"payment.succeeded","id":"evt_1","currency":"USD"}"#,
            r#"{"type":"payment.succeeded","id":"evt_1","amount":-5,"currency":"USD"}"#,
            r#"{"type":"payment.succeeded","id":"evt_1","amount":1.5,"currency":"USD"}"#,
            r#"{"type":"payment.succeeded","id":"evt_1","amount":"5","currency":"USD"}"#,
            r#"{"type":"payment.succeeded","id":"","amount":5,"currency":"USD"}"#,
            r#"{"type":"payment.succeeded","id":"evt 1","amount":5,"currency":"USD"}"#,
            r#"{"type":"payment.succeeded","id":"evt_1","amount":5,"currency":"US"}"#,
            r#"{"type":"payment.succeeded","id":"evt_1","amount":5,"currency":"U$D"}"#,
            r#"{"type":"payment.succeeded","id":"evt_1","amount":5,"currency":"USD","customer":"a\nb"}"#,
            r#"{"type":"payment.succeeded","id":"evt_1","amount":5,"currency":"USD","customer":{"id":"c"}}"#,
            "not json",
        ] {
            assert_eq!(code(body), "invalid_event", "{body}");
        }
        let long_id = format!(
            r#"{{"type":"payment.succeeded","id":"{}","amount":5,"currency":"USD"}}"#,
            "e".repeat(MAX_EVENT_FIELD_CHARS + 1)
        );
        assert_eq!(code(&long_id), "invalid_event");
        let mut big = br#"{"type":"payment.succeeded"}"#.to_vec();
        big.resize(MAX_EVENT_BODY_BYTES + 1, b' ');
        assert_eq!(PaymentEvent::parse(&big).unwrap_err(), EventError::TooLarge);
    }
}
