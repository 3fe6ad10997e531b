//! The domain events that make up vigia's log, as Rust types.
//!
//! Each kind has a name (stored in `events.kind`), a payload type and a payload schema
//! version. Older payloads are upcast to the current shape when read, so projections only
//! ever see current types. The store (`crate::store`) persists events; it does not know
//! what they mean.

pub mod stream;

use serde::de::value::{Error as NameError, StrDeserializer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::detect::Stance;

/// One of the log's enums from its name, spelt as its JSON spells it (`"on-change"` is
/// `DigestReason::OnChange`): how text from outside serde_json (a column, a label file)
/// becomes one. An unknown name is an error that lists the known ones.
pub fn from_name<T: DeserializeOwned>(name: &str) -> Result<T, NameError> {
    T::deserialize(StrDeserializer::<NameError>::new(name))
}

/// Why a poll failed, as a stable machine-readable kind (also a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollFailureKind {
    Dns,
    Connect,
    Timeout,
    Tls,
    HttpStatus,
    TooLarge,
    TooManyRedirects,
    ForbiddenRedirect,
    Gone,
    NotAFeed,
    Parse,
    Encoding,
    Io,
    Other,
}

impl PollFailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::HttpStatus => "http_status",
            Self::TooLarge => "too_large",
            Self::TooManyRedirects => "too_many_redirects",
            Self::ForbiddenRedirect => "forbidden_redirect",
            Self::Gone => "gone",
            Self::NotAFeed => "not_a_feed",
            Self::Parse => "parse",
            Self::Encoding => "encoding",
            Self::Io => "io",
            Self::Other => "other",
        }
    }
}

/// A configuration was applied (at start, or on reload when it changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigApplied {
    /// SHA-256 of the config file's text.
    pub hash: String,
    pub path: String,
    pub feeds: Vec<String>,
    pub topics: Vec<String>,
    /// Hash of the topic rules alone: classification events name it.
    #[serde(default)]
    pub rules_hash: String,
}

/// A poll answered: 200 with a body, or 304.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedPolled {
    pub feed: String,
    pub url: String,
    pub status: u16,
    pub bytes: u64,
    pub elapsed_ms: u64,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    /// Items in the document (0 for a 304).
    #[serde(default)]
    pub items: u32,
    #[serde(default)]
    pub new_articles: u32,
    #[serde(default)]
    pub revised_articles: u32,
    /// A permanent redirect moved the feed here; later polls use it.
    #[serde(default)]
    pub moved_to: Option<String>,
    /// The server's own floor on the poll interval (Cache-Control max-age, ttl), in seconds.
    #[serde(default)]
    pub min_interval_s: Option<u64>,
}

/// A poll that did not give a usable feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedPollFailed {
    pub feed: String,
    pub url: String,
    pub kind: PollFailureKind,
    pub message: String,
    #[serde(default)]
    pub status: Option<u16>,
    pub elapsed_ms: u64,
    /// Failures in a row, this one included.
    pub streak: u32,
    /// Earliest time the next poll may happen (backoff or Retry-After), RFC 3339.
    #[serde(default)]
    pub retry_not_before: Option<String>,
}

/// The text of an article as vigia stores it: clean text, no markup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleBody {
    pub title: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub lang: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub published: Option<String>,
    #[serde(default)]
    pub outlet: Option<String>,
}

/// The first sighting of an article.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArticleDiscovered {
    pub article_id: String,
    pub feed: String,
    #[serde(default)]
    pub guid: Option<String>,
    #[serde(flatten)]
    pub body: ArticleBody,
    pub content_hash: String,
}

/// A later poll showed a changed title or body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArticleRevised {
    pub article_id: String,
    pub feed: String,
    pub revision: u32,
    #[serde(flatten)]
    pub body: ArticleBody,
    pub content_hash: String,
}

/// A topic an article matched, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicScore {
    pub id: String,
    pub score: f64,
    #[serde(default)]
    pub matched: Vec<String>,
}

/// Detection ran over an article (at ingestion, or when the rules changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArticleClassified {
    pub article_id: String,
    pub feed: String,
    /// The article text that was read.
    pub content_hash: String,
    /// The rules that read it: a hash of the topic config.
    pub rules_hash: String,
    /// Matched topics only; empty when none matched.
    pub topics: Vec<TopicScore>,
}

/// One actor's stance on one issue, read from one sentence of one article.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StanceObserved {
    pub article_id: String,
    pub feed: String,
    pub topic: String,
    pub issue: String,
    pub actor: String,
    pub stance: Stance,
    pub confidence: f64,
    pub evidence: String,
    #[serde(default)]
    pub cues: Vec<String>,
    pub rules_hash: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub outlet: Option<String>,
    #[serde(default)]
    pub published: Option<String>,
}

/// What an operator says an article's reading should have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorrectedStance {
    Support,
    Oppose,
    Neutral,
    /// The article says nothing of that actor on that issue.
    None,
}

/// An operator's label for a stored article (`vigia correct`): one (issue, actor)
/// pair's stance, or whether the article is about the topic at all. Training takes
/// corrected articles as examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingCorrected {
    pub article_id: String,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stance: Option<CorrectedStance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant: Option<bool>,
}

/// One piece of evidence behind a stance: a story, as one of its articles tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub article_id: String,
    pub story: String,
    pub title: String,
    #[serde(default)]
    pub outlet: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub published: Option<String>,
    pub sentence: String,
    pub stance: Stance,
    pub confidence: f64,
}

/// A tracked stance changed (or was first established: `from` is None).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StanceChanged {
    pub topic: String,
    pub issue: String,
    pub actor: String,
    #[serde(default)]
    pub from: Option<Stance>,
    pub to: Stance,
    /// When the stance held before this change began (RFC 3339), if there was one.
    #[serde(default)]
    pub from_since: Option<String>,
    /// The evidence for the new stance: distinct stories within the window.
    pub evidence: Vec<Evidence>,
}

/// Where a subscriber came from, and how one left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionChannel {
    Config,
    Command,
    Web,
    Link,
    OneClick,
}

impl SubscriptionChannel {
    /// Its name in the log and in the `subscribers.via` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Command => "command",
            Self::Web => "web",
            Self::Link => "link",
            Self::OneClick => "one-click",
        }
    }
}

/// A subscription: the payload of SubscriberRequested (pending until confirmed) and of
/// SubscriberConfirmed (receives digests: confirmed by link, or added by the operator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    pub topics: Vec<String>,
    /// "on-change" or a cron schedule.
    pub digest: String,
    pub via: SubscriptionChannel,
    /// The id of a signed link (never the token itself): in a SubscriberConfirmed,
    /// the link that confirmed it, so the link works once; in a SubscriberRequested,
    /// the link mailed to confirm this request and no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriberUnsubscribed {
    pub email: String,
    pub via: SubscriptionChannel,
    /// The id of the signed link that unsubscribed, so the link works once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A message in the outbox: rendered, with its Message-ID, before any attempt to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestQueued {
    pub digest_id: String,
    pub to: String,
    pub subject: String,
    pub message_id: String,
    pub text: String,
    pub html: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The StanceChanged events (by seq) it reports.
    #[serde(default)]
    pub changes: Vec<u64>,
    pub reason: DigestReason,
    /// The signed links the message carries, as placeholders in `text`, `html` and
    /// `headers`: signed when the message is sent, so the log holds no usable token.
    /// Schema 1 messages have none (their links were rendered in; see `upcast_step`).
    #[serde(default)]
    pub links: Vec<LinkSlot>,
    /// Pictures the HTML part shows by Content-ID (the stance timelines), so every
    /// attempt sends the same message. Absent in digests queued before them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<InlineImage>,
}

/// An image carried inside a message: its Content-ID and PNG bytes (base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InlineImage {
    pub cid: String,
    pub png_base64: String,
}

/// Why a message was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DigestReason {
    /// Stance changes since the subscriber's last digest.
    OnChange,
    /// The subscriber's schedule fell due.
    Periodic,
    /// A double opt-in mail with a confirmation link.
    Confirmation,
}

impl DigestReason {
    /// Its name in the log, in the `outbox.reason` column and in digest ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnChange => "on-change",
            Self::Periodic => "periodic",
            Self::Confirmation => "confirmation",
        }
    }
}

/// What a signed link in a queued message allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPurpose {
    Confirm,
    Unsubscribe,
}

/// A signed link that a queued message carries, recorded without its signature: the
/// token is made from these fields and the key when the message is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSlot {
    /// The token's id (for a confirmation, also the request's `token`).
    pub id: String,
    pub purpose: LinkPurpose,
    /// The lower-cased address it is bound to.
    pub subject: String,
    /// Unix seconds.
    pub issued: i64,
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestSent {
    pub digest_id: String,
    pub to: String,
    pub message_id: String,
    pub attempt: u32,
    #[serde(default)]
    pub response: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestFailed {
    pub digest_id: String,
    pub to: String,
    pub attempt: u32,
    /// A permanent refusal (5xx): not retried.
    pub permanent: bool,
    pub error: String,
    #[serde(default)]
    pub retry_not_before: Option<String>,
}

macro_rules! events {
    ($($kind:ident => $payload:ident @ $version:literal),+ $(,)?) => {
        /// Every kind of event vigia records.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $($kind($payload),)+
        }

        /// Every kind name, as stored in `events.kind`.
        pub const KINDS: &[&str] = &[$(stringify!($kind)),+];

        impl Event {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Event::$kind(_) => stringify!($kind),)+
                }
            }

            /// The payload schema version this build writes for the event's kind.
            pub fn schema_version(&self) -> u32 {
                match self {
                    $(Event::$kind(_) => $version,)+
                }
            }

            /// The payload as JSON, ready to store and to hand back without parsing it
            /// again.
            pub fn payload_raw(&self) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
                match self {
                    $(Event::$kind(p) => serde_json::value::to_raw_value(p),)+
                }
            }

            /// Reads a stored payload; one from an older schema version is upcast first.
            pub fn decode(kind: &str, schema_version: u32, payload: &str) -> Result<Event, DecodeError> {
                let failed = |source| DecodeError::Payload { kind: kind.to_string(), source };
                match kind {
                    $(stringify!($kind) => {
                        if schema_version > $version {
                            return Err(DecodeError::TooNew { kind: kind.to_string(), found: schema_version, known: $version });
                        }
                        if schema_version == $version {
                            // The common case reads the text straight into the type.
                            return serde_json::from_str(payload).map(Event::$kind).map_err(failed);
                        }
                        let value: Value = serde_json::from_str(payload).map_err(failed)?;
                        let value = upcast(kind, schema_version, value)?;
                        serde_json::from_value(value).map(Event::$kind).map_err(failed)
                    })+
                    other => Err(DecodeError::UnknownKind(other.to_string())),
                }
            }
        }
    };
}

events! {
    ConfigApplied => ConfigApplied @ 1,
    FeedPolled => FeedPolled @ 1,
    FeedPollFailed => FeedPollFailed @ 1,
    ArticleDiscovered => ArticleDiscovered @ 1,
    ArticleRevised => ArticleRevised @ 1,
    ArticleClassified => ArticleClassified @ 1,
    StanceObserved => StanceObserved @ 1,
    ReadingCorrected => ReadingCorrected @ 1,
    StanceChanged => StanceChanged @ 1,
    SubscriberRequested => Subscription @ 1,
    SubscriberConfirmed => Subscription @ 1,
    SubscriberUnsubscribed => SubscriberUnsubscribed @ 1,
    DigestQueued => DigestQueued @ 2,
    DigestSent => DigestSent @ 1,
    DigestFailed => DigestFailed @ 1,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    #[error(
        "{kind} payload schema {found} is newer than this build knows ({known}); upgrade vigia"
    )]
    TooNew {
        kind: String,
        found: u32,
        known: u32,
    },
    #[error("{kind} payload does not match its schema: {source}")]
    Payload {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Brings a payload written under an older schema version up to the current one.
///
/// Each step rewrites version N into N+1, so a payload from any release reads the same.
/// When a payload changes, bump its version in `events!` and add the N → N+1 step
/// here (a purely additive field could rely on `#[serde(default)]`, but a step says
/// what the older payloads mean).
fn upcast(kind: &str, mut version: u32, mut payload: Value) -> Result<Value, DecodeError> {
    while let Some(next) = upcast_step(kind, version, payload.clone()) {
        payload = next;
        version += 1;
    }
    Ok(payload)
}

fn upcast_step(kind: &str, version: u32, mut payload: Value) -> Option<Value> {
    match (kind, version) {
        // DigestQueued 1 → 2: schema 1 rendered its confirm and unsubscribe links,
        // tokens included, into the message; it carries no slots to sign. Such events
        // stay in old logs (the log is append-only) and are sent as they were.
        ("DigestQueued", 1) => {
            if let Value::Object(map) = &mut payload {
                map.entry("links").or_insert(Value::Array(Vec::new()));
            }
            Some(payload)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_kind_and_payload() {
        let event = Event::FeedPollFailed(FeedPollFailed {
            feed: "f".into(),
            url: "http://127.0.0.1/f.xml".into(),
            kind: PollFailureKind::Timeout,
            message: "timed out".into(),
            status: None,
            elapsed_ms: 10,
            streak: 2,
            retry_not_before: None,
        });
        let json: Value = serde_json::from_str(event.payload_raw().unwrap().get()).unwrap();
        assert_eq!(json["kind"], "timeout");
        let back = Event::decode(
            event.kind(),
            event.schema_version(),
            event.payload_raw().unwrap().get(),
        )
        .unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn refuses_payloads_from_a_newer_schema() {
        let err = Event::decode("FeedPolled", 99, "{}").unwrap_err();
        assert!(
            matches!(err, DecodeError::TooNew { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_schema_1_digest_reads_as_one_with_no_link_slots() {
        let v1 = r#"{"digest_id":"d","to":"a@example.org","subject":"s","message_id":"<m@x>","text":"t","html":"h","reason":"on-change"}"#;
        let Event::DigestQueued(q) = Event::decode("DigestQueued", 1, v1).unwrap() else {
            panic!("not a DigestQueued")
        };
        assert!(q.links.is_empty());
        assert_eq!(q.text, "t");
    }

    #[test]
    fn enum_names_are_their_json() {
        fn json<T: Serialize>(v: T) -> String {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        }
        use SubscriptionChannel as C;
        for c in [C::Config, C::Command, C::Web, C::Link, C::OneClick] {
            assert_eq!(json(c), c.as_str());
            assert_eq!(from_name::<C>(c.as_str()).unwrap(), c);
        }
        use DigestReason as R;
        for r in [R::OnChange, R::Periodic, R::Confirmation] {
            assert_eq!(json(r), r.as_str());
            assert_eq!(from_name::<R>(r.as_str()).unwrap(), r);
        }
        for s in [Stance::Support, Stance::Oppose, Stance::Neutral] {
            assert_eq!(json(s), s.as_str());
            assert_eq!(from_name::<Stance>(s.as_str()).unwrap(), s);
        }
        let unknown = from_name::<Stance>("supports").unwrap_err().to_string();
        assert!(
            unknown.contains("supports") && unknown.contains("`oppose`"),
            "{unknown}"
        );
    }

    #[test]
    fn refuses_unknown_kinds() {
        let err = Event::decode("Bogus", 1, "{}").unwrap_err();
        assert!(matches!(err, DecodeError::UnknownKind(_)));
    }
}
