//! Admission decisions of a connection, composed from [`super::channel`], [`super::sign`]
//! and [`super::presence`]: whether a `pusher:subscribe` may join its channel (and as which
//! presence member), and whether a `pusher:signin` is genuine.
//!
//! A presence subscription normally carries `channel_data`, signed with the channel. With
//! `pusher-js` 8 it may instead omit `channel_data` when the connection has signed in: the
//! signature then covers `socket_id:channel` only and the member is the signed-in user
//! (`id`, `user_info`). `#server-to-user-{id}` needs no signature, only a connection signed
//! in as `id`. Failures carry the `status` of the `pusher:subscription_error` to send
//! ([`super::wire::subscription_error_frame`]).

use super::channel::{self, ChannelKind, ChannelType};
use super::presence::{self, Member, PresenceError, SigninUser};
use super::sign::{self, SignError};
use super::Limits;

/// What a subscription was admitted as.
#[derive(Debug, Clone, PartialEq)]
pub enum Admitted {
    /// A channel without members: public, private, encrypted or server-to-user.
    Channel,
    /// A presence channel, as this member.
    Member(Member),
}

/// Why a subscription or a sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The channel needs `auth` and none was sent.
    #[error("auth is required for {0} channels")]
    MissingAuth(&'static str),
    /// The `auth` string is wrong.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// A presence subscription without `channel_data` from a connection that has not
    /// signed in.
    #[error("presence channels need channel_data, or a signed-in connection")]
    MissingChannelData,
    /// `channel_data` or `user_data` is not acceptable.
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// A `#server-to-user-` channel of another user, or before sign-in.
    #[error("only the connection signed in as this user may subscribe")]
    NotThisUser,
}

impl AdmitError {
    /// The `status` for `pusher:subscription_error`: 400 for malformed data, 403 for another
    /// user's channel, 401 for everything about signatures.
    pub fn status(&self) -> u16 {
        match self {
            Self::Presence(PresenceError::TooManyMembers { .. }) | Self::NotThisUser => 403,
            Self::Presence(_) | Self::MissingChannelData => 400,
            Self::MissingAuth(_) | Self::Sign(_) => 401,
        }
    }
}

/// A decoded `pusher:subscribe`, as [`super::wire::ClientFrame::Subscribe`] carries it.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeRequest<'a> {
    /// The channel (validated).
    pub channel: &'a str,
    /// Its classification.
    pub channel_type: ChannelType,
    /// The `auth`, if sent and non-empty.
    pub auth: Option<&'a str>,
    /// The presence `channel_data`, if sent.
    pub channel_data: Option<&'a str>,
}

/// Decides a subscription of connection `socket_id` of the app with `key` and `secret`,
/// signed in as `signed_in` if it has. Presence membership limits are the caller's
/// ([`presence::admit`]), since they need the channel's state.
pub fn subscribe(
    key: &str,
    secret: &str,
    socket_id: &str,
    req: &SubscribeRequest<'_>,
    signed_in: Option<&SigninUser>,
    limits: &Limits,
) -> Result<Admitted, AdmitError> {
    let kind_name = match req.channel_type.kind {
        ChannelKind::Public => return Ok(Admitted::Channel),
        ChannelKind::ServerToUser => {
            let owner = channel::server_to_user_id(req.channel);
            return match (owner, signed_in) {
                (Some(owner), Some(user)) if owner == user.id => Ok(Admitted::Channel),
                _ => Err(AdmitError::NotThisUser),
            };
        }
        ChannelKind::Private => "private",
        ChannelKind::PrivateEncrypted => "private-encrypted",
        ChannelKind::Presence => "presence",
    };
    let auth = req.auth.ok_or(AdmitError::MissingAuth(kind_name))?;
    if !req.channel_type.is_presence() {
        sign::verify_channel(key, secret, socket_id, req.channel, None, auth)?;
        return Ok(Admitted::Channel);
    }
    match (req.channel_data, signed_in) {
        (Some(data), _) => {
            sign::verify_channel(key, secret, socket_id, req.channel, Some(data), auth)?;
            Ok(Admitted::Member(presence::parse_channel_data(
                data, limits,
            )?))
        }
        (None, Some(user)) => {
            sign::verify_channel(key, secret, socket_id, req.channel, None, auth)?;
            Ok(Admitted::Member(Member {
                user_id: user.id.clone(),
                user_info: user.user_info.clone(),
            }))
        }
        (None, None) => Err(AdmitError::MissingChannelData),
    }
}

/// Decides a `pusher:signin`: the signature over the exact `user_data`, then its content.
/// On success the gateway answers [`super::wire::signin_success_frame`] and the client
/// subscribes to `#server-to-user-{id}`.
pub fn signin(
    key: &str,
    secret: &str,
    socket_id: &str,
    auth: &str,
    user_data: &str,
    limits: &Limits,
) -> Result<SigninUser, AdmitError> {
    sign::verify_user(key, secret, socket_id, user_data, auth)?;
    Ok(presence::parse_user_data(user_data, limits)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";
    const SOCKET: &str = "1234.1234";

    fn req<'a>(
        channel: &'a str,
        auth: Option<&'a str>,
        channel_data: Option<&'a str>,
    ) -> SubscribeRequest<'a> {
        SubscribeRequest {
            channel,
            channel_type: channel::classify(channel),
            auth,
            channel_data,
        }
    }

    fn admit(r: &SubscribeRequest<'_>, user: Option<&SigninUser>) -> Result<Admitted, AdmitError> {
        subscribe(KEY, SECRET, SOCKET, r, user, &Limits::default())
    }

    fn user(id: &str) -> SigninUser {
        SigninUser {
            id: id.into(),
            user_info: Some(json!({"name": "Ada"})),
            watchlist: vec![],
        }
    }

    #[test]
    fn public_channels_need_nothing_private_ones_a_signature() {
        assert_eq!(admit(&req("news", None, None), None), Ok(Admitted::Channel));
        assert_eq!(
            admit(&req("cache-news", None, None), None),
            Ok(Admitted::Channel)
        );
        let auth = sign::sign_channel(KEY, SECRET, SOCKET, "private-foobar", None);
        assert_eq!(
            admit(&req("private-foobar", Some(&auth), None), None),
            Ok(Admitted::Channel)
        );
        let e = admit(&req("private-foobar", None, None), None).unwrap_err();
        assert_eq!(e, AdmitError::MissingAuth("private"));
        assert_eq!(e.status(), 401);
        let e = admit(&req("private-other", Some(&auth), None), None).unwrap_err();
        assert_eq!(e, AdmitError::Sign(SignError::BadSignature));
        assert_eq!(e.status(), 401);
        let enc = sign::sign_channel(KEY, SECRET, SOCKET, "private-encrypted-a", None);
        assert_eq!(
            admit(&req("private-encrypted-a", Some(&enc), None), None),
            Ok(Admitted::Channel)
        );
    }

    #[test]
    fn presence_members_come_from_signed_channel_data() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let auth = sign::sign_channel(KEY, SECRET, SOCKET, "presence-foobar", Some(data));
        assert_eq!(
            admit(&req("presence-foobar", Some(&auth), Some(data)), None),
            Ok(Admitted::Member(Member {
                user_id: "10".into(),
                user_info: Some(json!({"name": "Mr. Channels"}))
            }))
        );
        // Tampered channel_data fails the signature before it is parsed.
        let forged = r#"{"user_id":11,"user_info":{"name":"Mr. Channels"}}"#;
        assert_eq!(
            admit(&req("presence-foobar", Some(&auth), Some(forged)), None),
            Err(AdmitError::Sign(SignError::BadSignature))
        );
        // Signed but unusable channel_data is a 400.
        let bad = r#"{"user_info":{}}"#;
        let auth = sign::sign_channel(KEY, SECRET, SOCKET, "presence-foobar", Some(bad));
        let e = admit(&req("presence-foobar", Some(&auth), Some(bad)), None).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn signed_in_connections_may_omit_channel_data() {
        let auth = sign::sign_channel(KEY, SECRET, SOCKET, "presence-a", None);
        let u = user("42");
        assert_eq!(
            admit(&req("presence-a", Some(&auth), None), Some(&u)),
            Ok(Admitted::Member(Member {
                user_id: "42".into(),
                user_info: Some(json!({"name": "Ada"}))
            }))
        );
        let e = admit(&req("presence-a", Some(&auth), None), None).unwrap_err();
        assert_eq!(e, AdmitError::MissingChannelData);
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn server_to_user_channels_need_that_signed_in_user() {
        let r = req("#server-to-user-42", None, None);
        assert_eq!(admit(&r, Some(&user("42"))), Ok(Admitted::Channel));
        let e = admit(&r, Some(&user("43"))).unwrap_err();
        assert_eq!(e, AdmitError::NotThisUser);
        assert_eq!(e.status(), 403);
        assert_eq!(admit(&r, None), Err(AdmitError::NotThisUser));
    }

    #[test]
    fn signin_checks_the_signature_then_the_user_data() {
        let data = r#"{"id":"12345"}"#;
        let auth = sign::sign_user(KEY, SECRET, SOCKET, data);
        let u = signin(KEY, SECRET, SOCKET, &auth, data, &Limits::default()).unwrap();
        assert_eq!(u.id, "12345");
        assert_eq!(
            signin(KEY, SECRET, "1.1", &auth, data, &Limits::default()),
            Err(AdmitError::Sign(SignError::BadSignature))
        );
        let numeric = r#"{"id":12345}"#;
        let auth = sign::sign_user(KEY, SECRET, SOCKET, numeric);
        let e = signin(KEY, SECRET, SOCKET, &auth, numeric, &Limits::default()).unwrap_err();
        assert_eq!(
            e,
            AdmitError::Presence(PresenceError::Malformed("user_data id"))
        );
    }
}
