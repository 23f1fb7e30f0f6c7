//! Phone numbers: the [`COUNTRIES`] numbering table, [`Country`], and [`normalize_phone`],
//! which turns what a person typed into E.164; [`PhoneError`] says why a number was refused.

use super::codes;

/// Longest phone number as typed (with spaces and punctuation), in characters.
pub const MAX_PHONE_CHARS: usize = 32;
/// Most digits of an E.164 number, country code included (ITU-T E.164).
pub const E164_MAX_DIGITS: usize = 15;
/// Fewest digits accepted for an international number under a calling code not in
/// [`COUNTRIES`] (the shortest numbers in service, e.g. small Pacific islands, have 7).
pub const INTL_MIN_DIGITS: usize = 7;

/// Telephone numbering facts for one country.
#[derive(Debug, PartialEq, Eq)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, uppercase.
    pub iso: &'static str,
    /// ITU calling code, digits without `+`.
    pub calling_code: &'static str,
    /// National trunk prefix dialled before national numbers (`0`, or `1` in the NANP), which
    /// E.164 drops; `None` where the leading digit belongs to the number (Italy, Spain).
    pub trunk_prefix: Option<char>,
    /// The international call prefix dialled there (`00`, `011` in the NANP, `0011` in
    /// Australia); `00` is accepted everywhere as well.
    pub intl_prefix: &'static str,
    /// Digits of the national significant number (after calling code and trunk prefix):
    /// inclusive bounds.
    pub nsn_digits: (usize, usize),
}

/// The countries whose numbering this module knows. National numbers are interpreted only for
/// these; numbers under other calling codes must be sent in international form.
///
/// Lengths are those of geographic, mobile and non-geographic numbers in each national plan;
/// where a plan is variable-length (Germany, Italy) the bounds are the plan's extremes.
pub static COUNTRIES: &[Country] = &[
    Country {
        iso: "US",
        calling_code: "1",
        trunk_prefix: Some('1'),
        intl_prefix: "011",
        nsn_digits: (10, 10),
    },
    Country {
        iso: "CA",
        calling_code: "1",
        trunk_prefix: Some('1'),
        intl_prefix: "011",
        nsn_digits: (10, 10),
    },
    Country {
        iso: "GB",
        calling_code: "44",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (7, 10),
    },
    Country {
        iso: "DE",
        calling_code: "49",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (6, 13),
    },
    Country {
        iso: "FR",
        calling_code: "33",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (9, 9),
    },
    Country {
        iso: "AU",
        calling_code: "61",
        trunk_prefix: Some('0'),
        intl_prefix: "0011",
        nsn_digits: (9, 9),
    },
    Country {
        iso: "IN",
        calling_code: "91",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (10, 10),
    },
    Country {
        iso: "IE",
        calling_code: "353",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (7, 9),
    },
    Country {
        iso: "NL",
        calling_code: "31",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (9, 9),
    },
    Country {
        iso: "NZ",
        calling_code: "64",
        trunk_prefix: Some('0'),
        intl_prefix: "00",
        nsn_digits: (8, 10),
    },
    Country {
        iso: "ES",
        calling_code: "34",
        trunk_prefix: None,
        intl_prefix: "00",
        nsn_digits: (9, 9),
    },
    Country {
        iso: "IT",
        calling_code: "39",
        trunk_prefix: None,
        intl_prefix: "00",
        nsn_digits: (6, 11),
    },
];

/// A default country that is not in [`COUNTRIES`]: a configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown default country {0:?}; known: {known}", known = country_list())]
pub struct UnknownCountry(pub String);

impl UnknownCountry {
    /// Always `config_error`: the fix is in the settings, not the request.
    pub fn code(&self) -> &'static str {
        "config_error"
    }
}

fn country_list() -> String {
    let isos: Vec<&str> = COUNTRIES.iter().map(|c| c.iso).collect();
    isos.join(", ")
}

impl Country {
    /// Looks a country up by ISO code (case-insensitive, surrounding space ignored).
    pub fn from_iso(iso: &str) -> Result<&'static Country, UnknownCountry> {
        let iso = iso.trim();
        COUNTRIES
            .iter()
            .find(|c| c.iso.eq_ignore_ascii_case(iso))
            .ok_or_else(|| UnknownCountry(iso.chars().take(16).collect()))
    }

    /// The known country whose calling code starts `digits`. Calling codes form a prefix code,
    /// so at most one code matches; countries sharing one (US, CA) share its rules.
    fn by_calling_code(digits: &str) -> Option<&'static Country> {
        COUNTRIES
            .iter()
            .find(|c| digits.starts_with(c.calling_code))
    }

    fn is_nanp(&self) -> bool {
        self.calling_code == "1"
    }

    /// Checks a national significant number against this country's plan.
    fn check_nsn(&self, nsn: &str) -> Result<(), PhoneError> {
        let (min, max) = self.nsn_digits;
        let invalid = |reason| PhoneError::InvalidForCountry {
            country: self.iso,
            reason,
        };
        if nsn.len() < min || nsn.len() > max {
            return Err(invalid(if min == max {
                "wrong number of digits for this country"
            } else {
                "too few or too many digits for this country"
            }));
        }
        if self.trunk_prefix == Some('0') && nsn.starts_with('0') {
            return Err(invalid("numbers here do not start with 00"));
        }
        if self.is_nanp() {
            let b = nsn.as_bytes();
            if !(b'2'..=b'9').contains(&b[0]) || !(b'2'..=b'9').contains(&b[3]) {
                return Err(invalid("area code and exchange must not start with 0 or 1"));
            }
        }
        Ok(())
    }
}

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Longer than [`MAX_PHONE_CHARS`] as typed.
    #[error("at most {MAX_PHONE_CHARS} characters")]
    TooLong,
    /// Something other than digits, a leading `+`, spaces, `-`, `.`, `(`, `)`.
    #[error("use digits, a leading '+', spaces, '-', '.', '(' and ')' only")]
    InvalidCharacter,
    /// No digits at all.
    #[error("no digits")]
    NoDigits,
    /// An international number whose country code starts with 0.
    #[error("an international number starts with a country code (1-9)")]
    InvalidCountryCode,
    /// Fewer digits than any number in service.
    #[error("too few digits")]
    TooFewDigits,
    /// More than [`E164_MAX_DIGITS`] digits with the country code.
    #[error("more than {E164_MAX_DIGITS} digits with the country code")]
    TooManyDigits,
    /// Does not fit the numbering plan of a known country.
    #[error("not a valid {country} number: {reason}")]
    InvalidForCountry {
        /// ISO code of the country whose plan was applied.
        country: &'static str,
        /// Which rule failed.
        reason: &'static str,
    },
}

impl PhoneError {
    /// [`codes::TOO_LONG`] for over-long input, otherwise [`codes::INVALID_PHONE`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong => codes::TOO_LONG,
            _ => codes::INVALID_PHONE,
        }
    }
}

/// Normalises a phone number to E.164 (`+` and digits).
///
/// Spaces, `-`, `.`, `(` and `)` are ignored. International form is a leading `+`, or `00`,
/// or the default country's own international prefix (`011` in the NANP, `0011` in
/// Australia). Anything else is a national number of `default_country`: its trunk prefix
/// (`0`, or `1` in the NANP) is dropped and the rest checked against the country's length
/// (and, in the NANP, that area code and exchange start with 2–9). In international form, a
/// known country's rules apply too, and a trunk `0` after the country code — the common
/// `+44 (0)20 …` notation — is dropped; under a calling code not in [`COUNTRIES`] only the
/// E.164 bounds ([`INTL_MIN_DIGITS`]–[`E164_MAX_DIGITS`]) are checked.
pub fn normalize_phone(raw: &str, default_country: &Country) -> Result<String, PhoneError> {
    let s = raw.trim();
    if s.chars().count() > MAX_PHONE_CHARS {
        return Err(PhoneError::TooLong);
    }
    let (plus, rest) = match s.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(PhoneError::InvalidCharacter),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::NoDigits);
    }
    let international = if plus {
        Some(digits.as_str())
    } else {
        digits
            .strip_prefix(default_country.intl_prefix)
            .or_else(|| digits.strip_prefix("00"))
    };
    match international {
        Some(d) => international_number(d),
        None => {
            let nsn = match default_country.trunk_prefix {
                Some(t) => digits.strip_prefix(t).unwrap_or(&digits),
                None => &digits,
            };
            e164(default_country, nsn)
        }
    }
}

fn international_number(d: &str) -> Result<String, PhoneError> {
    if d.is_empty() {
        return Err(PhoneError::NoDigits);
    }
    if d.starts_with('0') {
        return Err(PhoneError::InvalidCountryCode);
    }
    match Country::by_calling_code(d) {
        Some(country) => {
            let nsn = &d[country.calling_code.len()..];
            let nsn = match country.trunk_prefix {
                Some('0') => nsn.strip_prefix('0').unwrap_or(nsn),
                _ => nsn,
            };
            e164(country, nsn)
        }
        None if d.len() > E164_MAX_DIGITS => Err(PhoneError::TooManyDigits),
        None if d.len() < INTL_MIN_DIGITS => Err(PhoneError::TooFewDigits),
        None => Ok(format!("+{d}")),
    }
}

fn e164(country: &Country, nsn: &str) -> Result<String, PhoneError> {
    if country.calling_code.len() + nsn.len() > E164_MAX_DIGITS {
        return Err(PhoneError::TooManyDigits);
    }
    country.check_nsn(nsn)?;
    Ok(format!("+{}{nsn}", country.calling_code))
}
