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

mod delivery;
mod destination;
mod notice;
mod payment;
mod template;
#[cfg(test)]
mod tests;
mod webhook;

pub use delivery::{
    apply, backoff_ms, idempotency_key, next_action, parse_retry_after, with_jitter, Action,
    Attempted, DeliveryPolicy, DeliveryState, DeliveryStatus, Effect, Outcome, Record,
    BASE_BACKOFF_MS, MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_RETRY_AFTER_MS,
};
pub use destination::{DestinationError, Destinations, WebhookUrl, MAX_URL_LEN};
pub use notice::{
    route, AlertNotice, Channel, LeadNotice, Notification, NotifyError, Severity, Template,
};
pub use payment::{
    EventError, PaymentEvent, PaymentKind, MAX_EVENT_BODY_BYTES, MAX_EVENT_FIELD_CHARS,
};
pub use template::{
    escape_mrkdwn, format_amount, MAX_BLOCK_CHARS, MAX_ID_CHARS, MAX_LINE_CHARS, MAX_REASONS_SHOWN,
};
pub use webhook::{
    sign, verify_signature, WebhookError, DEFAULT_TOLERANCE_S, MAX_REJECTED_WEBHOOKS,
    MAX_SIGNATURES, MAX_SIGNATURE_HEADER_LEN, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
