//! Display names, one rule for every way into a room (a socket's `join`, the HTTP
//! broadcast's `name`): trimmed, 1 to `ROOM_MAX_NAME_CHARS` characters, no control characters
//! and no invisible format characters (bidi overrides, zero-width characters: [`FORMAT`]).

/// A display name that breaks the rule; its message states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "display names are 1-{max_chars} characters without control or invisible format characters"
)]
pub struct InvalidName {
    /// The configured maximum.
    pub max_chars: usize,
}

/// Unicode general category Cf (format characters), as inclusive ranges: invisible characters
/// that reorder or hide text, e.g. U+202E RIGHT-TO-LEFT OVERRIDE turns `admin\u{202e}gnp.exe`
/// into what reads as "adminexe.png". Listed explicitly (Unicode 15.1) rather than pulling in
/// a Unicode tables crate; U+2065, unassigned between two Cf runs, is refused with them.
pub const FORMAT: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{0600}', '\u{0605}'),   // Arabic number signs
    ('\u{061C}', '\u{061C}'),   // Arabic letter mark
    ('\u{06DD}', '\u{06DD}'),   // Arabic end of ayah
    ('\u{070F}', '\u{070F}'),   // Syriac abbreviation mark
    ('\u{0890}', '\u{0891}'),   // Arabic pound / piastre mark above
    ('\u{08E2}', '\u{08E2}'),   // Arabic disputed end of ayah
    ('\u{180E}', '\u{180E}'),   // Mongolian vowel separator
    ('\u{200B}', '\u{200F}'),   // zero-width space, (non-)joiner, LRM, RLM
    ('\u{202A}', '\u{202E}'),   // bidi embeddings and overrides
    ('\u{2060}', '\u{206F}'),   // word joiner, invisible operators, bidi isolates, deprecated
    ('\u{FEFF}', '\u{FEFF}'),   // zero-width no-break space (BOM)
    ('\u{FFF9}', '\u{FFFB}'),   // interlinear annotation
    ('\u{110BD}', '\u{110BD}'), // Kaithi number sign
    ('\u{110CD}', '\u{110CD}'), // Kaithi number sign above
    ('\u{13430}', '\u{1343F}'), // Egyptian hieroglyph format controls
    ('\u{1BCA0}', '\u{1BCA3}'), // shorthand format controls
    ('\u{1D173}', '\u{1D17A}'), // musical symbol format controls
    ('\u{E0001}', '\u{E0001}'), // language tag
    ('\u{E0020}', '\u{E007F}'), // tag characters
];

/// Whether `c` is an invisible format character ([`FORMAT`]).
pub fn is_format(c: char) -> bool {
    FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// The display name to store for `raw` (trimmed), or why it is refused.
pub fn display_name(raw: &str, max_chars: usize) -> Result<String, InvalidName> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > max_chars || name.chars().any(|c| c.is_control() || is_format(c)) {
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
            "display names are 1-32 characters without control or invisible format characters"
        );
    }

    #[test]
    fn invisible_format_characters_are_refused() {
        // Seen live: a right-to-left override makes `admin\u{202e}gnp.exe` read "adminexe.png".
        assert!(display_name("admin\u{202e}gnp.exe", 32).is_err());
        for c in [
            '\u{00AD}',
            '\u{061C}',
            '\u{180E}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2060}',
            '\u{2061}',
            '\u{2062}',
            '\u{2063}',
            '\u{2064}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{206A}',
            '\u{206F}',
            '\u{FEFF}',
            '\u{FFF9}',
            '\u{FFFB}',
            '\u{110BD}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
        ] {
            assert!(
                display_name(&format!("a{c}b"), 32).is_err(),
                "{:04X}",
                c as u32
            );
            // Trimming does not take them off the ends either.
            assert!(
                display_name(&format!("{c}ab"), 32).is_err(),
                "{:04X}",
                c as u32
            );
        }
        assert_eq!(
            display_name("a\u{202e}b", 32).unwrap_err().to_string(),
            "display names are 1-32 characters without control or invisible format characters"
        );
        // Visible neighbours of those ranges stay allowed.
        for ok in [
            "Zoë",
            "日本語",
            "a\u{2010}b",
            "\u{05D0}\u{05D1}",
            "x\u{1F600}",
        ] {
            assert_eq!(display_name(ok, 32).unwrap(), ok);
        }
    }
}
