//! What a message wants: [`detect_intent`] tells a wish to sell, value, view or be contacted
//! ([`Intent`], [`Purpose`]) from a question, and the small classifiers the conversation uses
//! for yes/no answers, cancelling, small talk and naming a detail to change.

use serde::{Deserialize, Serialize};

use super::extract::{has_phrase, phrase_text, Slot};

/// Why someone wants to be contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// They want to sell or have their home valued: every slot is needed.
    Valuation,
    /// They want a person to get back to them: name and contact are enough.
    Contact,
}

/// A wish that starts lead qualification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// "I want to sell my house."
    Sell,
    /// "Can you value my flat?", "book a valuation".
    Valuation,
    /// "Contact me", "can someone call me back".
    Contact,
}

impl Intent {
    /// The reason for contact this intent implies.
    pub(super) fn purpose(self) -> Purpose {
        match self {
            Self::Sell | Self::Valuation => Purpose::Valuation,
            Self::Contact => Purpose::Contact,
        }
    }
}

/// Whether the message asks something rather than states a wish.
pub(super) fn is_question(text: &str, words: &str) -> bool {
    const OPENERS: &[&str] = &[
        "how", "what", "whats", "when", "where", "why", "who", "which", "do", "does", "is", "are",
        "will", "should", "did", "can", "could", "would", "if",
    ];
    text.trim_end().ends_with('?')
        || words
            .split_whitespace()
            .next()
            .is_some_and(|w| OPENERS.contains(&w))
}

/// Detects a wish to sell, to book a valuation or to be contacted. A question about the
/// subject ("how much do you charge for selling my flat?") is not a wish unless it is also a
/// request ("can you value my house?", "I'd like to…").
pub fn detect_intent(text: &str) -> Option<Intent> {
    let words = phrase_text(text);
    #[rustfmt::skip]
    const SELL: &[&str] = &[
        "want to sell", "like to sell", "looking to sell", "thinking of selling",
        "thinking about selling", "planning to sell", "plan to sell", "need to sell",
        "going to sell", "hoping to sell", "considering selling", "sell my", "selling my",
        "put my house on the market", "put my home on the market", "put my flat on the market",
        "put it on the market",
    ];
    const VALUATION: &[&str] = &[
        "valuation",
        "value my",
        "valued",
        "valuing my",
        "value of my",
    ];
    #[rustfmt::skip]
    const CONTACT: &[&str] = &[
        "contact me", "call me back", "call back", "callback", "get in touch", "speak to someone",
        "speak to a person", "talk to someone", "talk to a person", "speak to an agent",
        "talk to an agent", "speak to a human", "talk to a human", "ring me", "email me",
    ];
    #[rustfmt::skip]
    const REQUEST: &[&str] = &[
        "i want", "i would like", "id like", "i need", "we want", "we would like", "wed like",
        "we need", "please", "can you", "could you", "would you", "can someone", "could someone",
        "book", "arrange", "contact me", "call me", "im looking to", "were looking to",
        "im thinking", "were thinking", "im planning", "were planning",
    ];
    let intent = if has_phrase(&words, CONTACT) {
        Intent::Contact
    } else if has_phrase(&words, VALUATION) {
        Intent::Valuation
    } else if has_phrase(&words, SELL) {
        Intent::Sell
    } else {
        return None;
    };
    (!is_question(text, &words) || has_phrase(&words, REQUEST)).then_some(intent)
}

/// A yes (`Some(true)`) or no (`Some(false)`) answer, if the message is one.
pub(super) fn yes_or_no(text: &str) -> Option<bool> {
    let words = phrase_text(text);
    #[rustfmt::skip]
    const YES: &[&str] = &[
        "yes", "yeah", "yep", "yup", "y", "correct", "right", "sure", "ok", "okay", "perfect",
        "confirm", "confirmed", "absolutely", "definitely", "great", "lovely", "fine", "spot",
    ];
    const NO: &[&str] = &["no", "nope", "nah", "n", "wrong", "incorrect", "not"];
    let first = words.split_whitespace().next()?;
    if NO.contains(&first) || has_phrase(&words, &["not quite", "not right", "thats wrong"]) {
        return Some(false);
    }
    if YES.contains(&first)
        || has_phrase(
            &words,
            &[
                "thats right",
                "that is right",
                "looks good",
                "all good",
                "go ahead",
                "please do",
            ],
        )
    {
        return Some(true);
    }
    None
}

/// Whether the message asks to stop the current flow.
pub(super) fn is_cancel(text: &str) -> bool {
    let words = phrase_text(text);
    words.split_whitespace().count() <= 6
        && has_phrase(
            &words,
            &[
                "cancel",
                "stop",
                "never mind",
                "nevermind",
                "forget it",
                "no thanks",
                "no thank you",
                "leave it",
                "not now",
            ],
        )
}

/// A reply to a bare greeting or thanks, which retrieval would only fail to answer.
pub(super) fn small_talk(text: &str) -> Option<&'static str> {
    let words = phrase_text(text);
    let n = words.split_whitespace().count();
    #[rustfmt::skip]
    const GREETINGS: &[&str] = &[
        "hi", "hello", "hey", "hiya", "good morning", "good afternoon", "good evening",
    ];
    const THANKS: &[&str] = &["thanks", "thank you", "cheers", "ta"];
    if n <= 3 && has_phrase(&words, GREETINGS) {
        Some(
            "Hello! I'm the Kestrel & Lowe assistant. I can answer questions about selling, \
             valuations, fees and viewings, or book you a free valuation. What would you like \
             to know?",
        )
    } else if n <= 4 && has_phrase(&words, THANKS) {
        Some("You're welcome! Is there anything else I can help with?")
    } else {
        None
    }
}

/// The detail the message names ("the email", "my phone"), when changing one.
pub(super) fn slot_named(text: &str) -> Option<Slot> {
    let words = phrase_text(text);
    if has_phrase(&words, &["name"]) {
        Some(Slot::Name)
    } else if has_phrase(
        &words,
        &[
            "email",
            "phone",
            "number",
            "contact",
            "mobile",
            "contact details",
        ],
    ) {
        Some(Slot::Contact)
    } else if has_phrase(
        &words,
        &["address", "house", "property", "street", "postcode", "flat"],
    ) {
        Some(Slot::Address)
    } else if has_phrase(
        &words,
        &["timeline", "timing", "time", "when", "date", "months"],
    ) {
        Some(Slot::Timeline)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_are_wishes_not_questions() {
        assert_eq!(detect_intent("I want to sell my house"), Some(Intent::Sell));
        assert_eq!(
            detect_intent("We're thinking of selling our flat"),
            Some(Intent::Sell)
        );
        assert_eq!(
            detect_intent("Can you value my house?"),
            Some(Intent::Valuation)
        );
        assert_eq!(detect_intent("book a valuation"), Some(Intent::Valuation));
        assert_eq!(detect_intent("please contact me"), Some(Intent::Contact));
        assert_eq!(
            detect_intent("how much commission do you charge if I sell my house?"),
            None
        );
        assert_eq!(detect_intent("what is a mortgage valuation"), None);
        assert_eq!(detect_intent("where is your office"), None);
    }
}
