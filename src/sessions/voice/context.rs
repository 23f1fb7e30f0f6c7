//! The conversation context handed to the generation provider: [`Context`], a bounded,
//! serializable list of [`ContextTurn`]s, whole exchanges dropped oldest first.
//!
//! Words: a [`ContextTurn`] is one message (what the user said in one utterance or typed
//! turn, or one reply of the agent). An **exchange** is what the bounds count: the user's
//! message(s) and the agent's reply that followed them. The window always starts with a user
//! message, so a provider whose chat template requires user/assistant alternation never sees
//! an answer whose question was dropped (consecutive user messages are joined into one by
//! [`crate::sessions::providers::voice_messages`]).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Most exchanges (the user's message(s) and the reply to them) kept in the [`Context`].
pub const MAX_CONTEXT_TURNS: usize = 20;
/// Most characters (summed over turns) kept in the conversation [`Context`].
pub const MAX_CONTEXT_CHARS: usize = 8000;

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The person.
    User,
    /// The agent.
    Assistant,
}

/// One turn of the conversation as the generation provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextTurn {
    /// Who said it.
    pub role: Role,
    /// What was said (an assistant turn cut off by barge-in holds what had been sent).
    pub text: String,
    /// True for an assistant reply that was interrupted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// The conversation so far, bounded by [`MAX_CONTEXT_TURNS`] exchanges and
/// [`MAX_CONTEXT_CHARS`] characters (oldest exchanges dropped whole, first), so what is sent
/// to the provider and persisted stays small.
/// Serializable: the object stores it and rebuilds the session with it after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    turns: VecDeque<ContextTurn>,
}

impl Context {
    /// Appends a message (its text cut to [`MAX_CONTEXT_CHARS`]), then drops the oldest
    /// exchanges, whole, until both bounds hold. The exchange in progress is never dropped:
    /// if it alone is over the character bound, its earliest user messages go first (never
    /// the last), and then its reply is cut to fit. An agent message with no user message
    /// before it is not kept.
    pub fn push(&mut self, role: Role, text: &str, interrupted: bool) {
        self.turns.push_back(ContextTurn {
            role,
            text: truncate_chars(text, MAX_CONTEXT_CHARS),
            interrupted,
        });
        self.trim();
    }

    /// Makes the bounds hold and the window start with a user message (also for a context
    /// restored from an older snapshot, which counted messages rather than exchanges).
    pub fn trim(&mut self) {
        while self
            .turns
            .front()
            .is_some_and(|t| t.role == Role::Assistant)
        {
            self.turns.pop_front();
        }
        while self.exchanges() > MAX_CONTEXT_TURNS
            || (self.exchanges() > 1 && self.chars() > MAX_CONTEXT_CHARS)
        {
            self.turns.pop_front();
            while self
                .turns
                .front()
                .is_some_and(|t| t.role == Role::Assistant)
            {
                self.turns.pop_front();
            }
        }
        // One exchange over the bound: its earlier user messages, then its reply's tail.
        while self.chars() > MAX_CONTEXT_CHARS
            && self.turns.len() > 1
            && self.turns.get(1).is_some_and(|t| t.role == Role::User)
        {
            self.turns.pop_front();
        }
        let over = self.chars().saturating_sub(MAX_CONTEXT_CHARS);
        if over > 0 {
            if let Some(last) = self.turns.back_mut() {
                let keep = last.text.chars().count().saturating_sub(over);
                last.text = truncate_chars(&last.text, keep);
            }
        }
    }

    /// Number of exchanges: user messages that follow an agent message or open the window.
    pub fn exchanges(&self) -> usize {
        let mut n = 0;
        let mut prev = None;
        for t in &self.turns {
            if t.role == Role::User && prev != Some(Role::User) {
                n += 1;
            }
            prev = Some(t.role);
        }
        n
    }

    /// The turns, oldest first.
    pub fn turns(&self) -> impl Iterator<Item = &ContextTurn> {
        self.turns.iter()
    }

    /// The turns as a list, oldest first (what `Effect::Generate` carries).
    pub fn to_vec(&self) -> Vec<ContextTurn> {
        self.turns.iter().cloned().collect()
    }

    /// Number of turns.
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    /// Whether there are no turns.
    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Characters over all turns.
    pub fn chars(&self) -> usize {
        self.turns.iter().map(|t| t.text.chars().count()).sum()
    }
}

/// `s` cut to at most `max` characters.
pub(super) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- context and usage -------------------------------------------------------------------

    fn roles(c: &Context) -> String {
        c.turns()
            .map(|t| match t.role {
                Role::User => 'u',
                Role::Assistant => 'a',
            })
            .collect()
    }

    #[test]
    fn context_keeps_whole_exchanges_oldest_dropped_first_and_is_serializable() {
        let mut c = Context::default();
        for i in 0..50 {
            c.push(Role::User, &format!("q{i}"), false);
            c.push(Role::Assistant, &format!("a{i}"), false);
        }
        assert_eq!(c.exchanges(), MAX_CONTEXT_TURNS);
        assert_eq!(
            c.len(),
            2 * MAX_CONTEXT_TURNS,
            "exchanges are counted, not messages"
        );
        assert_eq!(c.turns().next().unwrap().text, "q30");
        assert_eq!(c.turns().last().unwrap().text, "a49");
        // Two utterances before one reply are one exchange.
        c.push(Role::User, "one", false);
        c.push(Role::User, "two", false);
        c.push(Role::Assistant, "both", false);
        assert_eq!(c.exchanges(), MAX_CONTEXT_TURNS);
        assert_eq!(c.turns().next().unwrap().text, "q31");
        // The character bound drops whole exchanges: never a reply without its question.
        for i in 0..3 {
            c.push(Role::User, &format!("long {i}"), false);
            c.push(Role::Assistant, &"x".repeat(3000), false);
            assert_eq!(c.turns().next().unwrap().role, Role::User, "{}", roles(&c));
        }
        assert!(c.chars() <= MAX_CONTEXT_CHARS);
        assert_eq!(roles(&c), "uaua");
        // One exchange over the bound alone: the question stays, the reply is cut.
        c.push(Role::User, &"y".repeat(1000), false);
        c.push(Role::Assistant, &"z".repeat(MAX_CONTEXT_CHARS), false);
        assert_eq!(roles(&c), "ua");
        assert_eq!(c.chars(), MAX_CONTEXT_CHARS);
        assert_eq!(c.turns().next().unwrap().text.len(), 1000);
        c.push(Role::User, "q", false);
        c.push(Role::Assistant, "ok", true);
        let json = serde_json::to_string(&c).unwrap();
        let back: Context = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(json.contains(r#""role":"assistant","text":"ok","interrupted":true"#));
    }

    #[test]
    fn a_window_restored_from_an_older_snapshot_starts_with_a_user_message() {
        let old = r#"{"turns":[{"role":"assistant","text":"orphan answer"},
            {"role":"user","text":"q"},{"role":"assistant","text":"a"}]}"#;
        let mut c: Context = serde_json::from_str(old).unwrap();
        c.trim();
        assert_eq!(roles(&c), "ua");
        let mut c = Context::default();
        c.push(Role::Assistant, "no question before me", false);
        assert!(c.is_empty());
    }
}
