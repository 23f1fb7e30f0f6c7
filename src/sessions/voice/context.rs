//! The conversation context handed to the generation provider: [`Context`], a bounded,
//! serializable list of [`ContextTurn`]s, oldest dropped first.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Most turns kept in the conversation [`Context`].
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

/// The conversation so far, bounded by [`MAX_CONTEXT_TURNS`] and [`MAX_CONTEXT_CHARS`]
/// (oldest turns dropped first), so what is sent to the provider and persisted stays small.
/// Serializable: the object stores it and rebuilds the session with it after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    turns: VecDeque<ContextTurn>,
}

impl Context {
    /// Appends a turn (its text cut to [`MAX_CONTEXT_CHARS`]), then drops the oldest turns
    /// until both bounds hold.
    pub fn push(&mut self, role: Role, text: &str, interrupted: bool) {
        self.turns.push_back(ContextTurn {
            role,
            text: truncate_chars(text, MAX_CONTEXT_CHARS),
            interrupted,
        });
        while self.turns.len() > MAX_CONTEXT_TURNS || self.chars() > MAX_CONTEXT_CHARS {
            self.turns.pop_front();
        }
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

    #[test]
    fn context_is_bounded_oldest_first_and_serializable() {
        let mut c = Context::default();
        for i in 0..50 {
            c.push(Role::User, &format!("turn {i}"), false);
        }
        assert_eq!(c.len(), MAX_CONTEXT_TURNS);
        assert_eq!(c.turns().next().unwrap().text, "turn 30");
        assert_eq!(c.turns().last().unwrap().text, "turn 49");
        for _ in 0..3 {
            c.push(Role::Assistant, &"x".repeat(3000), false);
        }
        assert!(c.chars() <= MAX_CONTEXT_CHARS);
        assert_eq!(c.len(), 2);
        c.push(Role::User, &"y".repeat(MAX_CONTEXT_CHARS + 50), false);
        assert_eq!(c.len(), 1);
        assert_eq!(c.chars(), MAX_CONTEXT_CHARS);
        c.push(Role::Assistant, "ok", true);
        let json = serde_json::to_string(&c).unwrap();
        let back: Context = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(json.contains(r#""role":"assistant","text":"ok","interrupted":true"#));
    }
}
