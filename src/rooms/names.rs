//! Display names, one rule for every way into a room (a socket's `join`, the HTTP
//! broadcast's `name`): trimmed, 1 to `ROOM_MAX_NAME_CHARS` characters, no control characters.

/// A display name that breaks the rule; its message states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("display names are 1-{max_chars} characters without control characters")]
pub struct InvalidName {
    /// The configured maximum.
    pub max_chars: usize,
}

/// The display name to store for `raw` (trimmed), or why it is refused.
pub fn display_name(raw: &str, max_chars: usize) -> Result<String, InvalidName> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > max_chars || name.chars().any(char::is_control) {
        return Err(InvalidName { max_chars });
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(display_name("  Ada ", 8).unwrap(), "Ada");
        assert_eq!(display_name("ÅÅÅÅ", 4).unwrap(), "ÅÅÅÅ");
        assert!(display_name("ÅÅÅÅÅ", 4).is_err());
        assert!(display_name("   ", 4).is_err());
        assert!(display_name("a\u{1b}b", 8).is_err());
        assert!(display_name("a\u{7}", 8).is_err());
        assert_eq!(
            display_name("", 32).unwrap_err().to_string(),
            "display names are 1-32 characters without control characters"
        );
    }
}
