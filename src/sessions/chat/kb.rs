//! The knowledge base and retrieval: [`KB_DOCS`] (the agency's guides, embedded at compile
//! time) split into [`Passage`]s, [`tokenize`], the BM25 index [`KnowledgeBase`], and [`answer`]
//! which returns an [`Answer`] with its [`Source`]s, or [`DONT_KNOW`] below [`MIN_SCORE`].

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

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
/// The reply when the knowledge base has no answer.
pub const DONT_KNOW: &str = "I'm sorry, I don't know the answer to that. If you'd like, I can \
take your name and an email address or phone number and someone from our team will get back \
to you — just say \"contact me\".";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
