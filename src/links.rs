//! Signed links: HMAC-SHA256 tokens that name one subject (a subscriber's address, or
//! a browser's form cookie), one purpose and an expiry, so a confirm or unsubscribe
//! link needs no login and cannot be forged, stretched or turned to another use.
//!
//! The key comes from the environment or a file, never the config, and is never
//! logged. The daemon loads it once at start and on SIGHUP: a key file that does not
//! exist at start is created (0600, in folders made 0700), so the shipped config works
//! on a fresh machine without a secret to invent; one that disappears or changes while
//! the daemon runs is reported, never silently replaced or used.
//!
//! Each token has a random id: the events that a token causes record it, which is how
//! a replayed link is told apart from a fresh one. Messages in the outbox hold no
//! token at all: they hold a placeholder and a [`LinkSlot`] (id, purpose, subject,
//! times), and [`LinkSigner::fill`] signs the link when the message is sent. Signing is
//! deterministic, so every attempt sends the same bytes, and nothing in the event log
//! or a backup of it can confirm or unsubscribe anyone.

use std::io::Write;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{check_key_strength, Secret, WeakKey};
use crate::events::{LinkPurpose, LinkSlot};

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
    #[error("web secret: {0}")]
    Weak(#[from] WeakKey),
    #[error("web secret: the key file {0} does not exist (it is created only when the daemon starts; restore it, or restart to make a new one, which breaks every link sent so far)")]
    Missing(String),
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

/// Whether a missing key file may be created (only when the daemon starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFile {
    CreateIfMissing,
    MustExist,
}

impl SigningKey {
    pub fn from_bytes(key: &[u8]) -> Result<SigningKey, KeyError> {
        check_key_strength(key)?;
        Ok(SigningKey(Arc::from(key)))
    }

    /// Reads the key; with `CreateIfMissing`, a key file that does not exist yet is
    /// created with a fresh random key, readable by its owner only.
    pub fn load(secret: &Secret, missing: KeyFile) -> Result<SigningKey, KeyError> {
        if let Secret::File(path) = secret {
            if !path.exists() {
                match missing {
                    KeyFile::CreateIfMissing => create_key_file(path)?,
                    KeyFile::MustExist => {
                        return Err(KeyError::Missing(path.display().to_string()))
                    }
                }
            }
        }
        let text = secret.read().map_err(KeyError::Unreadable)?;
        SigningKey::from_bytes(text.trim().as_bytes())
    }

    /// Whether `text` (a key file's content) holds this key.
    fn is(&self, text: &str) -> bool {
        use subtle::ConstantTimeEq;
        text.trim().as_bytes().ct_eq(&self.0).into()
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

    /// The token for a recorded link: the same slot always gives the same token.
    pub fn sign_slot(&self, slot: &LinkSlot) -> String {
        let purpose = match slot.purpose {
            LinkPurpose::Confirm => Purpose::Confirm,
            LinkPurpose::Unsubscribe => Purpose::Unsubscribe,
        };
        self.sign_with_id(
            purpose,
            &slot.subject,
            slot.issued,
            slot.expires - slot.issued,
            &slot.id,
        )
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
/// and `{public_url}/unsubscribe?token=…`. Loaded once (daemon start, SIGHUP) and
/// shared: requests never read the key file.
#[derive(Debug, Clone)]
pub struct LinkSigner {
    base: String,
    key: SigningKey,
    /// Where the key came from, to tell whether the file still holds it.
    source: Option<Secret>,
}

/// What the key file holds now, compared with the key in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileState {
    /// The file holds the key in use (or the key comes from the environment).
    InUse,
    /// The file is gone: links keep working until a restart would create a new key.
    Missing(String),
    /// The file holds another key (or cannot be read): it is used only after SIGHUP.
    Changed(String),
}

impl KeyFileState {
    /// A line for the log and /healthz, or None when all is well.
    pub fn problem(&self) -> Option<String> {
        match self {
            KeyFileState::InUse => None,
            KeyFileState::Missing(path) => Some(format!(
                "the web key file {path} has disappeared; links keep working with the key loaded at start, and SIGHUP is refused until it is restored"
            )),
            KeyFileState::Changed(path) => Some(format!(
                "the web key file {path} no longer holds the key in use; it takes effect only at SIGHUP or restart, when every link signed so far stops working"
            )),
        }
    }
}

/// The text in a queued message where a slot's token goes. Only letters, digits and
/// hyphens, so HTML escaping and URL encoding leave it whole.
pub fn placeholder(slot_id: &str) -> String {
    format!("vigia-link-{slot_id}")
}

impl LinkSigner {
    /// The signer for this config, or None where it has no `[web]` section.
    pub fn from_config(
        config: &crate::config::Config,
        missing: KeyFile,
    ) -> Result<Option<LinkSigner>, KeyError> {
        let Some(web) = &config.web else {
            return Ok(None);
        };
        Ok(Some(LinkSigner {
            base: web.public_url.as_str().trim_end_matches('/').to_string(),
            key: SigningKey::load(&web.secret, missing)?,
            source: Some(web.secret.clone()),
        }))
    }

    pub fn new(base: &str, key: SigningKey) -> LinkSigner {
        LinkSigner {
            base: base.trim_end_matches('/').to_string(),
            key,
            source: None,
        }
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn page(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Compares the key file with the key in use (the environment cannot change).
    pub fn key_file_state(&self) -> KeyFileState {
        let Some(Secret::File(path)) = &self.source else {
            return KeyFileState::InUse;
        };
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) if self.key.is(&text) => KeyFileState::InUse,
            Ok(_) => KeyFileState::Changed(shown),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFileState::Missing(shown),
            Err(_) => KeyFileState::Changed(shown),
        }
    }

    fn slot(
        &self,
        purpose: LinkPurpose,
        subject: &str,
        now: i64,
        ttl_s: i64,
    ) -> Result<LinkSlot, KeyError> {
        Ok(LinkSlot {
            id: random_hex(12)?,
            purpose,
            subject: subject.to_lowercase(),
            issued: now,
            expires: now + ttl_s,
        })
    }

    /// An unsubscribe link to put in a message: its URL with a placeholder for the
    /// token, and the slot that [`fill`](Self::fill) signs it from when sending.
    pub fn unsubscribe_slot(&self, email: &str, now: i64) -> Result<(String, LinkSlot), KeyError> {
        let slot = self.slot(LinkPurpose::Unsubscribe, email, now, UNSUBSCRIBE_TTL_S)?;
        let url = format!("{}/unsubscribe?token={}", self.base, placeholder(&slot.id));
        Ok((url, slot))
    }

    /// A confirmation link, as [`unsubscribe_slot`](Self::unsubscribe_slot); the slot's
    /// id is recorded with the request it confirms.
    pub fn confirm_slot(&self, email: &str, now: i64) -> Result<(String, LinkSlot), KeyError> {
        let slot = self.slot(LinkPurpose::Confirm, email, now, CONFIRM_TTL_S)?;
        let url = format!(
            "{}/subscribe/confirm?token={}",
            self.base,
            placeholder(&slot.id)
        );
        Ok((url, slot))
    }

    /// `text` with every slot's placeholder replaced by its signed token.
    pub fn fill(&self, text: &str, slots: &[LinkSlot]) -> String {
        let mut out = text.to_string();
        for slot in slots {
            out = out.replace(&placeholder(&slot.id), &self.key.sign_slot(slot));
        }
        out
    }
}

fn create_key_file(path: &std::path::Path) -> Result<(), KeyError> {
    let create_err = |source| KeyError::Create {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Folders made for the key are its owner's alone (existing ones are left as
        // they are: they may be shared on purpose).
        let mut folders = std::fs::DirBuilder::new();
        folders.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            folders.mode(0o700);
        }
        folders.create(parent).map_err(create_err)?;
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
            tracing::warn!(path = %path.display(), "created a new key for signing links (links signed with any earlier key no longer work)");
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
            Err(KeyError::Weak(WeakKey::TooShort(5)))
        ));
    }

    #[test]
    fn predictable_keys_are_refused() {
        for weak in [
            "aaaaaaaaaaaaaaaa",
            "abababababababababab",
            "0000111100001111",
        ] {
            assert!(
                matches!(
                    SigningKey::from_bytes(weak.as_bytes()),
                    Err(KeyError::Weak(WeakKey::TooPredictable(_)))
                ),
                "{weak}"
            );
        }
        // A random hex key of 16 characters and the test keys pass.
        for fine in [
            "9f86d081884c7d65",
            "0123456789abcdef-key",
            "unit-test-key-0123456789",
        ] {
            assert!(SigningKey::from_bytes(fine.as_bytes()).is_ok(), "{fine}");
        }
    }

    #[test]
    fn a_slot_is_signed_the_same_way_every_time_and_verifies_for_its_purpose() {
        let signer = LinkSigner::new("https://v.example.org/", key("0123456789abcdef-key"));
        let (url, slot) = signer.unsubscribe_slot("Ana@Example.org", 1000).unwrap();
        assert_eq!(
            url,
            format!(
                "https://v.example.org/unsubscribe?token=vigia-link-{}",
                slot.id
            )
        );
        let text = format!("<a href=\"{url}\">{url}</a>");
        let once = signer.fill(&text, std::slice::from_ref(&slot));
        let twice = signer.fill(&text, std::slice::from_ref(&slot));
        assert_eq!(once, twice, "the same bytes on every attempt");
        assert!(!once.contains("vigia-link-"));
        let token = once
            .split("token=")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .unwrap();
        let got = signer
            .key()
            .verify(token, Purpose::Unsubscribe, 1001)
            .unwrap();
        assert_eq!(
            (got.subject.as_str(), got.id.as_str()),
            ("ana@example.org", slot.id.as_str())
        );
        assert_eq!(got.expires, 1000 + UNSUBSCRIBE_TTL_S);
    }

    #[test]
    fn a_missing_key_file_is_not_created_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = Secret::File(dir.path().join("web.secret"));
        assert!(matches!(
            SigningKey::load(&secret, KeyFile::MustExist),
            Err(KeyError::Missing(_))
        ));
        assert!(!dir.path().join("web.secret").exists());
    }

    #[test]
    fn a_missing_key_file_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/web.secret");
        let secret = Secret::File(path.clone());
        let first = SigningKey::load(&secret, KeyFile::CreateIfMissing).unwrap();
        let t = first
            .sign(Purpose::Confirm, "a@example.org", 1000, 60)
            .unwrap();
        let again = SigningKey::load(&secret, KeyFile::MustExist).unwrap();
        assert!(again.verify(&t, Purpose::Confirm, 1001).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let folder = std::fs::metadata(dir.path().join("keys")).unwrap();
            assert_eq!(
                folder.permissions().mode() & 0o777,
                0o700,
                "new folders are the owner's"
            );
        }
    }
}
