//! Email addresses: [`normalize_email`] validates pragmatically and lowercases the domain;
//! [`EmailError`] says why an address was refused.

use super::codes;

/// Longest email address, in bytes (RFC 5321's path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest local part (before `@`) of an email address, in bytes (RFC 5321).
pub const MAX_EMAIL_LOCAL_LEN: usize = 64;

/// Why an email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Longer than [`MAX_EMAIL_LEN`] bytes.
    #[error("at most {MAX_EMAIL_LEN} bytes")]
    TooLong,
    /// Not of the form `local@domain.tld`; the text says which rule failed.
    #[error("not a valid email address: {0}")]
    Invalid(&'static str),
}

impl EmailError {
    /// [`codes::TOO_LONG`] or [`codes::INVALID_EMAIL`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong => codes::TOO_LONG,
            Self::Invalid(_) => codes::INVALID_EMAIL,
        }
    }
}

/// Validates an email address pragmatically and normalises it.
///
/// Accepts `local@domain` where: the whole is at most [`MAX_EMAIL_LEN`] bytes and the local
/// part at most [`MAX_EMAIL_LOCAL_LEN`]; nothing is whitespace or a control character; the
/// local part has no `"(),:;<>@[\]`, does not start or end with `.` and has no `..` (so quoted
/// local parts are refused — real forms never need them); the domain has at least two
/// dot-separated labels of 1–63 characters, each letters, digits, `-` (not at either end) or
/// non-ASCII (internationalised domains in Unicode form), and a top-level label that is not
/// all digits (so IP addresses are refused, as are `[…]` literals).
///
/// Normalisation: surrounding whitespace trimmed, the domain lowercased, the local part kept
/// as typed (RFC 5321 allows it to be case-sensitive; [`dedupe_keys`](super::score::dedupe_keys) lowercases it for
/// comparison only). Provider-specific rewrites (dots or `+tags` in Gmail) are not applied.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    let s = raw.trim();
    if s.len() > MAX_EMAIL_LEN {
        return Err(EmailError::TooLong);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EmailError::Invalid("contains spaces or control characters"));
    }
    let (local, domain) = s
        .rsplit_once('@')
        .ok_or(EmailError::Invalid("missing '@'"))?;
    if local.is_empty() || local.len() > MAX_EMAIL_LOCAL_LEN {
        return Err(EmailError::Invalid(
            "the part before '@' must be 1-64 characters",
        ));
    }
    if local.chars().any(|c| "\"(),:;<>@[\\]".contains(c)) {
        return Err(EmailError::Invalid(
            "the part before '@' has a character that needs quoting",
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(EmailError::Invalid("misplaced '.' before '@'"));
    }
    let domain = domain.to_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(EmailError::Invalid("the domain needs a dot (name.tld)"));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii());
        if !ok {
            return Err(EmailError::Invalid("the domain is malformed"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(EmailError::Invalid(
            "the domain must be a name, not an IP address",
        ));
    }
    Ok(format!("{local}@{domain}"))
}
