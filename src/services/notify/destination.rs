//! Where notifications go: the channel → webhook URL map from configuration
//! ([`Destinations`]); a [`WebhookUrl`] never prints more than its scheme and host, since its
//! path or query carries a secret.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::notice::Channel;

/// Longest webhook URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// A webhook URL: `http` or `https`, with a host, no credentials, ASCII without spaces.
///
/// Its `Debug` form (and [`WebhookUrl::redacted`]) shows only scheme and host: the path and
/// query of a webhook URL are its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// Checks a URL; the error says what is wrong without repeating the URL.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.len() > MAX_URL_LEN {
            return Err("URL longer than 2048 bytes");
        }
        if !s.is_ascii() || s.chars().any(|c| c.is_ascii_whitespace() || c.is_control()) {
            return Err("URL must be ASCII without spaces (percent-encode the rest)");
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("URL must start with http:// or https://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err("URL must use http or https");
        }
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if authority.contains('@') {
            return Err("URL must not carry credentials before the host");
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or("URL has a malformed IPv6 host")?;
                let ok = !host.is_empty()
                    && host.contains(':')
                    && host
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
                if !ok {
                    return Err("URL has a malformed IPv6 host");
                }
                match after {
                    "" => (host, None),
                    _ => (
                        host,
                        Some(after.strip_prefix(':').ok_or("URL has a malformed port")?),
                    ),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err("URL must name a host");
        }
        if !authority.starts_with('[')
            && !host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        {
            return Err("URL has a malformed host");
        }
        if let Some(port) = port {
            let ok = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p > 0);
            if !ok {
                return Err("URL has a malformed port");
            }
        }
        Ok(Self(s.to_string()))
    }

    /// The full URL, for the request only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `scheme://host[:port]/…` — safe to log.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        format!("{}://{authority}/…", scheme.to_ascii_lowercase())
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

/// A destinations setting that cannot be used. Messages name the channel, never a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Not a JSON object.
    #[error("webhook destinations must be a JSON object mapping channel names to URLs")]
    NotAnObject,
    /// A key that is not a [`Channel`] name.
    #[error("unknown channel {0:?}; known: hot-leads, leads-incoming, ops")]
    UnknownChannel(String),
    /// A channel whose URL is unusable.
    #[error("channel {}: {why}", channel.as_str())]
    InvalidUrl {
        /// The channel.
        channel: Channel,
        /// What is wrong (from [`WebhookUrl::parse`], or "must be a string").
        why: &'static str,
    },
}

impl DestinationError {
    /// Always `config_error`.
    pub fn code(&self) -> &'static str {
        "config_error"
    }
}

/// Where each channel's notifications go. A channel without a URL is not notified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations(BTreeMap<Channel, WebhookUrl>);

impl Destinations {
    /// Parses `{"hot-leads":"https://…","leads-incoming":"https://…","ops":"https://…"}`.
    /// Every key must be a [`Channel`] name (a typo must not silently drop notifications);
    /// any subset may be present.
    pub fn parse(config: &str) -> Result<Self, DestinationError> {
        let value: Value =
            serde_json::from_str(config).map_err(|_| DestinationError::NotAnObject)?;
        let Value::Object(map) = value else {
            return Err(DestinationError::NotAnObject);
        };
        let mut out = BTreeMap::new();
        for (name, url) in map {
            let channel = Channel::parse(&name)
                .ok_or_else(|| DestinationError::UnknownChannel(name.chars().take(32).collect()))?;
            let invalid = |why| DestinationError::InvalidUrl { channel, why };
            let url = url.as_str().ok_or_else(|| invalid("must be a string"))?;
            out.insert(channel, WebhookUrl::parse(url).map_err(invalid)?);
        }
        Ok(Self(out))
    }

    /// The URL for `channel`, if configured.
    pub fn get(&self, channel: Channel) -> Option<&WebhookUrl> {
        self.0.get(&channel)
    }

    /// The configured channels.
    pub fn channels(&self) -> impl Iterator<Item = Channel> + '_ {
        self.0.keys().copied()
    }
}
