//! Rendering notices as Slack-compatible JSON (`{"text": fallback, "blocks": [...]}`) and the
//! one escaping function every piece of user data goes through ([`escape_mrkdwn`]), plus
//! [`format_amount`] for money.

use serde_json::{json, Value};

use super::notice::{AlertNotice, LeadNotice, Notification};
use super::payment::PaymentEvent;
use crate::services::leads::{is_bidi_control, Timeline};

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
pub(super) enum Mode {
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

pub(super) fn escape(s: &str, mode: Mode, max_chars: usize) -> String {
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
pub(super) fn code(s: &str) -> String {
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
pub(super) fn group_thousands(n: u64) -> String {
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

impl Notification {
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
