//! The one field-level validation error every service reports: [`FieldError`] (a field, a
//! stable code and a message) and [`describe`], the `field: message; …` text of a refusal
//! that lists several. Leads and valuation both use it, so the HTTP API has one shape for a
//! refused field: `{"field": …, "code": …, "message": …}`.

use std::fmt;

use serde::Serialize;

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The JSON key, query parameter or CSV column (`contact` for the leads' email-or-phone
    /// rule); empty when the whole value is wrong.
    pub field: String,
    /// Stable code from the reporting service's `codes` module.
    pub code: &'static str,
    /// Human-readable explanation (never echoes more than a short prefix of the input).
    pub message: String,
}

impl FieldError {
    /// A field error for `field` with a stable `code` and a human-readable `message`.
    pub(crate) fn new(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    /// `field: message`, or just `message` when the whole value is wrong (no field).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// `field: message; field: message` — the message of a refusal listing several fields.
pub fn describe(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_and_messages() {
        let named = FieldError::new("email", "invalid_email", "not a valid email address");
        assert_eq!(
            serde_json::to_value(&named).unwrap(),
            serde_json::json!({"field": "email", "code": "invalid_email",
                               "message": "not a valid email address"})
        );
        let whole = FieldError::new("", "not_an_object", String::from("not a JSON object"));
        assert_eq!(whole.to_string(), "not a JSON object");
        assert_eq!(
            describe(&[named, whole]),
            "email: not a valid email address; not a JSON object"
        );
    }
}
