//! Slot extraction from free text: [`extract`] finds a name, email address, phone number,
//! postal address and moving timeline in a message and reports which were given but invalid
//! ([`Extracted`], [`Slot`], [`Problem`]).

use serde::{Deserialize, Serialize};

use crate::services::leads::{normalize_email, Timeline};

/// A piece of lead information the bot asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// The person's name.
    Name,
    /// An email address or phone number.
    Contact,
    /// The property's address.
    Address,
    /// When they want to sell.
    Timeline,
}

/// Why a value the user gave could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Has an `@` but is not shaped like an email address.
    BadEmail,
    /// A phone number with too few digits.
    PhoneTooShort,
    /// A phone number with more digits than E.164 allows.
    PhoneTooLong,
}

impl Problem {
    /// The slot the problem is in.
    pub fn slot(self) -> Slot {
        Slot::Contact
    }

    /// What the bot says when this detail was given but invalid.
    pub(super) fn message(self) -> &'static str {
        match self {
            Self::BadEmail => {
                "That email address doesn't look quite right — it should look like \
                 name@example.com. Could you check it?"
            }
            Self::PhoneTooShort => {
                "That phone number looks too short — could you give me the full number, \
                 including the area code?"
            }
            Self::PhoneTooLong => "That phone number has too many digits — could you check it?",
        }
    }
}

/// What a message said about the lead slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// A name, title-cased when typed all in one case.
    pub name: Option<String>,
    /// An email address, lowercased.
    pub email: Option<String>,
    /// A phone number as digits, with a leading `+` if given.
    pub phone: Option<String>,
    /// A property address.
    pub address: Option<String>,
    /// A timeline, mapped to the leads service's set.
    pub timeline: Option<Timeline>,
    /// Values given but unusable.
    pub problems: Vec<Problem>,
}

impl Extracted {
    /// Whether anything usable was found.
    pub fn any(&self) -> bool {
        self.name.is_some()
            || self.email.is_some()
            || self.phone.is_some()
            || self.address.is_some()
            || self.timeline.is_some()
    }
}

/// ASCII-lowercases and straightens apostrophes, keeping byte offsets aligned with the
/// original so a cue found in the copy can slice the original.
fn fold(text: &str) -> (String, String) {
    let original = text.replace(['\u{2019}', '\u{2018}'], "'");
    let lower = original.to_ascii_lowercase();
    (original, lower)
}

/// Words of a text for phrase matching: lowercase, apostrophes removed, other punctuation
/// as separators, joined by single spaces and padded with spaces at both ends.
pub(super) fn phrase_text(text: &str) -> String {
    let cleaned: String = text
        .to_lowercase()
        .chars()
        .filter(|c| *c != '\'' && *c != '\u{2019}')
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    format!(
        " {} ",
        cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// Whether `words` (as from [`phrase_text`]) contains one of `phrases` as whole words.
pub(super) fn has_phrase(words: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|p| words.contains(&format!(" {p} ")))
}

/// Words that follow "I'm" or "this is" without being a name.
#[rustfmt::skip]
const NOT_NAMES: &[&str] = &[
    "a", "about", "after", "afraid", "also", "an", "and", "at", "available", "away", "back",
    "based", "busy", "buying", "calling", "considering", "curious", "currently", "downsizing",
    "fine", "free", "from", "getting", "glad", "going", "good", "great", "happy", "here", "hoping",
    "in", "interested", "just", "keen", "living", "looking", "moving", "new", "no", "not", "ok",
    "okay", "on", "only", "planning", "ready", "really", "relocating", "renting", "retiring",
    "selling", "so", "sorry", "still", "sure", "the", "there", "thinking", "trying", "unsure",
    "very", "well", "wondering", "with", "yes", "yeah", "emailing", "writing", "asking", "my",
    "your", "our", "it", "that", "this", "is", "hi", "hello", "hey", "thanks", "thank", "please",
    "call", "email", "phone", "number", "me", "i", "we", "you", "but", "or", "by", "for", "of",
    "to", "when", "what", "how", "as",
];

fn name_word(w: &str) -> Option<&str> {
    let w = w.trim_end_matches([',', '.', '!', '?', ';', ':']);
    let ok = !w.is_empty()
        && w.chars().any(char::is_alphabetic)
        && w.chars()
            .all(|c| c.is_alphabetic() || c == '-' || c == '\'')
        && !NOT_NAMES.contains(&w.to_lowercase().as_str());
    ok.then_some(w)
}

/// Up to four name words from the start of `rest`, stopping at the first word that is not
/// one or after a word followed by punctuation.
fn name_words(rest: &str) -> Option<String> {
    let mut words = Vec::new();
    for raw in rest.split_whitespace().take(4) {
        let Some(w) = name_word(raw) else { break };
        words.push(w);
        if raw.len() != w.len() {
            break; // punctuation ends the name
        }
    }
    if words.is_empty() {
        return None;
    }
    let name = words.join(" ");
    (2..=80)
        .contains(&name.chars().count())
        .then(|| tidy_name(&name))
}

/// Title-cases a name typed all in lower (or upper) case; keeps deliberate casing (McDonald).
fn tidy_name(name: &str) -> String {
    let letters: Vec<char> = name.chars().filter(|c| c.is_alphabetic()).collect();
    let one_case =
        letters.iter().all(|c| c.is_lowercase()) || letters.iter().all(|c| c.is_uppercase());
    if !one_case {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut start = true;
    for c in name.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = matches!(c, ' ' | '-' | '\'');
    }
    out
}

fn at_word_start(lower: &str, i: usize) -> bool {
    i == 0
        || !lower[..i]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
}

/// Every position where `cue` occurs at a word start, as the offset just after it.
fn cue_ends<'a>(lower: &'a str, cue: &'a str) -> impl Iterator<Item = usize> + 'a {
    lower
        .match_indices(cue)
        .filter(move |(i, _)| at_word_start(lower, *i))
        .map(move |(i, _)| i + cue.len())
}

fn extract_name(original: &str, lower: &str, asking: Option<Slot>) -> Option<String> {
    const STRONG: &[&str] = &["my name is ", "my name's ", "name is ", "name's ", "name: "];
    const WEAK: &[&str] = &[
        "i'm ", "i am ", "im ", "this is ", "it's ", "its ", "call me ",
    ];
    let asking_name = asking == Some(Slot::Name);
    let mut found: Option<(usize, String)> = None;
    for (cues, strong) in [(STRONG, true), (WEAK, false)] {
        for cue in cues {
            for end in cue_ends(lower, cue) {
                let rest = &original[end..];
                // After a weak cue, only a capitalised word (or any word when the question was
                // "what's your name?") is taken as a name: "I'm thinking of selling" is not.
                let capitalised = rest.chars().next().is_some_and(char::is_uppercase);
                if !strong && !capitalised && !asking_name {
                    continue;
                }
                if !strong
                    && (*cue == "it's " || *cue == "its " || *cue == "call me ")
                    && !asking_name
                {
                    continue;
                }
                if let Some(name) = name_words(rest) {
                    if found.as_ref().is_none_or(|(at, _)| end > *at) {
                        found = Some((end, name));
                    }
                }
            }
        }
    }
    if found.is_none() && asking_name {
        // A bare answer to "what's your name?": one to four name words and nothing else.
        let bare = original
            .trim()
            .trim_end_matches(['.', '!'])
            .trim_start_matches(|c: char| !c.is_alphabetic());
        let words: Vec<&str> = bare.split_whitespace().collect();
        if (1..=4).contains(&words.len())
            && !original.chars().any(|c| c.is_ascii_digit())
            && words.iter().all(|w| name_word(w) == Some(*w))
        {
            return name_words(bare);
        }
    }
    found.map(|(_, n)| n)
}

/// The email address in `original`, if one is valid; a token with an `@` that the leads
/// service would refuse records [`Problem::BadEmail`] (when no valid one is given). Validity is
/// exactly [`normalize_email`]'s, the check the leads service applies again when storing.
fn extract_email(original: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let mut email = None;
    let mut bad = false;
    for raw in original.split_whitespace() {
        let w = raw
            .trim_matches(|c: char| ",;:!?()<>[]\"'".contains(c))
            .trim_end_matches('.');
        if !w.contains('@') {
            continue;
        }
        match normalize_email(w) {
            // The leads normalisation lowercases only the domain; this extractor has always
            // lowercased the local part too (pinned by the test
            // `emails_and_phones_are_extracted_and_checked`).
            Ok(normalized) => email = Some(normalized.to_ascii_lowercase()),
            Err(_) => bad = true,
        }
    }
    if email.is_none() && bad {
        problems.push(Problem::BadEmail);
    }
    email
}

fn extract_phone(
    original: &str,
    words: &str,
    asking: Option<Slot>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    #[rustfmt::skip]
    const CUES: &[&str] = &[
        "phone", "call", "ring", "mobile", "number", "tel", "telephone", "text", "whatsapp",
    ];
    let cued = asking == Some(Slot::Contact) || has_phrase(words, CUES);
    let mut phone = None;
    let mut problem = None;
    // Digits inside an email address (`jane-1855@example.com`) are not a phone number.
    let chars: Vec<char> = original
        .split_inclusive(char::is_whitespace)
        .flat_map(|w| {
            let masked = w.contains('@');
            w.chars()
                .map(move |c| if masked && !c.is_whitespace() { ' ' } else { c })
        })
        .collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !(c.is_ascii_digit() || (c == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            || (i > 0 && chars[i - 1].is_alphanumeric())
        {
            i += 1;
            continue;
        }
        let mut run = String::new();
        while i < chars.len() && (chars[i].is_ascii_digit() || " -()+".contains(chars[i])) {
            if chars[i] == '+' && !run.is_empty() {
                break;
            }
            run.push(chars[i]);
            i += 1;
        }
        while run.ends_with(' ') {
            run.pop();
            i -= 1;
        }
        // A run glued to letters is part of a word or postcode (LS1), not a number.
        if i < chars.len() && chars[i].is_alphabetic() {
            continue;
        }
        let digits: String = run.chars().filter(char::is_ascii_digit).collect();
        match digits.len() {
            10..=15 => {
                let plus = if run.starts_with('+') { "+" } else { "" };
                phone = Some(format!("{plus}{digits}"));
            }
            4..=9 if cued => problem = Some(Problem::PhoneTooShort),
            n if n > 15 && cued => problem = Some(Problem::PhoneTooLong),
            _ => {}
        }
    }
    if phone.is_none() {
        problems.extend(problem);
    }
    phone
}

#[rustfmt::skip]
const STREET_WORDS: &[&str] = &[
    "street", "st", "road", "rd", "avenue", "ave", "lane", "ln", "drive", "dr", "close", "way",
    "court", "crescent", "place", "terrace", "gardens", "grove", "hill", "row", "square", "mews",
    "walk", "park", "view", "rise", "parade", "green", "fold", "croft", "garth", "gate", "wharf",
    "yard", "villas", "cottages", "cottage", "farm", "lodge", "manor", "flat", "apartment",
    "boulevard", "wynd", "chase", "meadow", "meadows", "bank", "top",
];

/// A UK postcode such as `LS1 5HD` among the words.
fn has_postcode(text: &str) -> bool {
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let outward = |w: &str| {
        let b = w.as_bytes();
        (2..=4).contains(&b.len())
            && b[0].is_ascii_alphabetic()
            && b.iter().any(u8::is_ascii_digit)
            && b.iter().all(u8::is_ascii_alphanumeric)
    };
    let inward = |w: &str| {
        let b = w.as_bytes();
        b.len() == 3
            && b[0].is_ascii_digit()
            && b[1].is_ascii_alphabetic()
            && b[2].is_ascii_alphabetic()
    };
    words.windows(2).any(|p| outward(&p[0]) && inward(&p[1]))
}

/// Whether text is shaped like a property address: a house number with a street-like word,
/// a street word, or a postcode; 5–300 characters; no email address.
fn address_like(text: &str) -> bool {
    let len = text.chars().count();
    if !(5..=300).contains(&len) || text.contains('@') {
        return false;
    }
    let words = phrase_text(text);
    let has_number = text.chars().any(|c| c.is_ascii_digit());
    let has_word = text
        .split(|c: char| !c.is_alphabetic())
        .any(|w| w.chars().count() >= 3);
    has_postcode(text) || has_phrase(&words, STREET_WORDS) || (has_number && has_word && len >= 8)
}

/// The address part of `rest`: up to the end of the sentence or the start of another topic.
fn address_span(rest: &str) -> &str {
    #[rustfmt::skip]
    const STOPS: &[&str] = &[
        "! ", "? ", ";", "\n", " and my ", " and i ", " and i'm ", " and we ", " and it ",
        " and the ", ", my ", " my email", " my phone", " my number", " email ", " phone ",
        " within ", " asap", " as soon", " in the next", " but ", " - my ", ", and ",
    ];
    let lower = rest.to_ascii_lowercase();
    let mut end = rest.len();
    for s in STOPS {
        if let Some(i) = lower.find(s) {
            end = end.min(i);
        }
    }
    // A full stop ends the address unless it closes an abbreviation ("St. John's Road").
    let mut from = 0;
    while let Some(i) = lower[from..end].find(". ").map(|i| i + from) {
        let before = lower[..i].rsplit(' ').next().unwrap_or("");
        if ["st", "rd", "no", "ave", "dr", "mt"].contains(&before) {
            from = i + 2;
            continue;
        }
        end = i;
        break;
    }
    rest[..end]
        .trim()
        .trim_end_matches(['.', ',', '!', '?'])
        .trim()
}

fn extract_address(original: &str, lower: &str, asking: Option<Slot>) -> Option<String> {
    #[rustfmt::skip]
    const CUES: &[&str] = &[
        "address is ", "address's ", "address: ", "live at ", "living at ", "located at ",
        "house is at ", "home is at ", "flat is at ", "property is at ", "it's at ", "its at ",
        "it is at ", "house at ", "home at ", "flat at ", "property at ", "apartment at ",
        "bungalow at ", "cottage at ", "is at ",
    ];
    let mut found: Option<(usize, String)> = None;
    for cue in CUES {
        for end in cue_ends(lower, cue) {
            let span = address_span(&original[end..]);
            if address_like(span) && found.as_ref().is_none_or(|(at, _)| end > *at) {
                found = Some((end, span.to_string()));
            }
        }
    }
    if found.is_none() && asking == Some(Slot::Address) {
        let mut t = original.trim();
        for prefix in [
            "it's ",
            "it is ",
            "its ",
            "at ",
            "the address is ",
            "address ",
        ] {
            if t.to_ascii_lowercase().starts_with(prefix) {
                t = &t[prefix.len()..];
            }
        }
        let span = address_span(t);
        // A bare answer may also be a house name and a town: "The Old Barn, Haxby".
        let named = span
            .split(',')
            .filter(|p| p.chars().any(char::is_alphabetic))
            .count()
            >= 2
            && span.chars().count() >= 8;
        if (address_like(span) || named) && !span.contains('@') {
            return Some(span.to_string());
        }
    }
    found.map(|(_, a)| a)
}

fn number_word(w: &str) -> Option<u32> {
    if let Ok(n) = w.parse::<u32>() {
        return Some(n);
    }
    Some(match w {
        "a" | "an" | "one" => 1,
        "two" | "couple" => 2,
        "three" | "few" => 3,
        "four" => 4,
        "five" => 5,
        "six" | "several" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "eighteen" => 18,
        "eighteenth" => 18,
        "twenty" => 20,
        "24" => 24,
        _ => return None,
    })
}

/// Maps "within N weeks/months/years" onto the leads service's timelines.
fn timeline_for_months(months: u32) -> Timeline {
    match months {
        0..=1 => Timeline::Now,
        2..=3 => Timeline::Within3Months,
        4..=6 => Timeline::Within6Months,
        7..=12 => Timeline::Within12Months,
        _ => Timeline::Browsing,
    }
}

fn extract_timeline(words: &str) -> Option<Timeline> {
    if has_phrase(words, &["half a year"]) {
        return Some(Timeline::Within6Months);
    }
    if has_phrase(
        words,
        &["this month", "next month", "a few weeks", "next few weeks"],
    ) {
        return Some(Timeline::Now);
    }
    if has_phrase(
        words,
        &["next year", "within a year", "in a year", "a years time"],
    ) {
        return Some(Timeline::Within12Months);
    }
    if has_phrase(
        words,
        &[
            "this year",
            "later this year",
            "end of the year",
            "end of year",
        ],
    ) {
        return Some(Timeline::Within6Months);
    }
    let tokens: Vec<&str> = words.split_whitespace().collect();
    for (i, t) in tokens.iter().enumerate() {
        let unit = match *t {
            "week" | "weeks" | "wks" => 0,
            "month" | "months" | "mths" => 1,
            "year" | "years" | "yrs" => 12,
            _ => continue,
        };
        let mut j = i;
        let n = loop {
            if j == 0 {
                break None;
            }
            j -= 1;
            match tokens[j] {
                "of" | "or" | "so" | "next" | "the" => continue,
                w => break number_word(w),
            }
        };
        let Some(n) = n else { continue };
        let months = if unit == 0 { n.div_ceil(4) } else { n * unit };
        return Some(timeline_for_months(months));
    }
    #[rustfmt::skip]
    const BROWSING: &[&str] = &[
        "just browsing", "browsing", "just looking", "just curious", "curious", "not sure",
        "unsure", "no rush", "no plans", "dont know", "no timeline", "undecided", "no hurry",
        "not in a hurry", "not yet", "at some point", "one day", "eventually", "no idea",
    ];
    if has_phrase(words, BROWSING) {
        return Some(Timeline::Browsing);
    }
    #[rustfmt::skip]
    const NOW: &[&str] = &[
        "asap", "a s a p", "as soon as possible", "as soon as", "right away", "straight away",
        "immediately", "urgent", "urgently", "right now", "now", "quickly", "straightaway",
    ];
    has_phrase(words, NOW).then_some(Timeline::Now)
}

/// Reads lead details out of a message. `asking` is the slot the bot just asked for: it
/// lets a bare answer count ("Jane Doe", "12 High Street, Leeds", an unlabelled number) and
/// lets weak cues count ("it's Jane").
pub fn extract(text: &str, asking: Option<Slot>) -> Extracted {
    let (original, lower) = fold(text);
    let words = phrase_text(&original);
    let mut problems = Vec::new();
    let email = extract_email(&original, &mut problems);
    let phone = extract_phone(&original, &words, asking, &mut problems);
    let address = extract_address(&original, &lower, asking);
    // A name is never read out of the address or email just found.
    let name = extract_name(&original, &lower, asking).filter(|n| {
        !address.as_deref().is_some_and(|a| a.contains(n.as_str()))
            && email
                .as_deref()
                .is_none_or(|e| !e.contains(&n.to_lowercase()))
    });
    Extracted {
        name,
        email,
        phone,
        address,
        timeline: extract_timeline(&words),
        problems,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    // --- extraction --------------------------------------------------------------------------

    #[test]
    fn names_are_extracted_from_cues_and_bare_answers() {
        let name = |t: &str, a: Option<Slot>| extract(t, a).name;
        assert_eq!(name("I'm Jane Doe", None).as_deref(), Some("Jane Doe"));
        assert_eq!(
            name("Hi, I’m Jane Doe and I want to sell", None).as_deref(),
            Some("Jane Doe")
        );
        assert_eq!(
            name("my name is jane o'neil", None).as_deref(),
            Some("Jane O'Neil")
        );
        assert_eq!(
            name("Name: Ravi McDonald", None).as_deref(),
            Some("Ravi McDonald")
        );
        assert_eq!(
            name("actually my name is Janet", None).as_deref(),
            Some("Janet")
        );
        assert_eq!(
            name("I'm Jane, sorry, my name is Janet", None).as_deref(),
            Some("Janet")
        );
        assert_eq!(name("I'm thinking of selling", None), None);
        assert_eq!(name("i'm looking to sell", Some(Slot::Name)), None);
        assert_eq!(name("I am interested in a valuation", None), None);
        assert_eq!(
            name("jane doe", Some(Slot::Name)).as_deref(),
            Some("Jane Doe")
        );
        assert_eq!(
            name("it's Priya", Some(Slot::Name)).as_deref(),
            Some("Priya")
        );
        assert_eq!(name("jane doe", None), None);
        assert_eq!(name("12 High Street", Some(Slot::Name)), None);
        assert_eq!(name("why do you need that?", Some(Slot::Name)), None);
    }

    /// The extractor accepts exactly the addresses the leads service stores, and refuses the
    /// rest with [`Problem::BadEmail`]; the expected verdicts pin the rules themselves.
    #[test]
    fn email_verdicts_agree_with_the_leads_service() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("jane@{}.com", "d".repeat(250));
        let cases: &[(&str, bool)] = &[
            ("jane@example.com", true),
            ("Jane.Doe@Example.COM", true),
            ("o'neil+tag@example.ie", true),
            ("jane-1855@mail.example.co.uk", true),
            ("a@b.co", true),
            ("a@b.c", true),
            ("user_name%x@host-name.org", true),
            ("jo!e#x@example.com", true),
            ("josé@example.com", true),
            ("jane@exämple.de", true),
            ("jane@example", false),
            ("jane@@example.com", false),
            ("@example.com", false),
            ("jane@", false),
            (".jane@example.com", false),
            ("jane.@example.com", false),
            ("ja..ne@example.com", false),
            ("ja(ne@example.com", false),
            ("jane@-example.com", false),
            ("jane@example-.com", false),
            ("jane@exa_mple.com", false),
            ("jane@example..com", false),
            ("jane@192.168.0.1", false),
            (&long_local, false),
            (&long_total, false),
        ];
        for &(addr, valid) in cases {
            let leads = normalize_email(addr);
            assert_eq!(leads.is_ok(), valid, "leads verdict on {addr:?}: {leads:?}");
            let x = extract(&format!("my email is {addr}"), None);
            assert_eq!(x.email.is_some(), valid, "chat verdict on {addr:?}: {x:?}");
            assert_eq!(
                x.problems.contains(&Problem::BadEmail),
                !valid,
                "chat problems for {addr:?}: {x:?}"
            );
            assert_eq!(
                x.email,
                leads.ok().map(|e| e.to_ascii_lowercase()),
                "chat and leads normalise {addr:?} alike (but for the local part's case)"
            );
        }
    }

    #[test]
    fn emails_and_phones_are_extracted_and_checked() {
        let x = extract("my email is Jane.Doe@Example.com.", None);
        assert_eq!(x.email.as_deref(), Some("jane.doe@example.com"));
        assert!(x.problems.is_empty());
        let x = extract("my email is jane@example", None);
        assert_eq!(x.email, None);
        assert_eq!(x.problems, vec![Problem::BadEmail]);
        assert_eq!(
            extract("jane@@example.com", None).problems,
            vec![Problem::BadEmail]
        );
        let x = extract("call me on 07700 900123", None);
        assert_eq!(x.phone.as_deref(), Some("07700900123"));
        assert_eq!(x.name, None);
        assert_eq!(
            extract("+44 (0)7700-900123 is my mobile", None)
                .phone
                .as_deref(),
            Some("+4407700900123")
        );
        assert_eq!(
            extract("call me on 0770", None).problems,
            vec![Problem::PhoneTooShort]
        );
        // Numbers that are not phone numbers are left alone.
        let x = extract(
            "the house is at 12 High Street, Leeds LS1 5HD within 3 months",
            None,
        );
        assert_eq!((x.phone, x.problems.len()), (None, 0));
    }

    #[test]
    fn addresses_are_extracted() {
        let addr = |t: &str, a: Option<Slot>| extract(t, a).address;
        assert_eq!(
            addr("the house is at 12 High Street, Leeds", None).as_deref(),
            Some("12 High Street, Leeds")
        );
        assert_eq!(
            addr(
                "It's at Flat 3, 45 Park Road, York YO1 6JH and my email is a@b.co",
                None
            )
            .as_deref(),
            Some("Flat 3, 45 Park Road, York YO1 6JH")
        );
        assert_eq!(
            addr("we live at 7 St. John's Road, Harrogate. It's lovely", None).as_deref(),
            Some("7 St. John's Road, Harrogate")
        );
        assert_eq!(
            addr("Rose Cottage, Main Street, Haxby", Some(Slot::Address)).as_deref(),
            Some("Rose Cottage, Main Street, Haxby")
        );
        assert_eq!(
            addr("The Old Barn, Haxby", Some(Slot::Address)).as_deref(),
            Some("The Old Barn, Haxby")
        );
        assert_eq!(addr("Leeds", Some(Slot::Address)), None);
        assert_eq!(addr("I'm at work today", None), None);
        assert_eq!(addr("no idea", Some(Slot::Address)), None);
    }

    #[test]
    fn timelines_map_to_the_leads_service_set() {
        let t = |s: &str| {
            extract(s, Some(Slot::Timeline))
                .timeline
                .map(Timeline::as_str)
        };
        assert_eq!(t("within 3 months"), Some("3_months"));
        assert_eq!(t("asap"), Some("now"));
        assert_eq!(t("As soon as possible please"), Some("now"));
        assert_eq!(t("just browsing"), Some("browsing"));
        assert_eq!(t("in six months or so"), Some("6_months"));
        assert_eq!(t("in a couple of months"), Some("3_months"));
        assert_eq!(t("next year"), Some("12_months"));
        assert_eq!(t("6-12 months"), Some("12_months"));
        assert_eq!(t("a few weeks"), Some("now"));
        assert_eq!(t("in 2 years"), Some("browsing"));
        assert_eq!(t("not sure yet"), Some("browsing"));
        assert_eq!(t("I don't know"), Some("browsing"));
        assert_eq!(t("whenever the price is right"), None);
    }
}
