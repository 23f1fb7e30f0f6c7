//! The chat socket's wire format: [`ClientFrame`]s a client sends as JSON text, the
//! [`ServerFrame`]s it receives, [`ChatError`] with stable codes, [`decode_chat`], and
//! [`reply_frames`] which turns a conversation [`Reply`] into frames.

use serde::{Deserialize, Serialize};

use crate::rooms::protocol::FrameError;
use crate::sessions::voice::wire::decode_json_frame;

use super::conversation::{Reply, MAX_MESSAGE_CHARS};
use super::kb::Source;

/// Largest chat frame, in bytes, checked before parsing.
pub const MAX_CHAT_FRAME_BYTES: usize = 16 * 1024;
/// Longest client message id, in bytes.
pub const MAX_MESSAGE_ID_LEN: usize = 64;

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
