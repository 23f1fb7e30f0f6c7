//! Payment events from a provider's webhook: [`PaymentEvent`] and its accepted shape
//! ([`PaymentEvent::parse`]).

use serde::{Deserialize, Serialize};

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

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "Payment succeeded",
            Self::Failed => "Payment failed",
            Self::Refunded => "Payment refunded",
        }
    }

    pub(super) fn icon(self) -> &'static str {
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
