//! Every stable error code the lead module produces, for the README's error table.

/// A required field is missing or blank.
pub const REQUIRED: &str = "required";
/// Neither `email` nor `phone` was given (reported on the pseudo-field `contact`).
pub const CONTACT_REQUIRED: &str = "contact_required";
/// A field is longer than its limit.
pub const TOO_LONG: &str = "too_long";
/// A text field contains control or bidirectional-override characters.
pub const INVALID_CHARACTERS: &str = "invalid_characters";
/// Not a usable email address.
pub const INVALID_EMAIL: &str = "invalid_email";
/// Not a usable phone number.
pub const INVALID_PHONE: &str = "invalid_phone";
/// Not one of the documented timelines.
pub const INVALID_TIMELINE: &str = "invalid_timeline";
/// Not a source token (`[a-z0-9][a-z0-9_-]*`).
pub const INVALID_SOURCE: &str = "invalid_source";
/// `property` is not a JSON object.
pub const INVALID_PROPERTY: &str = "invalid_property";
/// The whole lead was refused (422); the message lists every field error.
pub const INVALID_LEAD: &str = "invalid_lead";
/// Not a lead status.
pub const INVALID_STATUS: &str = "invalid_status";
/// The status change is not allowed from the current status (409).
pub const INVALID_TRANSITION: &str = "invalid_transition";
/// The status changed between reading the lead and writing the change (a concurrent change
/// won); nothing was written (409).
pub const STATUS_CONFLICT: &str = "status_conflict";
/// The lead's stored status is not one this version knows; it is not changed (409).
pub const UNKNOWN_STORED_STATUS: &str = "unknown_stored_status";
/// A listing cursor that this service did not produce.
pub const INVALID_CURSOR: &str = "invalid_cursor";
/// A query parameter with a malformed or out-of-range value.
pub const INVALID_PARAMETER: &str = "invalid_parameter";
/// A query parameter this listing does not know.
pub const UNKNOWN_PARAMETER: &str = "unknown_parameter";
/// A query parameter given more than once.
pub const DUPLICATE_PARAMETER: &str = "duplicate_parameter";
/// `since` is not before `until`.
pub const INVALID_RANGE: &str = "invalid_range";
