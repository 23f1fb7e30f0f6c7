//! The lead-qualifying conversation: [`Conversation`] applies each user message and returns
//! [`Output`]s (a [`Reply`] to send, a [`LeadSubmission`] for the leads service); the
//! [`LeadDraft`] holds the details collected so far and [`LeadOutcome`] the service's answer.

use serde::{Deserialize, Serialize};

use crate::services::leads::Timeline;

use super::extract::{extract, has_phrase, phrase_text, Extracted, Slot};
use super::intent::{
    detect_intent, is_cancel, is_question, slot_named, small_talk, yes_or_no, Purpose,
};
use super::kb::{KnowledgeBase, Source};

/// Longest user message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// A qualification left untouched this long is abandoned: the next message starts afresh.
pub const QUALIFICATION_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// The `source` the glue should give leads from this bot.
pub const LEAD_SOURCE: &str = "chatbot";

/// Lead details collected so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadDraft {
    /// Name.
    pub name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Property address.
    pub address: Option<String>,
    /// Timeline.
    pub timeline: Option<Timeline>,
}

impl LeadDraft {
    fn merge(&mut self, x: &Extracted) {
        fn set<T: Clone>(slot: &mut Option<T>, v: &Option<T>) {
            if let Some(v) = v {
                *slot = Some(v.clone());
            }
        }
        set(&mut self.name, &x.name);
        set(&mut self.email, &x.email);
        set(&mut self.phone, &x.phone);
        set(&mut self.address, &x.address);
        set(&mut self.timeline, &x.timeline);
    }

    /// The first slot still empty for this purpose, in asking order.
    pub fn missing(&self, purpose: Purpose) -> Option<Slot> {
        if self.name.is_none() {
            Some(Slot::Name)
        } else if self.email.is_none() && self.phone.is_none() {
            Some(Slot::Contact)
        } else if purpose == Purpose::Contact {
            None
        } else if self.address.is_none() {
            Some(Slot::Address)
        } else if self.timeline.is_none() {
            Some(Slot::Timeline)
        } else {
            None
        }
    }

    fn first_name(&self) -> &str {
        self.name
            .as_deref()
            .and_then(|n| n.split_whitespace().next())
            .unwrap_or("")
    }
}

/// Where the conversation stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// Answering questions.
    #[default]
    Support,
    /// Collecting lead details; `asking` is the question just asked.
    Collecting {
        /// Why.
        purpose: Purpose,
        /// The slot asked for.
        asking: Slot,
    },
    /// All details in; waiting for yes or no.
    Confirming {
        /// Why.
        purpose: Purpose,
    },
    /// The user said no; waiting to hear which detail to change.
    Changing {
        /// Why.
        purpose: Purpose,
    },
    /// The lead was handed over; back to answering questions.
    Submitted,
}

/// A lead ready for the leads service (with `source` [`LEAD_SOURCE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadSubmission {
    /// Name.
    pub name: String,
    /// Email address, if given.
    pub email: Option<String>,
    /// Phone number, if given (at least one of email and phone is present).
    pub phone: Option<String>,
    /// Property address (always present for valuations).
    pub address: Option<String>,
    /// Timeline (always present for valuations).
    pub timeline: Option<Timeline>,
    /// Context for the team, e.g. the question the bot could not answer.
    pub notes: Option<String>,
}

/// A reply to show the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The text.
    pub text: String,
    /// Knowledge-base sources behind it (empty for conversational replies).
    pub sources: Vec<Source>,
}

/// What the glue must do after a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this reply.
    Reply(Reply),
    /// Hand this lead to the leads service; report back with [`Conversation::lead_result`].
    SubmitLead(LeadSubmission),
}

/// What the leads service said about a submitted lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadOutcome {
    /// Stored.
    Accepted {
        /// The lead's id, to quote to the user.
        lead_id: Option<String>,
    },
    /// Refused (e.g. its authoritative validation rejected the phone number).
    Rejected {
        /// The detail at fault, if known.
        slot: Option<Slot>,
        /// Why, safe to show the user.
        message: String,
    },
}

/// One chatbot conversation. Persist it (serde) after every call; it is small.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    mode: Mode,
    draft: LeadDraft,
    /// The last question the knowledge base could not answer, passed on with a contact lead.
    unanswered: Option<String>,
    updated_ms: u64,
}

fn say(text: impl Into<String>) -> Output {
    Output::Reply(Reply {
        text: text.into(),
        sources: Vec::new(),
    })
}

impl Conversation {
    /// A fresh conversation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the conversation stands.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Lead details collected so far.
    pub fn draft(&self) -> &LeadDraft {
        &self.draft
    }

    /// Handles one user message with the built-in knowledge base.
    pub fn apply(&mut self, user_text: &str, now_ms: u64) -> Vec<Output> {
        self.apply_with(KnowledgeBase::builtin(), user_text, now_ms)
    }

    /// Starts lead qualification explicitly (a "Book a valuation" button).
    pub fn start(&mut self, purpose: Purpose, now_ms: u64) -> Vec<Output> {
        self.updated_ms = now_ms;
        self.begin(purpose, &Extracted::default())
    }

    /// Handles one user message, answering questions from `kb`.
    pub fn apply_with(&mut self, kb: &KnowledgeBase, user_text: &str, now_ms: u64) -> Vec<Output> {
        let text: String = user_text.trim().chars().take(MAX_MESSAGE_CHARS).collect();
        let stale = now_ms.saturating_sub(self.updated_ms) > QUALIFICATION_TIMEOUT_MS;
        self.updated_ms = now_ms;
        if stale && !matches!(self.mode, Mode::Support | Mode::Submitted) {
            self.mode = Mode::Support;
            self.draft = LeadDraft::default();
        }
        match self.mode.clone() {
            Mode::Support | Mode::Submitted => self.support(kb, &text),
            _ if is_cancel(&text) => {
                self.mode = Mode::Support;
                self.draft = LeadDraft::default();
                vec![say(
                    "No problem — I won't take any details. Is there anything else I can help with?",
                )]
            }
            Mode::Collecting { purpose, asking } => self.collecting(kb, &text, purpose, asking),
            Mode::Confirming { purpose } => self.confirming(&text, purpose),
            Mode::Changing { purpose } => self.changing(&text, purpose),
        }
    }

    /// Reports the leads service's answer to [`Output::SubmitLead`].
    pub fn lead_result(&mut self, outcome: LeadOutcome, now_ms: u64) -> Vec<Output> {
        self.updated_ms = now_ms;
        match outcome {
            LeadOutcome::Accepted { lead_id } => match lead_id {
                Some(id) => vec![say(format!("All done — your reference is {id}."))],
                None => Vec::new(),
            },
            LeadOutcome::Rejected { slot, message } => {
                let asking = slot.unwrap_or(Slot::Contact);
                let purpose = if self.draft.address.is_some() {
                    Purpose::Valuation
                } else {
                    Purpose::Contact
                };
                self.mode = Mode::Collecting { purpose, asking };
                vec![say(format!(
                    "Sorry, our system couldn't accept those details: {message} {}",
                    self.question(asking)
                ))]
            }
        }
    }

    fn support(&mut self, kb: &KnowledgeBase, text: &str) -> Vec<Output> {
        if let Some(reply) = small_talk(text) {
            return vec![say(reply)];
        }
        if let Some(intent) = detect_intent(text) {
            if self.mode == Mode::Submitted {
                return vec![say(
                    "You're all set — our team already has your details and will be in touch \
                     within one working day.",
                )];
            }
            return self.begin(intent.purpose(), &extract(text, None));
        }
        let a = kb.answer(text);
        if !a.confident {
            self.unanswered = Some(text.chars().take(500).collect());
            return vec![say(a.text)];
        }
        let mut reply = a.text;
        let selling = ["selling-your-home", "valuations", "fees-and-commission"];
        if self.mode == Mode::Support && selling.contains(&a.sources[0].doc.as_str()) {
            reply.push_str(
                "\n\nIf you're thinking of selling, I can book you a free valuation — just say \
                 \"book a valuation\".",
            );
        }
        vec![Output::Reply(Reply {
            text: reply,
            sources: a.sources,
        })]
    }

    fn begin(&mut self, purpose: Purpose, x: &Extracted) -> Vec<Output> {
        self.draft = LeadDraft::default();
        self.draft.merge(x);
        let intro = match purpose {
            Purpose::Valuation => {
                "Great — I can arrange a free, no-obligation valuation with one of our valuers. \
                 I just need a few details."
            }
            Purpose::Contact => "Of course — I'll pass your details to our team.",
        };
        let next = self.next(purpose, x);
        vec![say(format!("{intro} {next}"))]
    }

    /// Moves on after new details: re-asks about a problem, asks the next missing slot, or
    /// reads everything back for confirmation.
    fn next(&mut self, purpose: Purpose, x: &Extracted) -> String {
        if let Some(p) = x.problems.first() {
            self.mode = Mode::Collecting {
                purpose,
                asking: p.slot(),
            };
            return p.message().to_string();
        }
        match self.draft.missing(purpose) {
            Some(slot) => {
                self.mode = Mode::Collecting {
                    purpose,
                    asking: slot,
                };
                self.question(slot)
            }
            None => {
                self.mode = Mode::Confirming { purpose };
                self.summary()
            }
        }
    }

    fn question(&self, slot: Slot) -> String {
        match slot {
            Slot::Name => "What's your name?".into(),
            Slot::Contact => {
                let name = self.draft.first_name();
                let thanks = if name.is_empty() {
                    "Thanks.".to_string()
                } else {
                    format!("Thanks, {name}.")
                };
                format!("{thanks} What's the best email address or phone number to reach you on?")
            }
            Slot::Address => "What's the address of the property?".into(),
            Slot::Timeline => "And when are you hoping to sell — as soon as possible, within 3, 6 \
                               or 12 months, or are you just browsing for now?"
                .into(),
        }
    }

    fn reask(&self, slot: Slot) -> String {
        match slot {
            Slot::Name => "Sorry, I didn't catch your name — what should I call you?".into(),
            Slot::Contact => "I need an email address or phone number to pass to the team — \
                              for example jane@example.com or 07700 900123."
                .into(),
            Slot::Address => "Could you give me the property's address, with the house number \
                              or name, street and town?"
                .into(),
            Slot::Timeline => "Sorry, I didn't follow — is it as soon as possible, within 3, 6 \
                               or 12 months, or just browsing?"
                .into(),
        }
    }

    fn summary(&self) -> String {
        let d = &self.draft;
        let mut lines = vec!["Let me check I've got that right:".to_string()];
        let mut line = |label: &str, v: Option<&str>| {
            if let Some(v) = v {
                lines.push(format!("• {label}: {v}"));
            }
        };
        line("Name", d.name.as_deref());
        line("Email", d.email.as_deref());
        line("Phone", d.phone.as_deref());
        line("Address", d.address.as_deref());
        line("Timeline", d.timeline.map(Timeline::label));
        lines.push("Is that all correct? (yes/no)".into());
        lines.join("\n")
    }

    fn collecting(
        &mut self,
        kb: &KnowledgeBase,
        text: &str,
        purpose: Purpose,
        asking: Slot,
    ) -> Vec<Output> {
        let x = extract(text, Some(asking));
        self.draft.merge(&x);
        if x.any() || !x.problems.is_empty() {
            return vec![say(self.next(purpose, &x))];
        }
        // Nothing usable: answer a question if it was one, then ask again.
        let words = phrase_text(text);
        if is_question(text, &words) {
            let a = kb.answer(text);
            if a.confident {
                return vec![Output::Reply(Reply {
                    text: format!("{}\n\n{}", a.text, self.question(asking)),
                    sources: a.sources,
                })];
            }
        }
        vec![say(self.reask(asking))]
    }

    fn confirming(&mut self, text: &str, purpose: Purpose) -> Vec<Output> {
        let x = extract(text, None);
        if x.any() || !x.problems.is_empty() {
            self.draft.merge(&x);
            return vec![say(self.next(purpose, &x))];
        }
        match yes_or_no(text) {
            Some(true) => self.submit(purpose),
            Some(false) => {
                self.mode = Mode::Changing { purpose };
                vec![say(
                    "No problem — what would you like to change: your name, contact details, \
                     the address or the timeline?",
                )]
            }
            None => vec![say(
                "Sorry — is everything correct? Please answer yes or no.",
            )],
        }
    }

    fn changing(&mut self, text: &str, purpose: Purpose) -> Vec<Output> {
        let x = extract(text, None);
        if x.any() || !x.problems.is_empty() {
            self.draft.merge(&x);
            return vec![say(self.next(purpose, &x))];
        }
        if let Some(slot) = slot_named(text) {
            self.mode = Mode::Collecting {
                purpose,
                asking: slot,
            };
            return vec![say(match slot {
                Slot::Name => "What should your name be?".to_string(),
                Slot::Contact => "What's the right email address or phone number?".to_string(),
                Slot::Address => "What's the correct address of the property?".to_string(),
                Slot::Timeline => self.question(Slot::Timeline),
            })];
        }
        let words = phrase_text(text);
        let nothing = [
            "nothing",
            "none",
            "no changes",
            "its fine",
            "all fine",
            "its all fine",
        ];
        if yes_or_no(text).is_some() || has_phrase(&words, &nothing) {
            self.mode = Mode::Confirming { purpose };
            return vec![say(self.summary())];
        }
        vec![say(
            "Which detail should I change — your name, contact details, the address or the \
             timeline?",
        )]
    }

    fn submit(&mut self, purpose: Purpose) -> Vec<Output> {
        let d = self.draft.clone();
        let lead = LeadSubmission {
            name: d.name.clone().unwrap_or_default(),
            email: d.email,
            phone: d.phone,
            address: d.address,
            timeline: d.timeline,
            notes: match purpose {
                Purpose::Contact => self
                    .unanswered
                    .take()
                    .map(|q| format!("Asked the chatbot: {q}")),
                Purpose::Valuation => Some("Requested a valuation through the chatbot".into()),
            },
        };
        self.mode = Mode::Submitted;
        let name = self.draft.first_name();
        let what = match purpose {
            Purpose::Valuation => "to arrange your valuation",
            Purpose::Contact => "to get back to you",
        };
        vec![
            Output::SubmitLead(lead),
            say(format!(
                "Thank you, {name} — I'm passing your details to our team now. Someone will be \
                 in touch within one working day {what}."
            )),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::chat::kb::DONT_KNOW;
    use serde_json::json;

    // --- the conversation --------------------------------------------------------------------

    const T: u64 = 1_700_000_000_000;

    fn replies(out: &[Output]) -> String {
        out.iter()
            .filter_map(|o| match o {
                Output::Reply(r) => Some(r.text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn submitted(out: &[Output]) -> Option<&LeadSubmission> {
        out.iter().find_map(|o| match o {
            Output::SubmitLead(l) => Some(l),
            _ => None,
        })
    }

    #[test]
    fn support_answers_with_sources_and_an_offer() {
        let mut c = Conversation::new();
        let out = c.apply("how much commission do you charge", T);
        let Output::Reply(r) = &out[0] else { panic!() };
        assert!(r.text.contains("1.2%"));
        assert!(r.text.contains("book a valuation"));
        assert_eq!(r.sources[0].doc, "fees-and-commission");
        assert_eq!(c.mode(), &Mode::Support);
        let out = c.apply("what time is the eclipse", T);
        assert_eq!(replies(&out), DONT_KNOW);
        assert!(replies(&c.apply("Hello!", T)).contains("What would you like to know?"));
        assert!(replies(&c.apply("thanks", T)).contains("You're welcome"));
    }

    #[test]
    fn happy_path_from_intent_to_submitted_lead() {
        let mut c = Conversation::new();
        let out = c.apply("I want to sell my house", T);
        assert!(
            replies(&out).contains("What's your name?"),
            "{}",
            replies(&out)
        );
        let out = c.apply("I'm Jane Doe", T + 1);
        assert!(replies(&out).contains("Thanks, Jane."), "{}", replies(&out));
        let out = c.apply("my email is jane@example.com", T + 2);
        assert!(replies(&out).contains("address of the property"));
        let out = c.apply("the house is at 12 High Street, Leeds", T + 3);
        assert!(replies(&out).contains("when are you hoping to sell"));
        let out = c.apply("within 3 months", T + 4);
        let summary = replies(&out);
        for s in [
            "Jane Doe",
            "jane@example.com",
            "12 High Street, Leeds",
            "within 3 months",
            "yes/no",
        ] {
            assert!(summary.contains(s), "{summary}");
        }
        assert!(matches!(c.mode(), Mode::Confirming { .. }));
        // State survives persistence mid-flow.
        let json = serde_json::to_string(&c).unwrap();
        let mut c: Conversation = serde_json::from_str(&json).unwrap();
        let out = c.apply("Yes", T + 5);
        let lead = submitted(&out).expect("lead submitted");
        assert_eq!(
            lead,
            &LeadSubmission {
                name: "Jane Doe".into(),
                email: Some("jane@example.com".into()),
                phone: None,
                address: Some("12 High Street, Leeds".into()),
                timeline: Some(Timeline::Within3Months),
                notes: Some("Requested a valuation through the chatbot".into()),
            }
        );
        assert_eq!(
            serde_json::to_value(lead).unwrap()["timeline"],
            json!("3_months")
        );
        assert!(replies(&out).contains("Thank you, Jane"));
        assert_eq!(c.mode(), &Mode::Submitted);
        let out = c.lead_result(
            LeadOutcome::Accepted {
                lead_id: Some("ld_42".into()),
            },
            T + 6,
        );
        assert!(replies(&out).contains("ld_42"));
        // Afterwards the bot answers questions again, without re-qualifying.
        let out = c.apply("I want to sell my house", T + 7);
        assert!(submitted(&out).is_none());
        assert!(replies(&out).contains("already has your details"));
        assert!(
            !replies(&c.apply("where is your Leeds office", T + 8)).contains("book a valuation")
        );
    }

    #[test]
    fn details_given_up_front_are_not_asked_again() {
        let mut c = Conversation::new();
        let out = c.apply(
            "Hi, I'm Sam Patel and I'd like to sell my flat asap. Call me on 07700 900456",
            T,
        );
        assert!(
            replies(&out).contains("address of the property"),
            "{}",
            replies(&out)
        );
        let out = c.apply("45 Park Road, York YO1 6JH", T + 1);
        let summary = replies(&out);
        assert!(
            summary.contains("Sam Patel") && summary.contains("07700900456"),
            "{summary}"
        );
        assert!(summary.contains("Timeline: now"), "{summary}");
    }

    #[test]
    fn corrections_replace_earlier_details() {
        let mut c = Conversation::new();
        c.start(Purpose::Valuation, T);
        c.apply("Jane", T);
        c.apply("jane@example.com", T);
        c.apply("12 High Street, Leeds", T);
        let out = c.apply("asap", T);
        assert!(replies(&out).contains("Name: Jane\n"));
        // A correction at the confirmation step.
        let out = c.apply("actually my name is Janet", T);
        assert!(replies(&out).contains("Name: Janet\n"), "{}", replies(&out));
        assert!(matches!(c.mode(), Mode::Confirming { .. }));
        // A correction mid-flow also works.
        let out = c.apply("oh and my email is janet@example.org", T);
        assert!(replies(&out).contains("janet@example.org"));
        let out = c.apply("yes", T);
        let lead = submitted(&out).unwrap();
        assert_eq!(lead.name, "Janet");
        assert_eq!(lead.email.as_deref(), Some("janet@example.org"));
    }

    #[test]
    fn an_invalid_email_is_asked_again() {
        let mut c = Conversation::new();
        c.apply("book a valuation", T);
        c.apply("Jane Doe", T);
        let out = c.apply("jane@example", T);
        assert!(
            replies(&out).contains("doesn't look quite right"),
            "{}",
            replies(&out)
        );
        assert_eq!(
            c.mode(),
            &Mode::Collecting {
                purpose: Purpose::Valuation,
                asking: Slot::Contact
            }
        );
        assert_eq!(c.draft().email, None);
        let out = c.apply("sorry, jane@example.com", T);
        assert!(replies(&out).contains("address of the property"));
        assert_eq!(c.draft().email.as_deref(), Some("jane@example.com"));
        // Something that is not an answer gets a hint.
        let out = c.apply("hmm", T);
        assert!(replies(&out).contains("house number"));
    }

    #[test]
    fn no_at_confirmation_lets_the_user_change_a_detail() {
        let mut c = Conversation::new();
        c.apply("I want to sell my house", T);
        c.apply("I'm Jane Doe", T);
        c.apply("07700 900123", T);
        c.apply("12 High Street, Leeds", T);
        c.apply("just browsing", T);
        let out = c.apply("no", T);
        assert!(submitted(&out).is_none());
        assert!(replies(&out).contains("what would you like to change"));
        let out = c.apply("hmm", T);
        assert!(replies(&out).contains("Which detail"));
        let out = c.apply("nothing actually", T);
        assert!(replies(&out).contains("Is that all correct?"));
        c.apply("no", T);
        let out = c.apply("the address", T);
        assert!(replies(&out).contains("correct address"));
        let out = c.apply("14 High Street, Leeds LS1 2AB", T);
        let summary = replies(&out);
        assert!(
            summary.contains("Address: 14 High Street, Leeds LS1 2AB"),
            "{summary}"
        );
        let out = c.apply("yes that's right", T);
        let lead = submitted(&out).unwrap();
        assert_eq!(
            lead.address.as_deref(),
            Some("14 High Street, Leeds LS1 2AB")
        );
        assert_eq!(lead.phone.as_deref(), Some("07700900123"));
        assert_eq!(lead.timeline, Some(Timeline::Browsing));
    }

    #[test]
    fn questions_mid_flow_are_answered_and_cancel_stops() {
        let mut c = Conversation::new();
        c.apply("I'd like a valuation", T);
        let out = c.apply("how much commission do you charge?", T);
        let text = replies(&out);
        assert!(
            text.contains("1.2%") && text.ends_with("What's your name?"),
            "{text}"
        );
        let out = c.apply("never mind", T);
        assert!(replies(&out).contains("won't take any details"));
        assert_eq!(c.mode(), &Mode::Support);
        assert_eq!(c.draft(), &LeadDraft::default());
    }

    #[test]
    fn digits_in_an_email_address_are_not_a_phone_number() {
        let mut c = Conversation::new();
        c.apply("contact me", T);
        c.apply("Jane Doe", T);
        let out = c.apply("my email is jane-1855@example.com", T);
        let text = replies(&out);
        assert!(!text.contains("too short"), "{text}");
        assert!(text.contains("Is that all correct?"), "{text}");
        let out = c.apply("yes", T);
        let lead = submitted(&out).unwrap();
        assert_eq!(lead.email.as_deref(), Some("jane-1855@example.com"));
        assert_eq!(lead.phone, None);
    }

    #[test]
    fn contact_requests_need_only_name_and_contact_and_carry_the_question() {
        let mut c = Conversation::new();
        assert_eq!(
            replies(&c.apply("do you manage holiday lets in Whitby?", T)),
            DONT_KNOW
        );
        c.apply("contact me", T);
        c.apply("Ann Lee", T);
        let out = c.apply("ann@example.com", T);
        assert!(replies(&out).contains("Is that all correct?"));
        let out = c.apply("yep", T);
        let lead = submitted(&out).unwrap();
        assert_eq!(lead.address, None);
        assert_eq!(
            lead.notes.as_deref(),
            Some("Asked the chatbot: do you manage holiday lets in Whitby?")
        );
    }

    #[test]
    fn a_rejected_lead_reopens_the_detail_and_stale_flows_expire() {
        let mut c = Conversation::new();
        c.apply("contact me", T);
        c.apply("Ann Lee", T);
        c.apply("07700 900123", T);
        c.apply("yes", T);
        let out = c.lead_result(
            LeadOutcome::Rejected {
                slot: Some(Slot::Contact),
                message: "that number is not in service.".into(),
            },
            T,
        );
        assert!(replies(&out).contains("not in service"));
        let out = c.apply("ann@example.com", T);
        assert!(replies(&out).contains("Is that all correct?"));
        // A day later the half-finished flow is dropped.
        let out = c.apply(
            "what are your opening hours",
            T + QUALIFICATION_TIMEOUT_MS + 1,
        );
        assert!(replies(&out).contains("9am"));
        assert_eq!(c.mode(), &Mode::Support);
    }
}
