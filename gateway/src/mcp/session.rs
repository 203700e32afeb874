//! MCP sessions without shared memory: the session id is a signed, self-contained token
//! naming the profile that opened it, its protocol version and when. Any node holding the same
//! server secret accepts it; nothing is stored. A session is not a credential: every request
//! still authenticates, and a session is honoured only for the profile that opened it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::auth::token::TokenSecret;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Signs and opens session ids. The key derives from the server secret, so rotating that
/// secret ends every session.
#[derive(Clone)]
pub struct SessionKeys {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

/// What a session id says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Client and profile that opened it.
    #[serde(rename = "c")]
    pub client: String,
    #[serde(rename = "p")]
    pub profile: String,
    /// The negotiated protocol version.
    #[serde(rename = "v")]
    pub version: String,
    /// When it was opened (Unix seconds).
    #[serde(rename = "t")]
    pub opened: i64,
    /// Makes every id unique.
    #[serde(rename = "n")]
    pub nonce: String,
}

impl SessionKeys {
    pub fn new(secret: &TokenSecret) -> Self {
        Self {
            key: secret.hash("portcullis mcp session key v1"),
        }
    }

    /// The Management MCP's own key: its sessions and the Gateway MCP's never open each
    /// other's.
    pub fn for_management(secret: &TokenSecret) -> Self {
        Self {
            key: secret.hash("portcullis management mcp session key v1"),
        }
    }

    /// A new session id: visible ASCII only (base64url), as the transport requires.
    pub fn issue(&self, client: &str, profile: &str, version: &str, now: i64) -> String {
        let session = Session {
            client: client.to_owned(),
            profile: profile.to_owned(),
            version: version.to_owned(),
            opened: now,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&session).expect("a session serialises"));
        let mac = URL_SAFE_NO_PAD.encode(self.mac(payload.as_bytes()));
        format!("{payload}.{mac}")
    }

    /// The session an id names, if this gateway signed it and it is younger than `ttl_secs`.
    pub fn open(&self, id: &str, now: i64, ttl_secs: i64) -> Option<Session> {
        if id.len() > 1024 {
            return None;
        }
        let (payload, mac) = id.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let mut check = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key");
        check.update(payload.as_bytes());
        check.verify_slice(&mac).ok()?;
        let session: Session =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (session.opened <= now + 60 && now - session.opened < ttl_secs).then_some(session)
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> SessionKeys {
        SessionKeys::new(&TokenSecret::new(secret.repeat(32)).unwrap())
    }

    #[test]
    fn a_session_opens_only_with_its_key_and_within_its_lifetime() {
        let k = keys("a");
        let id = k.issue("acme", "acme-sbx", "2025-11-25", 1_000);
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        let s = k.open(&id, 1_100, 3_600).unwrap();
        assert_eq!(
            (s.client.as_str(), s.profile.as_str()),
            ("acme", "acme-sbx")
        );
        assert_eq!(s.version, "2025-11-25");
        assert!(k.open(&id, 1_000 + 3_600, 3_600).is_none(), "expired");
        assert!(
            keys("b").open(&id, 1_100, 3_600).is_none(),
            "another secret"
        );
        assert_ne!(
            id,
            k.issue("acme", "acme-sbx", "2025-11-25", 1_000),
            "unique"
        );
        // Any change to the payload breaks the signature.
        let (payload, mac) = id.split_once('.').unwrap();
        let mut forged =
            serde_json::from_slice::<Session>(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        forged.profile = "other".into();
        let forged = format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
        );
        assert!(k.open(&forged, 1_100, 3_600).is_none());
        for junk in ["", ".", "x.y", "a.b.c", &"x".repeat(2000)] {
            assert!(k.open(junk, 1_100, 3_600).is_none(), "{junk}");
        }
    }
}
