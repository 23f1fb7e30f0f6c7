//! Inbound webhooks: HMAC-SHA256 signatures over `{timestamp}.{body}` ([`sign`],
//! [`verify_signature`]) with a replay window, and the hex helpers they share.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

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
/// Most refused (unverified) inbound webhooks kept in D1's `webhook_events`: the newest are
/// kept, older ones are pruned in the same batch that records a new one, so a flood of bad
/// signatures can never grow the table. Every refusal is still counted in
/// `roomkeeper_webhook_events_total{outcome=<code>}`.
pub const MAX_REJECTED_WEBHOOKS: usize = 100;

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
/// (`idempotency_key`) to stop replays inside it.
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

/// Lowercase hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The 32 bytes a 64-digit hex string spells, if it does.
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
