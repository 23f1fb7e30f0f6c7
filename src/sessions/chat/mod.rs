//! The chatbot's pure core: support answers from a knowledge base, and lead qualification.
//!
//! The `Bot` Durable Object holds one conversation. It hands each user message to
//! [`Conversation::apply`] and performs what comes back: [`Output::Reply`] becomes chat
//! frames ([`reply_frames`]), [`Output::SubmitLead`] goes to the leads service, whose answer
//! comes back through [`Conversation::lead_result`]. The conversation is serializable, so the
//! object persists it after every message and a restarted object carries on mid-question.
//!
//! # Why retrieval and not generation
//!
//! The built-in provider must only say what it truly knows. Answers are therefore passages of
//! the agency's own guides (`kb/*.md`, embedded at compile time), ranked by BM25, with their
//! sources; when nothing ranks above [`MIN_SCORE`] the bot says plainly that it does not know
//! and offers to take contact details instead of guessing.
//!
//! # Layout
//!
//! - Knowledge base: [`KB_DOCS`], [`passages`], [`tokenize`], [`KnowledgeBase`] (BM25 with
//!   [`BM25_K1`] and [`BM25_B`]), [`answer`] → [`Answer`].
//! - Slot extraction from free text: [`extract`] → [`Extracted`] (name, email, phone,
//!   address, timeline, and which of them were given but invalid); [`detect_intent`].
//! - The conversation: [`Conversation`], [`Output`], [`LeadSubmission`], [`LeadOutcome`].
//! - Wire format: [`ClientFrame`], [`ServerFrame`], [`decode_chat`], [`ChatError`].

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::rooms::protocol::FrameError;
use crate::services::leads::Timeline;
use crate::sessions::voice::decode_json_frame;

/// The knowledge base shipped with the service: `(doc id, markdown)`. Each document has a
/// `# Title` first line and `## ` sections; sections are what retrieval ranks.
pub const KB_DOCS: &[(&str, &str)] = &[
    (
        "selling-your-home",
        include_str!("../../../kb/selling-your-home.md"),
    ),
    ("valuations", include_str!("../../../kb/valuations.md")),
    (
        "fees-and-commission",
        include_str!("../../../kb/fees-and-commission.md"),
    ),
    ("viewings", include_str!("../../../kb/viewings.md")),
    (
        "roomkeeper-support",
        include_str!("../../../kb/roomkeeper-support.md"),
    ),
    (
        "contact-and-offices",
        include_str!("../../../kb/contact-and-offices.md"),
    ),
];

/// BM25 term-frequency saturation.
pub const BM25_K1: f64 = 1.2;
/// BM25 length normalisation.
pub const BM25_B: f64 = 0.75;
/// The best passage must score at least this for an answer to count as known. One
/// distinctive query word matching a passage scores about 2.5–4 on the shipped knowledge
/// base, a question matching a section well 5–11, a word found in many passages under 2,
/// unrelated questions 0. The tests pin both sides of the line with real questions.
pub const MIN_SCORE: f64 = 2.0;
/// …and must contain at least this fraction of the question's distinct terms.
pub const MIN_MATCHED_FRACTION: f64 = 0.5;
/// Most sources listed with an answer.
pub const MAX_SOURCES: usize = 3;
/// Longest answer text, in characters (cut at a sentence end).
pub const MAX_ANSWER_CHARS: usize = 700;
/// Longest user message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// Largest chat frame, in bytes, checked before parsing.
pub const MAX_CHAT_FRAME_BYTES: usize = 16 * 1024;
/// Longest client message id, in bytes.
pub const MAX_MESSAGE_ID_LEN: usize = 64;
/// A qualification left untouched this long is abandoned: the next message starts afresh.
pub const QUALIFICATION_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// The `source` the glue should give leads from this bot.
pub const LEAD_SOURCE: &str = "chatbot";
/// The reply when the knowledge base has no answer.
pub const DONT_KNOW: &str = "I'm sorry, I don't know the answer to that. If you'd like, I can \
take your name and an email address or phone number and someone from our team will get back \
to you — just say \"contact me\".";

// ---------------------------------------------------------------------------------------------
// Knowledge base and retrieval
// ---------------------------------------------------------------------------------------------

/// One section of a knowledge-base document: the unit retrieval ranks and answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    /// Document id (its file name without `.md`).
    pub doc: String,
    /// Document title (its `# ` line).
    pub title: String,
    /// Section heading (its `## ` line), or the title for the text before the first section.
    pub heading: String,
    /// Section text as plain prose (markdown list markers and emphasis removed).
    pub body: String,
}

/// Splits markdown documents into passages by `## ` heading.
pub fn passages(docs: &[(&str, &str)]) -> Vec<Passage> {
    let mut out = Vec::new();
    for &(doc, text) in docs {
        let mut title = doc.to_string();
        let mut heading: Option<String> = None;
        let mut lines: Vec<String> = Vec::new();
        let mut flush = |heading: &Option<String>, title: &str, lines: &mut Vec<String>| {
            let body = lines.join(" ").trim().to_string();
            if !body.is_empty() {
                out.push(Passage {
                    doc: doc.to_string(),
                    title: title.to_string(),
                    heading: heading.clone().unwrap_or_else(|| title.to_string()),
                    body,
                });
            }
            lines.clear();
        };
        for line in text.lines() {
            let line = line.trim();
            if let Some(t) = line.strip_prefix("# ") {
                title = t.trim().to_string();
            } else if let Some(h) = line.strip_prefix("## ") {
                flush(&heading, &title, &mut lines);
                heading = Some(h.trim().to_string());
            } else if !line.is_empty() {
                lines.push(plain(line));
            }
        }
        flush(&heading, &title, &mut lines);
    }
    out
}

/// A markdown line as prose: list markers and emphasis dropped.
fn plain(line: &str) -> String {
    let mut l = line;
    if let Some(rest) = l.strip_prefix("- ").or_else(|| l.strip_prefix("* ")) {
        l = rest;
    } else if let Some((n, rest)) = l.split_once(". ") {
        if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
            l = rest;
        }
    }
    l.replace("**", "").replace('`', "")
}

const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "being", "but", "by", "can", "could", "d", "did", "do", "does", "doing", "don",
    "for", "from", "get", "got", "had", "has", "have", "having", "he", "her", "here", "hers",
    "help", "hey", "hi", "him", "his", "hello", "how", "happen", "good", "make", "time", "i", "id",
    "if", "im", "in", "into", "is", "it", "its", "ive", "just", "know", "let", "like", "ll", "m",
    "me", "might", "more", "most", "much", "must", "my", "need", "no", "nor", "not", "now", "of",
    "off", "ok", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own",
    "please", "re", "s", "same", "say", "she", "should", "so", "some", "such", "t", "tell", "than",
    "thank", "thanks", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "us", "ve", "very", "want", "was",
    "we", "were", "what", "whats", "when", "where", "which", "while", "who", "whom", "why", "will",
    "with", "would", "you", "your", "yours",
];

/// Light suffix stripping, the same for documents and questions: naive plurals
/// (`properties` → `property`, `fees` → `fee`; words ending in `ss`, `us`, `is` kept), then
/// `-ing` / `-ed` (with a doubled final consonant undone) and a final `e`, so `valued`,
/// `valuing` and `value` meet, as do `viewings` and `view`, `charges` and `charging`. Words
/// with digits, and stems shorter than three letters, are left alone.
fn stem(w: &str) -> String {
    if w.len() <= 3 || w.chars().any(|c| c.is_ascii_digit()) {
        return w.to_string();
    }
    let mut s = if let Some(stem) = w.strip_suffix("ies").filter(|s| s.len() >= 2) {
        format!("{stem}y")
    } else if w.ends_with("sses") {
        w[..w.len() - 2].to_string()
    } else if w.ends_with("ss") || w.ends_with("us") || w.ends_with("is") {
        w.to_string()
    } else {
        w.strip_suffix('s').unwrap_or(w).to_string()
    };
    for suffix in ["ing", "ed"] {
        if s.len() >= suffix.len() + 3 && s.ends_with(suffix) {
            s.truncate(s.len() - suffix.len());
            let b = s.as_bytes();
            let n = b.len();
            if n >= 2 && b[n - 1] == b[n - 2] && !b"aeioulsz".contains(&b[n - 1]) {
                s.pop();
            }
            break;
        }
    }
    if s.len() >= 4 && s.ends_with('e') {
        s.pop();
    }
    s
}

/// Search terms of a text: lowercased alphanumeric words, stop words removed, suffixes
/// stripped (plurals, `-ing`, `-ed`, a final `e`). Used for both documents and questions, so
/// they meet in the same form.
pub fn tokenize(text: &str) -> Vec<String> {
    // Stop words are dropped before and after stemming, so "happens" goes with "happen".
    static STOP_STEMS: OnceLock<HashSet<String>> = OnceLock::new();
    let stop_stems = STOP_STEMS.get_or_init(|| STOP_WORDS.iter().map(|w| stem(w)).collect());
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .filter(|w| !stop_stems.contains(w))
        .collect()
}

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Document id.
    pub doc: String,
    /// Document title.
    pub title: String,
    /// Section heading.
    pub heading: String,
    /// BM25 score, two decimals.
    pub score: f32,
}

/// An answer from the knowledge base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// What to tell the user: the best passage, or [`DONT_KNOW`].
    pub text: String,
    /// The passages that scored at least [`MIN_SCORE`], best first (empty when not confident).
    pub sources: Vec<Source>,
    /// Whether the best passage scored at least [`MIN_SCORE`].
    pub confident: bool,
}

/// Passages with a BM25 index over them.
#[derive(Debug, Clone)]
pub struct KnowledgeBase {
    passages: Vec<Passage>,
    tf: Vec<HashMap<String, u32>>,
    len: Vec<f64>,
    df: HashMap<String, u32>,
    avg_len: f64,
}

impl KnowledgeBase {
    /// Indexes documents. A passage's indexed text is its heading twice (headings summarise a
    /// section best) and its body. The document title is not repeated into every section: it
    /// would make the document's own topic words common, and so weak, within it.
    pub fn new(docs: &[(&str, &str)]) -> Self {
        let passages = passages(docs);
        let mut tf = Vec::with_capacity(passages.len());
        let mut len = Vec::with_capacity(passages.len());
        let mut df: HashMap<String, u32> = HashMap::new();
        for p in &passages {
            let text = format!("{} {} {}", p.heading, p.heading, p.body);
            let mut counts: HashMap<String, u32> = HashMap::new();
            let terms = tokenize(&text);
            len.push(terms.len() as f64);
            for t in terms {
                *counts.entry(t).or_default() += 1;
            }
            for t in counts.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            tf.push(counts);
        }
        let avg_len = if len.is_empty() {
            1.0
        } else {
            len.iter().sum::<f64>() / len.len() as f64
        };
        Self {
            passages,
            tf,
            len,
            df,
            avg_len,
        }
    }

    /// The knowledge base built from [`KB_DOCS`], indexed once per process.
    pub fn builtin() -> &'static Self {
        static KB: OnceLock<KnowledgeBase> = OnceLock::new();
        KB.get_or_init(|| Self::new(KB_DOCS))
    }

    /// All passages, in document order.
    pub fn passages(&self) -> &[Passage] {
        &self.passages
    }

    /// Passages with a positive BM25 score for `query`, best first (ties in document order).
    /// Repeated query terms count once.
    pub fn search(&self, query: &str) -> Vec<Hit<'_>> {
        let mut terms = tokenize(query);
        terms.sort();
        terms.dedup();
        let n = self.passages.len() as f64;
        let mut hits: Vec<Hit<'_>> = self
            .passages
            .iter()
            .enumerate()
            .filter_map(|(i, passage)| {
                let mut score = 0.0;
                let mut matched = 0;
                for t in &terms {
                    let Some(&f) = self.tf[i].get(t) else {
                        continue;
                    };
                    let f = f64::from(f);
                    let df = f64::from(self.df[t]);
                    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                    let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * self.len[i] / self.avg_len);
                    score += idf * f * (BM25_K1 + 1.0) / (f + norm);
                    matched += 1;
                }
                (matched > 0).then_some(Hit {
                    passage,
                    score,
                    matched,
                    terms: terms.len(),
                })
            })
            .collect();
        // Stable sort: equal scores keep document order.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits
    }

    /// Answers a question with the best passage when it is a confident match (see
    /// [`Hit::confident`]), or says it does not know.
    pub fn answer(&self, question: &str) -> Answer {
        let hits = self.search(question);
        match hits.first() {
            Some(best) if best.confident() => Answer {
                text: cut_at_sentence(&best.passage.body, MAX_ANSWER_CHARS),
                sources: hits
                    .iter()
                    .filter(|h| h.score >= MIN_SCORE)
                    .take(MAX_SOURCES)
                    .map(|h| Source {
                        doc: h.passage.doc.clone(),
                        title: h.passage.title.clone(),
                        heading: h.passage.heading.clone(),
                        score: ((h.score * 100.0).round() / 100.0) as f32,
                    })
                    .collect(),
                confident: true,
            },
            _ => Answer {
                text: DONT_KNOW.to_string(),
                sources: Vec::new(),
                confident: false,
            },
        }
    }
}

/// One passage's match for a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit<'a> {
    /// The passage.
    pub passage: &'a Passage,
    /// Its BM25 score.
    pub score: f64,
    /// How many distinct query terms it contains.
    pub matched: usize,
    /// How many distinct terms the query has.
    pub terms: usize,
}

impl Hit<'_> {
    /// Whether this is good enough to answer with: a score of at least [`MIN_SCORE`] and at
    /// least [`MIN_MATCHED_FRACTION`] of the query's terms present. The second test stops one
    /// incidental word ("who won the football *last* night") from passing for an answer.
    pub fn confident(&self) -> bool {
        self.score >= MIN_SCORE && self.matched as f64 >= MIN_MATCHED_FRACTION * self.terms as f64
    }
}

/// Answers a question from the built-in knowledge base.
pub fn answer(question: &str) -> Answer {
    KnowledgeBase::builtin().answer(question)
}

/// `text` cut to at most `max` characters, at the last sentence end that fits (or with an
/// ellipsis when no sentence fits).
fn cut_at_sentence(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let end = text.char_indices().nth(max).map_or(text.len(), |(i, _)| i);
    let head = &text[..end];
    match head.rfind(". ") {
        Some(i) if i > 0 => head[..=i].to_string(),
        _ => format!("{}…", head.trim_end()),
    }
}

// ---------------------------------------------------------------------------------------------
// Understanding free text
// ---------------------------------------------------------------------------------------------

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

    fn message(self) -> &'static str {
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
fn phrase_text(text: &str) -> String {
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

fn has_phrase(words: &str, phrases: &[&str]) -> bool {
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

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-'".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()));
    local_ok && domain_ok
}

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
        if valid_email(w) {
            email = Some(w.to_ascii_lowercase());
        } else {
            bad = true;
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
    fn purpose(self) -> Purpose {
        match self {
            Self::Sell | Self::Valuation => Purpose::Valuation,
            Self::Contact => Purpose::Contact,
        }
    }
}

fn is_question(text: &str, words: &str) -> bool {
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

fn yes_or_no(text: &str) -> Option<bool> {
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

fn is_cancel(text: &str) -> bool {
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
fn small_talk(text: &str) -> Option<&'static str> {
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

fn slot_named(text: &str) -> Option<Slot> {
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

// ---------------------------------------------------------------------------------------------
// The conversation
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------------

/// Frame `type` values a chat client may send.
pub const CHAT_FRAME_TYPES: &[&str] = &["message", "qualify", "reset"];

/// A frame a chat client sends (JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// A message to the bot.
    Message {
        /// What the user typed, at most [`MAX_MESSAGE_CHARS`] characters.
        text: String,
        /// Optional client id, echoed on the reply frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Start lead qualification explicitly (a "Book a valuation" button).
    Qualify {},
    /// Forget the conversation and start again.
    Reset {},
}

/// A frame the server sends on a chat socket (JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A piece of the reply (a sentence or so), for progressive display.
    ReplyDelta {
        /// The client message id the reply answers, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Text to append.
        text: String,
    },
    /// The whole reply, with its sources.
    ReplyDone {
        /// The client message id, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The whole reply text.
        text: String,
        /// Knowledge-base sources (empty for conversational replies).
        sources: Vec<Source>,
    },
    /// The leads service stored the lead.
    LeadSubmitted {
        /// Its id, if the service returned one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lead_id: Option<String>,
    },
    /// A refused frame or a failed step.
    Error {
        /// Stable code, see [`ChatError::code`].
        code: String,
        /// Human-readable explanation.
        message: String,
    },
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("chat frames always serialize")
    }
}

/// Why a chat frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Envelope errors: `too_large`, `malformed`, `unknown_type`, `invalid_frame`.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A message with no visible characters (`empty_message`).
    #[error("message is empty")]
    EmptyMessage,
    /// A message over [`MAX_MESSAGE_CHARS`] (`message_too_long`).
    #[error("message of {chars} characters exceeds the limit of {MAX_MESSAGE_CHARS}")]
    MessageTooLong {
        /// Characters sent.
        chars: usize,
    },
    /// A message id that is empty or longer than [`MAX_MESSAGE_ID_LEN`] bytes (`invalid_id`).
    #[error("message id must be 1-{MAX_MESSAGE_ID_LEN} bytes")]
    InvalidId,
}

impl ChatError {
    /// The stable snake_case code sent in `error` frames.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Frame(e) => e.code(),
            Self::EmptyMessage => "empty_message",
            Self::MessageTooLong { .. } => "message_too_long",
            Self::InvalidId => "invalid_id",
        }
    }

    /// The error as a frame.
    pub fn frame(&self) -> ServerFrame {
        ServerFrame::Error {
            code: self.code().into(),
            message: self.to_string(),
        }
    }
}

/// Decodes and validates one chat frame.
pub fn decode_chat(text: &str) -> Result<ClientFrame, ChatError> {
    let frame: ClientFrame = decode_json_frame(text, MAX_CHAT_FRAME_BYTES, CHAT_FRAME_TYPES)?;
    if let ClientFrame::Message { text, id } = &frame {
        let chars = text.chars().count();
        if chars > MAX_MESSAGE_CHARS {
            return Err(ChatError::MessageTooLong { chars });
        }
        if text.trim().is_empty() {
            return Err(ChatError::EmptyMessage);
        }
        if id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > MAX_MESSAGE_ID_LEN)
        {
            return Err(ChatError::InvalidId);
        }
    }
    Ok(frame)
}

/// The frames for one reply: a `reply_delta` per sentence or line, then `reply_done` with
/// the whole text and its sources.
pub fn reply_frames(id: Option<&str>, reply: &Reply) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    let mut start = 0;
    let bytes = reply.text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let boundary =
            b == b'\n' || (matches!(b, b'.' | b'?' | b'!') && bytes.get(i + 1) == Some(&b' '));
        if boundary {
            let end = i + 1 + usize::from(b != b'\n');
            frames.push(ServerFrame::ReplyDelta {
                id: id.map(str::to_string),
                text: reply.text[start..end].to_string(),
            });
            start = end;
        }
    }
    if start < reply.text.len() {
        frames.push(ServerFrame::ReplyDelta {
            id: id.map(str::to_string),
            text: reply.text[start..].to_string(),
        });
    }
    frames.push(ServerFrame::ReplyDone {
        id: id.map(str::to_string),
        text: reply.text.clone(),
        sources: reply.sources.clone(),
    });
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // --- knowledge base ----------------------------------------------------------------------

    #[test]
    fn documents_split_into_titled_passages() {
        let ps = passages(KB_DOCS);
        assert!(ps.len() >= 30, "{}", ps.len());
        for (doc, text) in KB_DOCS {
            assert!(text.starts_with("# "), "{doc} has a title line");
            assert!(
                ps.iter().filter(|p| p.doc == *doc).count() >= 4,
                "{doc} has sections"
            );
        }
        let fees = ps
            .iter()
            .find(|p| p.heading == "Our commission")
            .expect("fees section");
        assert_eq!(fees.doc, "fees-and-commission");
        assert_eq!(fees.title, "Fees and commission");
        assert!(fees
            .body
            .starts_with("Our standard sole agency commission is 1.2%"));
        // List markers and emphasis are gone from bodies.
        let docs = ps
            .iter()
            .find(|p| p.heading == "Documents you will need")
            .unwrap();
        assert!(docs.body.contains("photo ID and proof of address"));
        assert!(!docs.body.contains("- "));
        let intro = &ps[0];
        assert_eq!(intro.heading, intro.title);
    }

    #[test]
    fn tokenizer_normalises_words() {
        assert_eq!(
            tokenize("How much are your FEES for Properties, viewings & valuations?"),
            vec!["fee", "property", "view", "valuation"]
        );
        // Forms of a word meet in one term.
        for group in [
            &["value", "valued", "valuing", "values"][..],
            &["charge", "charges", "charged", "charging"],
            &["stop", "stopped", "stopping", "stops"],
            &["property", "properties"],
        ] {
            let stems: Vec<String> = group.iter().map(|w| stem(w)).collect();
            assert!(
                stems.iter().all(|s| *s == stems[0]),
                "{group:?} -> {stems:?}"
            );
        }
        assert_eq!(stem("business"), "business");
        assert_eq!(stem("sell"), "sell");
        assert_eq!(stem("need"), "need");
        assert_eq!(
            tokenize("the business address"),
            vec!["business", "address"]
        );
        assert_eq!(tokenize("What's it's don't"), Vec::<String>::new());
        assert_eq!(tokenize("EPC £85"), vec!["epc", "85"]);
    }

    fn top(question: &str) -> (String, String, f64, bool) {
        let kb = KnowledgeBase::builtin();
        let hits = kb.search(question);
        let h = hits.first().expect("some hit");
        (
            h.passage.doc.clone(),
            h.passage.heading.clone(),
            h.score,
            h.confident(),
        )
    }

    #[test]
    fn real_questions_find_the_right_section() {
        // (question, document, section — when one section is clearly the answer)
        let cases = [
            (
                "how much commission do you charge",
                "fees-and-commission",
                Some("Our commission"),
            ),
            ("What are your fees?", "fees-and-commission", None),
            ("when do I pay the fee", "fees-and-commission", None),
            (
                "How long does it take to sell a house?",
                "selling-your-home",
                Some("How long does it take to sell a house"),
            ),
            (
                "what documents will I need",
                "selling-your-home",
                Some("Documents you will need"),
            ),
            (
                "what is an EPC and how much does it cost",
                "selling-your-home",
                Some("Energy Performance Certificates"),
            ),
            (
                "what happens after an offer is accepted",
                "selling-your-home",
                Some("Offers and choosing a buyer"),
            ),
            (
                "can I book a viewing on a Sunday",
                "viewings",
                Some("Booking a viewing"),
            ),
            (
                "can I do a video viewing",
                "viewings",
                Some("Virtual viewings and video tours"),
            ),
            (
                "do you keep recordings of my voice",
                "roomkeeper-support",
                Some("Your data and privacy"),
            ),
            (
                "the chat keeps disconnecting",
                "roomkeeper-support",
                Some("Connection problems"),
            ),
            (
                "how do I talk to a human",
                "roomkeeper-support",
                Some("Talking to a person"),
            ),
            (
                "what is a mortgage valuation",
                "valuations",
                Some("Mortgage valuations and surveys"),
            ),
            (
                "how do you work out what my home is worth",
                "valuations",
                Some("How we work out what your home is worth"),
            ),
            (
                "where is your York office",
                "contact-and-offices",
                Some("York office"),
            ),
            (
                "what are your opening hours",
                "contact-and-offices",
                Some("Opening hours"),
            ),
            (
                "how do I make a complaint",
                "contact-and-offices",
                Some("Complaints"),
            ),
            (
                "how long is the contract and notice period",
                "fees-and-commission",
                Some("Contract length and notice"),
            ),
        ];
        for (q, doc, heading) in cases {
            let (d, h, s, confident) = top(q);
            assert_eq!(d, doc, "{q:?} found {h:?} (score {s:.2})");
            if let Some(heading) = heading {
                assert_eq!(h, heading, "{q:?} (score {s:.2})");
            }
            assert!(confident, "{q:?} scored {s:.2}");
        }
    }

    #[test]
    fn unrelated_questions_get_the_dont_know_answer() {
        for q in [
            "xqzv blorf wibble",
            "What's the weather like in Paris tomorrow?",
            "who won the football last night",
            "can you recommend a good restaurant in York",
            "what time is the eclipse",
            "tell me a joke",
            "????",
            "",
        ] {
            let a = answer(q);
            assert!(!a.confident, "{q:?}: {a:?}");
            assert!(a.sources.is_empty());
            assert_eq!(a.text, DONT_KNOW);
        }
        assert!(DONT_KNOW.contains("don't know") && DONT_KNOW.contains("contact me"));
    }

    #[test]
    fn answers_carry_sources_and_are_bounded() {
        let a = answer("how much commission do you charge");
        assert!(a.confident);
        assert!(a.text.contains("1.2% plus VAT"), "{}", a.text);
        assert_eq!(a.sources[0].doc, "fees-and-commission");
        assert_eq!(a.sources[0].heading, "Our commission");
        assert!(a.sources.len() <= MAX_SOURCES);
        assert!(a.sources.windows(2).all(|w| w[0].score >= w[1].score));
        for p in KnowledgeBase::builtin().passages() {
            let a = KnowledgeBase::builtin().answer(&p.heading);
            assert!(a.text.chars().count() <= MAX_ANSWER_CHARS + 1);
        }
        assert_eq!(cut_at_sentence("One. Two. Three.", 11), "One. Two.");
        assert_eq!(cut_at_sentence("abcdefghij", 4), "abcd…");
    }

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

    // --- wire format -------------------------------------------------------------------------

    #[test]
    fn chat_frames_decode_and_refuse_with_codes() {
        assert_eq!(
            decode_chat(r#"{"type":"message","text":"hi","id":"m1"}"#),
            Ok(ClientFrame::Message {
                text: "hi".into(),
                id: Some("m1".into())
            })
        );
        assert_eq!(
            decode_chat(r#"{"type":"reset"}"#),
            Ok(ClientFrame::Reset {})
        );
        assert_eq!(
            decode_chat(r#"{"type":"qualify"}"#),
            Ok(ClientFrame::Qualify {})
        );
        let code = |s: &str| decode_chat(s).unwrap_err().code();
        assert_eq!(code("nope"), "malformed");
        assert_eq!(code(r#"{"type":"shout"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"reset","x":1}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"message"}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"message","text":"  "}"#), "empty_message");
        assert_eq!(
            code(r#"{"type":"message","text":"a","id":""}"#),
            "invalid_id"
        );
        let long = format!(
            r#"{{"type":"message","text":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_CHARS + 1)
        );
        assert_eq!(code(&long), "message_too_long");
        let huge = format!(
            r#"{{"type":"message","text":"{}"}}"#,
            "a".repeat(MAX_CHAT_FRAME_BYTES)
        );
        assert_eq!(code(&huge), "too_large");
        assert_eq!(
            serde_json::to_value(ChatError::EmptyMessage.frame()).unwrap(),
            json!({"type":"error","code":"empty_message","message":"message is empty"})
        );
    }

    #[test]
    fn replies_become_deltas_then_done() {
        let reply = Reply {
            text: "One. Two? Three\nFour".into(),
            sources: vec![Source {
                doc: "d".into(),
                title: "T".into(),
                heading: "H".into(),
                score: 3.25,
            }],
        };
        let frames = reply_frames(Some("m1"), &reply);
        let deltas: Vec<&str> = frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::ReplyDelta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, vec!["One. ", "Two? ", "Three\n", "Four"]);
        assert_eq!(deltas.concat(), reply.text);
        assert_eq!(
            serde_json::to_value(frames.last().unwrap()).unwrap(),
            json!({"type":"reply_done","id":"m1","text":"One. Two? Three\nFour",
                   "sources":[{"doc":"d","title":"T","heading":"H","score":3.25}]})
        );
        let frames = reply_frames(None, &reply);
        assert_eq!(
            serde_json::to_value(&frames[0]).unwrap(),
            json!({"type":"reply_delta","text":"One. "})
        );
        assert_eq!(
            ServerFrame::LeadSubmitted { lead_id: None }.to_json(),
            r#"{"type":"lead_submitted"}"#
        );
    }
}
