//! The Pusher apps this service hosts, from the `PUSHER_APPS` secret: a JSON array of
//!
//! ```json
//! {"id": "1", "key": "app-key", "secret": "app-secret", "enabled": true,
//!  "client_events": true, "max_connections": 1000,
//!  "webhooks": [{"url": "https://example.com/pusher", "kinds": ["channel_existence"]}]}
//! ```
//!
//! `id` is digits only (`pusher-http-python` refuses any other app id; the REST paths are
//! `/apps/{id}/…`); `key` is what clients connect with (`/app/{key}`), of `[A-Za-z0-9_-]`;
//! `secret` signs everything and must be non-empty. Ids and keys are unique. `enabled`
//! defaults to true; `client_events` to false, as on Pusher, where an app opts in;
//! `max_connections` to no limit; a webhook without `kinds` receives every kind. Unknown
//! fields are refused, so a misspelt setting fails loudly rather than silently defaulting.
//!
//! An app's `Debug` output never shows its secret, and no error quotes one.
//! [`App::local_default`] is the app `make dev` runs with.

use serde::Deserialize;

use super::webhook::WebhookKind;

/// One webhook target of an app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// Where to `POST`.
    pub url: String,
    /// The kinds to send; `None` sends every kind.
    #[serde(default)]
    pub kinds: Option<Vec<WebhookKind>>,
}

impl WebhookTarget {
    /// Whether this target wants events of `kind`.
    pub fn wants(&self, kind: WebhookKind) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
    }
}

/// One configured app.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// The numeric app id of REST paths.
    pub id: String,
    /// The public key clients connect with.
    pub key: String,
    /// The signing secret.
    pub secret: String,
    /// Whether the app accepts connections and requests (else 4003 / 403).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether clients may send `client-` events.
    #[serde(default)]
    pub client_events: bool,
    /// The most concurrent connections (else 4004); `None` for no limit.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Where to send webhooks.
    #[serde(default)]
    pub webhooks: Vec<WebhookTarget>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("enabled", &self.enabled)
            .field("client_events", &self.client_events)
            .field("max_connections", &self.max_connections)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

impl App {
    /// The app `make dev` serves when `PUSHER_APPS` is unset: id `1`, key
    /// `roomkeeper-local-key`, secret `roomkeeper-local-secret`, client events on. Its
    /// secret is public, so it is for local development only.
    pub fn local_default() -> Self {
        Self {
            id: "1".into(),
            key: "roomkeeper-local-key".into(),
            secret: "roomkeeper-local-secret".into(),
            enabled: true,
            client_events: true,
            max_connections: None,
            webhooks: Vec::new(),
        }
    }
}

/// Why `PUSHER_APPS` was refused. Entries are named by position and id, never by secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppsError {
    /// Not a JSON array of app objects (the detail is serde's, which quotes no values).
    #[error("invalid PUSHER_APPS: {0}")]
    Json(String),
    /// An entry breaks a rule.
    #[error("invalid PUSHER_APPS entry {index}: {rule}")]
    Entry {
        /// The entry's position, from 0.
        index: usize,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Two entries share an id or a key.
    #[error("invalid PUSHER_APPS: entries {first} and {second} share {what}")]
    Duplicate {
        /// The earlier entry.
        first: usize,
        /// The later entry.
        second: usize,
        /// `an id` or `a key`.
        what: &'static str,
    },
}

/// A JSON error without the values serde quotes (`invalid type: string "…"` could be a
/// secret in the wrong place): the position, plus serde's message only when it names
/// fields (`unknown field`, `missing field`).
fn describe(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let names_fields = message.starts_with("unknown field") || message.starts_with("missing field");
    if names_fields {
        message
    } else {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a value of the wrong type",
            serde_json::error::Category::Eof => "unexpected end of input",
            _ => "malformed JSON",
        };
        format!("{what} at line {} column {}", e.line(), e.column())
    }
}

/// The configured apps, looked up by key (WebSocket connections) and by id (REST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apps {
    apps: Vec<App>,
}

impl Apps {
    /// Validates a list of apps.
    pub fn new(apps: Vec<App>) -> Result<Self, AppsError> {
        for (index, app) in apps.iter().enumerate() {
            let entry = |rule| AppsError::Entry { index, rule };
            if app.id.is_empty() || !app.id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(entry("id must be digits only"));
            }
            if app.key.is_empty()
                || !app
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(entry("key must be non-empty [A-Za-z0-9_-]"));
            }
            if app.secret.is_empty() {
                return Err(entry("secret must be non-empty"));
            }
            if app.max_connections == Some(0) {
                return Err(entry("max_connections must be positive when set"));
            }
            if app
                .webhooks
                .iter()
                .any(|w| !(w.url.starts_with("https://") || w.url.starts_with("http://")))
            {
                return Err(entry("webhook urls must be http:// or https://"));
            }
            for (first, other) in apps[..index].iter().enumerate() {
                let dup = |what| AppsError::Duplicate {
                    first,
                    second: index,
                    what,
                };
                if other.id == app.id {
                    return Err(dup("an id"));
                }
                if other.key == app.key {
                    return Err(dup("a key"));
                }
            }
        }
        Ok(Self { apps })
    }

    /// Parses and validates `PUSHER_APPS`.
    pub fn parse(json: &str) -> Result<Self, AppsError> {
        let apps: Vec<App> =
            serde_json::from_str(json).map_err(|e| AppsError::Json(describe(&e)))?;
        Self::new(apps)
    }

    /// Just [`App::local_default`].
    pub fn local_default() -> Self {
        Self {
            apps: vec![App::local_default()],
        }
    }

    /// The app clients connect to with `key`.
    pub fn by_key(&self, key: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.key == key)
    }

    /// The app of REST path `/apps/{id}`.
    pub fn by_id(&self, id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.id == id)
    }

    /// Every app, in configuration order.
    pub fn all(&self) -> &[App] {
        &self.apps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"[
        {"id": "1", "key": "key-one", "secret": "s1", "client_events": true,
         "webhooks": [{"url": "https://example.com/hook", "kinds": ["presence"]}]},
        {"id": "22", "key": "key_two", "secret": "s2", "enabled": false, "max_connections": 5}
    ]"#;

    #[test]
    fn apps_parse_with_defaults_and_look_up_by_key_and_id() {
        let apps = Apps::parse(TWO).unwrap();
        let one = apps.by_key("key-one").unwrap();
        assert_eq!(one.id, "1");
        assert!(one.enabled && one.client_events);
        assert_eq!(one.max_connections, None);
        assert!(one.webhooks[0].wants(WebhookKind::Presence));
        assert!(!one.webhooks[0].wants(WebhookKind::ClientEvent));
        let two = apps.by_id("22").unwrap();
        assert_eq!(two.key, "key_two");
        assert!(!two.enabled && !two.client_events);
        assert_eq!(two.max_connections, Some(5));
        assert!(apps.by_key("nope").is_none());
        assert!(apps.by_id("3").is_none());
        assert_eq!(apps.all().len(), 2);
        let all = WebhookTarget {
            url: "https://x".into(),
            kinds: None,
        };
        assert!(all.wants(WebhookKind::CacheMiss));
    }

    #[test]
    fn entries_break_rules_by_position() {
        let entry = |json: &str| Apps::parse(json).unwrap_err().to_string();
        assert_eq!(
            entry(r#"[{"id":"app1","key":"k","secret":"s"}]"#),
            "invalid PUSHER_APPS entry 0: id must be digits only"
        );
        assert_eq!(
            entry(r#"[{"id":"1","key":"k","secret":"s"},{"id":"2","key":"a b","secret":"s"}]"#),
            "invalid PUSHER_APPS entry 1: key must be non-empty [A-Za-z0-9_-]"
        );
        assert_eq!(
            entry(r#"[{"id":"1","key":"k","secret":""}]"#),
            "invalid PUSHER_APPS entry 0: secret must be non-empty"
        );
        assert_eq!(
            entry(r#"[{"id":"1","key":"k","secret":"s","max_connections":0}]"#),
            "invalid PUSHER_APPS entry 0: max_connections must be positive when set"
        );
        assert_eq!(
            entry(r#"[{"id":"1","key":"k","secret":"s","webhooks":[{"url":"ftp://x"}]}]"#),
            "invalid PUSHER_APPS entry 0: webhook urls must be http:// or https://"
        );
        assert_eq!(
            entry(r#"[{"id":"1","key":"a","secret":"s"},{"id":"1","key":"b","secret":"t"}]"#),
            "invalid PUSHER_APPS: entries 0 and 1 share an id"
        );
        assert_eq!(
            entry(r#"[{"id":"1","key":"a","secret":"s"},{"id":"2","key":"a","secret":"t"}]"#),
            "invalid PUSHER_APPS: entries 0 and 1 share a key"
        );
        assert!(entry(r#"{"id":"1"}"#).starts_with("invalid PUSHER_APPS: "));
        // A misspelt setting is refused, not ignored.
        assert!(
            entry(r#"[{"id":"1","key":"a","secret":"s","client_event":true}]"#)
                .contains("unknown field")
        );
        assert_eq!(Apps::parse("[]").unwrap().all().len(), 0);
    }

    #[test]
    fn secrets_never_reach_debug_or_errors() {
        let apps = Apps::parse(TWO).unwrap();
        let debug = format!("{apps:?}");
        assert!(!debug.contains("\"s1\"") && !debug.contains("\"s2\""));
        assert!(debug.contains("<redacted>"));
        assert!(!format!("{:?}", App::local_default()).contains("roomkeeper-local-secret"));
        let err = Apps::parse(r#"[{"id":"x","key":"k","secret":"hunter2-secret"}]"#)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"));
        // A secret pasted into a field of another type is not echoed back.
        let err = Apps::parse(r#"[{"id":"1","key":"k","secret":"s","enabled":"hunter2"}]"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid PUSHER_APPS: a value of the wrong type at line 1 column 53"
        );
        assert_eq!(
            Apps::parse("[{").unwrap_err().to_string(),
            "invalid PUSHER_APPS: unexpected end of input at line 1 column 2"
        );
        assert_eq!(
            Apps::parse(r#"[{"id":"1","key":"k"}]"#)
                .unwrap_err()
                .to_string(),
            "invalid PUSHER_APPS: missing field `secret` at line 1 column 21"
        );
    }

    #[test]
    fn the_local_default_app() {
        let apps = Apps::local_default();
        let app = apps.by_key("roomkeeper-local-key").unwrap();
        assert_eq!(app.id, "1");
        assert_eq!(app.secret, "roomkeeper-local-secret");
        assert!(app.enabled && app.client_events);
        assert!(Apps::new(vec![App::local_default()]).is_ok());
    }
}
