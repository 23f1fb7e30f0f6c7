//! Signatures: every HMAC-SHA256 Pusher uses, as lowercase hex, each verified in constant
//! time.
//!
//! - Channel authorization (`pusher:subscribe`'s `auth`): `key:hex(HMAC(secret,
//!   "socket_id:channel"))`, and for presence channels `"socket_id:channel:channel_data"`
//!   over the exact `channel_data` string the client sends.
//! - User sign-in (`pusher:signin`'s `auth`): `key:hex(HMAC(secret,
//!   "socket_id::user::user_data"))`.
//! - Webhooks (`X-Pusher-Signature`) and REST requests (`auth_signature`): the same HMAC over
//!   the body, or over the request's canonical string ([`super::rest`]).
//!
//! Socket ids are `^\d+\.\d+$`, the form every server SDK checks before signing; the caller
//! supplies the two random numbers ([`socket_id`]).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why an `auth` string was refused. Messages never quote a signature or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Not of the form `key:signature`.
    #[error("invalid auth format, expected 'key:signature'")]
    Malformed,
    /// The key part is not this app's key.
    #[error("auth key does not match the app key")]
    WrongKey,
    /// The signature does not match.
    #[error("invalid signature")]
    BadSignature,
    /// The socket id is not of the form `digits.digits`.
    #[error("invalid socket_id, expected digits.digits")]
    BadSocketId,
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Lowercase hex HMAC-SHA256 of `message` under `secret`.
pub fn hmac_sha256_hex(secret: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(message);
    hex(&mac.finalize().into_bytes())
}

/// Lowercase hex MD5 of `body` (the REST API's `body_md5`).
pub fn md5_hex(body: &[u8]) -> String {
    hex(&Md5::digest(body))
}

/// Whether `given` is the hex HMAC-SHA256 of `message` under `secret`, compared in constant
/// time. Uppercase hex is accepted: it names the same bytes.
pub fn verify_hex(secret: &str, message: &[u8], given: &str) -> bool {
    let expected = hmac_sha256_hex(secret, message);
    let given = given.to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Whether `id` is a socket id: `^\d+\.\d+$`.
pub fn is_socket_id(id: &str) -> bool {
    match id.split_once('.') {
        Some((a, b)) => {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
            digits(a) && digits(b)
        }
        None => false,
    }
}

/// A socket id from two caller-drawn random numbers: `"{a}.{b}"`. Pusher's own are of this
/// form (`123.456`); the SDKs check the form, not the magnitude.
pub fn socket_id(a: u64, b: u64) -> String {
    format!("{a}.{b}")
}

/// The string a channel authorization signs: `socket_id:channel`, plus `:channel_data` for
/// presence channels.
pub fn channel_string_to_sign(
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The `auth` a client needs to subscribe to `channel` (what an app's auth endpoint
/// returns): `key:signature`.
pub fn sign_channel(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let to_sign = channel_string_to_sign(socket_id, channel, channel_data);
    format!("{key}:{}", hmac_sha256_hex(secret, to_sign.as_bytes()))
}

/// Checks a `pusher:subscribe`'s `auth` for `channel`, signed over `channel_data` when
/// given (presence channels).
pub fn verify_channel(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> Result<(), SignError> {
    let to_sign = channel_string_to_sign(socket_id, channel, channel_data);
    verify_auth(key, secret, to_sign.as_bytes(), auth)
}

/// The string a user sign-in signs: `socket_id::user::user_data`.
pub fn user_string_to_sign(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// The `auth` for a `pusher:signin` of `user_data` (what an app's user-auth endpoint
/// returns beside `user_data`).
pub fn sign_user(key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    let to_sign = user_string_to_sign(socket_id, user_data);
    format!("{key}:{}", hmac_sha256_hex(secret, to_sign.as_bytes()))
}

/// Checks a `pusher:signin`'s `auth` over the exact `user_data` string sent.
pub fn verify_user(
    key: &str,
    secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> Result<(), SignError> {
    let to_sign = user_string_to_sign(socket_id, user_data);
    verify_auth(key, secret, to_sign.as_bytes(), auth)
}

/// The `X-Pusher-Signature` of a webhook body.
pub fn sign_webhook(secret: &str, body: &[u8]) -> String {
    hmac_sha256_hex(secret, body)
}

/// Checks a `key:signature` auth over `message`. The key is not secret; the signature is
/// compared in constant time.
fn verify_auth(key: &str, secret: &str, message: &[u8], auth: &str) -> Result<(), SignError> {
    let (given_key, signature) = auth.split_once(':').ok_or(SignError::Malformed)?;
    if given_key != key {
        return Err(SignError::WrongKey);
    }
    if !verify_hex(secret, message, signature) {
        return Err(SignError::BadSignature);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The credentials of Pusher's "Generating authentication and authorization strings"
    // worked examples.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn pusher_docs_private_channel_example() {
        let auth = sign_channel(KEY, SECRET, "1234.1234", "private-foobar", None);
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert_eq!(
            verify_channel(KEY, SECRET, "1234.1234", "private-foobar", None, &auth),
            Ok(())
        );
        // Another socket, another channel or another secret: refused.
        assert_eq!(
            verify_channel(KEY, SECRET, "1234.1235", "private-foobar", None, &auth),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify_channel(KEY, SECRET, "1234.1234", "private-foobaz", None, &auth),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify_channel(KEY, "other", "1234.1234", "private-foobar", None, &auth),
            Err(SignError::BadSignature)
        );
    }

    #[test]
    fn presence_signatures_cover_the_exact_channel_data() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let auth = sign_channel(KEY, SECRET, "1234.1234", "presence-foobar", Some(data));
        // The docs' presence worked example.
        assert_eq!(
            auth,
            "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
        assert_eq!(
            verify_channel(
                KEY,
                SECRET,
                "1234.1234",
                "presence-foobar",
                Some(data),
                &auth
            ),
            Ok(())
        );
        // Re-serialised channel_data (a space) no longer matches: the string is signed.
        let spaced = r#"{"user_id": 10,"user_info":{"name":"Mr. Channels"}}"#;
        assert_eq!(
            verify_channel(
                KEY,
                SECRET,
                "1234.1234",
                "presence-foobar",
                Some(spaced),
                &auth
            ),
            Err(SignError::BadSignature)
        );
        // Without the channel_data the private form is signed, which is a different string.
        assert_eq!(
            verify_channel(KEY, SECRET, "1234.1234", "presence-foobar", None, &auth),
            Err(SignError::BadSignature)
        );
    }

    #[test]
    fn pusher_http_node_vectors() {
        // tests/integration/pusher/authenticate.js of pusher-http-node.
        assert_eq!(
            sign_channel("11111", "1", "123.456", "test", None),
            "11111:584828bd6e80b2d177d2b28fde07b8e170abf87ccb5a791a50c933711fb8eb28"
        );
        assert_eq!(
            sign_channel("11111", "2", "123.456", "test", None),
            "11111:269bbf3f7625db4e0d0525b617efa5915c3ae667fd222dc8e4cb94bc531f26f2"
        );
        assert_eq!(
            sign_user("1234", "tofu", "123.456", r#"{"id":"45678"}"#),
            "1234:f4b1fdeea7c93e32648c7230e32b172057c5623cace6cfce791c6e7035e0babd"
        );
        assert_eq!(
            verify_user(
                "1234",
                "tofu",
                "123.456",
                r#"{"id":"45678"}"#,
                "1234:f4b1fdeea7c93e32648c7230e32b172057c5623cace6cfce791c6e7035e0babd"
            ),
            Ok(())
        );
    }

    #[test]
    fn user_signin_signs_the_documented_string() {
        assert_eq!(
            user_string_to_sign("1234.1234", r#"{"id":"12345"}"#),
            r#"1234.1234::user::{"id":"12345"}"#
        );
        // The docs' user authentication worked example.
        let auth = sign_user(KEY, SECRET, "1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(
            auth,
            "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
        assert_eq!(
            verify_user(KEY, SECRET, "1234.1234", r#"{"id":"12345"}"#, &auth),
            Ok(())
        );
        assert_eq!(
            verify_user(KEY, SECRET, "1234.1234", r#"{"id":"12346"}"#, &auth),
            Err(SignError::BadSignature)
        );
    }

    #[test]
    fn malformed_and_foreign_auth_strings_are_refused() {
        let good = sign_channel(KEY, SECRET, "1.2", "private-a", None);
        let sig = good.split_once(':').unwrap().1;
        assert_eq!(
            verify_channel(KEY, SECRET, "1.2", "private-a", None, sig),
            Err(SignError::Malformed)
        );
        assert_eq!(
            verify_channel(
                KEY,
                SECRET,
                "1.2",
                "private-a",
                None,
                &format!("other:{sig}")
            ),
            Err(SignError::WrongKey)
        );
        assert_eq!(
            verify_channel(KEY, SECRET, "1.2", "private-a", None, &format!("{KEY}:")),
            Err(SignError::BadSignature)
        );
        // Uppercase hex is the same signature.
        let upper = format!("{KEY}:{}", sig.to_ascii_uppercase());
        assert_eq!(
            verify_channel(KEY, SECRET, "1.2", "private-a", None, &upper),
            Ok(())
        );
    }

    #[test]
    fn socket_ids_are_digits_dot_digits() {
        for ok in ["1234.1234", "0.0", "123.456"] {
            assert!(is_socket_id(ok), "{ok}");
        }
        for bad in [
            "", "1234", "1234.", ".1234", "12a.34", "1.2.3", "-1.2", " 1.2", "1.2\n",
        ] {
            assert!(!is_socket_id(bad), "{bad:?}");
        }
        assert_eq!(socket_id(123, 456), "123.456");
        assert!(is_socket_id(&socket_id(u64::MAX, 0)));
    }

    #[test]
    fn digests_and_hex() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        // pusher-http-node's create_signed_query_string.js.
        assert_eq!(md5_hex(b"example body"), "165d5e6d7ca8f73b3853ce45addf42fc");
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256_hex("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign_webhook("Jefe", b"what do ya want for nothing?").len(),
            64
        );
    }
}
