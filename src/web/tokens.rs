//! Signed links: HMAC-SHA256 tokens that name one subject (a subscriber's address, or
//! a browser's form cookie), one purpose and an expiry, so a confirm or unsubscribe
//! link needs no login and cannot be forged, stretched or turned to another use.
//!
//! The key comes from the environment or a file, never the config, and is never
//! logged. A key file that does not exist yet is created (0600) on first use, so the
//! shipped config works on a fresh machine without a secret to invent. Each token has
//! a random id: the events that a token causes record it, which is how a replayed
//! link is told apart from a fresh one.

use std::io::Write;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// Shortest key accepted: anything shorter is guessable.
pub const MIN_KEY_LEN: usize = 16;
/// Domain separation: a MAC made for anything else never verifies as a token.
const CONTEXT: &[u8] = b"vigia-token-v1\0";

/// What a token allows; a token made for one purpose is refused for every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Confirm,
    Unsubscribe,
    Form,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Confirm => "confirm",
            Purpose::Unsubscribe => "unsubscribe",
            Purpose::Form => "form",
        }
    }

    fn parse(s: &str) -> Option<Purpose> {
        match s {
            "confirm" => Some(Purpose::Confirm),
            "unsubscribe" => Some(Purpose::Unsubscribe),
            "form" => Some(Purpose::Form),
            _ => None,
        }
    }
}

/// A verified token's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub purpose: Purpose,
    /// The lower-cased address (or form cookie) the token is bound to.
    pub subject: String,
    /// Unix seconds.
    pub issued: i64,
    pub expires: i64,
    /// Random, unique per token: recorded by the event the token causes.
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is incomplete or damaged")]
    Malformed,
    #[error("the link's signature does not match")]
    Forged,
    #[error("the link was made for something else")]
    WrongPurpose,
    #[error("the link has expired")]
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("web secret: {0}")]
    Unreadable(std::io::Error),
    #[error("web secret: cannot create the key file {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("web secret: the key is {0} bytes long; it must be at least {MIN_KEY_LEN}")]
    TooShort(usize),
    #[error("web secret: no randomness from the operating system: {0}")]
    Random(String),
}

/// The key that signs links. Its Debug output never shows the key.
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Random bytes from the operating system, as hex.
pub fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

impl SigningKey {
    pub fn from_bytes(key: &[u8]) -> Result<SigningKey, KeyError> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(SigningKey(Arc::from(key)))
    }

    /// Reads the key; a key file that does not exist yet is created with a fresh
    /// random key, readable by its owner only.
    pub fn load(secret: &Secret) -> Result<SigningKey, KeyError> {
        if let Secret::File(path) = secret {
            if !path.exists() {
                create_key_file(path)?;
            }
        }
        let text = secret.read().map_err(KeyError::Unreadable)?;
        SigningKey::from_bytes(text.trim().as_bytes())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(CONTEXT);
        mac
    }

    /// A token for `purpose` bound to `subject`, valid from `now` for `ttl_s` seconds.
    pub fn sign(
        &self,
        purpose: Purpose,
        subject: &str,
        now: i64,
        ttl_s: i64,
    ) -> Result<String, KeyError> {
        let id = random_hex(12)?;
        Ok(self.sign_with_id(purpose, subject, now, ttl_s, &id))
    }

    fn sign_with_id(
        &self,
        purpose: Purpose,
        subject: &str,
        now: i64,
        ttl_s: i64,
        id: &str,
    ) -> String {
        let payload = format!(
            "{}|{}|{}|{}|{}",
            purpose.as_str(),
            now,
            now + ttl_s,
            id,
            subject.to_lowercase()
        );
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Checks the signature (in constant time), then the purpose, then the expiry.
    pub fn verify(&self, token: &str, purpose: Purpose, now: i64) -> Result<Token, TokenError> {
        let (payload, tag) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| TokenError::Forged)?;
        // Signed by us: the fields are ours, but still parsed without trust.
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let mut fields = payload.splitn(5, '|');
        let mut next = || fields.next().ok_or(TokenError::Malformed);
        let found = Purpose::parse(next()?).ok_or(TokenError::Malformed)?;
        let issued: i64 = next()?.parse().map_err(|_| TokenError::Malformed)?;
        let expires: i64 = next()?.parse().map_err(|_| TokenError::Malformed)?;
        let id = next()?.to_string();
        let subject = next()?.to_string();
        if found != purpose {
            return Err(TokenError::WrongPurpose);
        }
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Token {
            purpose: found,
            subject,
            issued,
            expires,
            id,
        })
    }
}

/// How long a confirmation link works.
pub const CONFIRM_TTL_S: i64 = 48 * 3600;
/// How long a digest's unsubscribe link works: long, since people unsubscribe from
/// old mails too (the mailto in List-Unsubscribe works for ever).
pub const UNSUBSCRIBE_TTL_S: i64 = 366 * 24 * 3600;

/// Makes the signed links that mails carry: `{public_url}/subscribe/confirm?token=…`
/// and `{public_url}/unsubscribe?token=…`.
#[derive(Debug, Clone)]
pub struct LinkSigner {
    base: String,
    key: SigningKey,
}

impl LinkSigner {
    /// The signer for this config, or None where it has no `[web]` section.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<LinkSigner>, KeyError> {
        let Some(web) = &config.web else {
            return Ok(None);
        };
        Ok(Some(LinkSigner {
            base: web.public_url.as_str().trim_end_matches('/').to_string(),
            key: SigningKey::load(&web.secret)?,
        }))
    }

    pub fn new(base: &str, key: SigningKey) -> LinkSigner {
        LinkSigner {
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn page(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn unsubscribe_url(&self, email: &str, now: i64) -> Result<String, KeyError> {
        let token = self
            .key
            .sign(Purpose::Unsubscribe, email, now, UNSUBSCRIBE_TTL_S)?;
        Ok(format!("{}/unsubscribe?token={token}", self.base))
    }

    pub fn confirm_url(&self, email: &str, now: i64) -> Result<String, KeyError> {
        let token = self.key.sign(Purpose::Confirm, email, now, CONFIRM_TTL_S)?;
        Ok(format!("{}/subscribe/confirm?token={token}", self.base))
    }
}

fn create_key_file(path: &std::path::Path) -> Result<(), KeyError> {
    let create_err = |source| KeyError::Create {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(create_err)?;
    }
    let key = random_hex(32)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(format!("{key}\n").as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(create_err)?;
            tracing::info!(path = %path.display(), "created a new key for signing links");
            Ok(())
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(create_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> SigningKey {
        SigningKey::from_bytes(k.as_bytes()).unwrap()
    }

    #[test]
    fn a_token_verifies_for_its_purpose_and_subject() {
        let k = key("0123456789abcdef-key");
        let t = k
            .sign(Purpose::Confirm, "Ana@Example.org", 1000, 60)
            .unwrap();
        let got = k.verify(&t, Purpose::Confirm, 1030).unwrap();
        assert_eq!(got.subject, "ana@example.org");
        assert_eq!((got.issued, got.expires), (1000, 1060));
        assert_eq!(got.id.len(), 24);
    }

    #[test]
    fn every_token_has_its_own_id() {
        let k = key("0123456789abcdef-key");
        let a = k.sign(Purpose::Confirm, "a@example.org", 1000, 60).unwrap();
        let b = k.sign(Purpose::Confirm, "a@example.org", 1000, 60).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn forged_expired_and_wrong_purpose_tokens_are_refused() {
        let k = key("0123456789abcdef-key");
        let other = key("another-key-0123456789");
        let t = k
            .sign(Purpose::Unsubscribe, "a@example.org", 1000, 60)
            .unwrap();
        assert_eq!(
            other.verify(&t, Purpose::Unsubscribe, 1001),
            Err(TokenError::Forged)
        );
        assert_eq!(
            k.verify(&t, Purpose::Confirm, 1001),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            k.verify(&t, Purpose::Unsubscribe, 1060),
            Err(TokenError::Expired)
        );
        assert_eq!(
            k.verify("", Purpose::Unsubscribe, 1001),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            k.verify("abc.def!", Purpose::Unsubscribe, 1001),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn changing_the_subject_or_expiry_breaks_the_signature() {
        let k = key("0123456789abcdef-key");
        let t = k
            .sign(Purpose::Unsubscribe, "a@example.org", 1000, 60)
            .unwrap();
        let (payload, tag) = t.split_once('.').unwrap();
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        for edited in [
            text.replace("a@example.org", "b@example.org"),
            text.replace("|1060|", "|9999999999|"),
            text.replace("unsubscribe|", "confirm|"),
        ] {
            let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(edited));
            assert_eq!(
                k.verify(&forged, Purpose::Unsubscribe, 1001),
                Err(TokenError::Forged)
            );
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            SigningKey::from_bytes(b"short"),
            Err(KeyError::TooShort(5))
        ));
    }

    #[test]
    fn a_missing_key_file_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/web.secret");
        let secret = Secret::File(path.clone());
        let first = SigningKey::load(&secret).unwrap();
        let t = first
            .sign(Purpose::Confirm, "a@example.org", 1000, 60)
            .unwrap();
        let again = SigningKey::load(&secret).unwrap();
        assert!(again.verify(&t, Purpose::Confirm, 1001).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
