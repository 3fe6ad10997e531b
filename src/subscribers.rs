//! Subscriptions as events: the config's subscribers applied when the config is, the
//! operator's `vigia subscribers add/remove`, and self-service from the web: a request
//! (pending, with a confirmation mail in the outbox), its confirmation by a signed
//! link, and unsubscribing by a signed link or one-click POST.
//!
//! Someone who unsubscribed by link is not put back by a config that still names them
//! (their choice wins; the log says so). Every link works once: the event it causes
//! records the token's id. A confirmation link confirms the request it was sent for
//! (the request records the link's id), never a later one. Nothing here knows HTTP;
//! `crate::web` turns outcomes into pages.

use chrono::{DateTime, Utc};

use crate::config::{Config, DigestMode, SubscriberConfig};
use crate::digest::{ConfirmationDraft, RenderError, Templates};
use crate::events::stream;
use crate::events::{Event, SubscriberUnsubscribed, Subscription, SubscriptionChannel};
use crate::links::{KeyError, LinkSigner, Purpose, Token, TokenError, CONFIRM_TTL_S};
use crate::projections::{self, Outbox, SubscriberRow, SubscriberStatus, Subscribers};
use crate::store::{append_in, stream_events, NewEvent, SqliteStore, StoreError};
use rusqlite::Connection;

/// At most one confirmation mail per address in this many seconds.
pub const CONFIRMATION_GAP_S: i64 = 3600;
/// At most this many confirmation mails in an hour, over all addresses: the form
/// cannot be turned into a mail cannon by spreading requests over many addresses.
pub const CONFIRMATIONS_PER_HOUR: u64 = 200;

fn digest_text(mode: &DigestMode) -> String {
    match mode {
        DigestMode::OnChange => "on-change".into(),
        DigestMode::Every(s) => s.source().to_string(),
    }
}

/// Records the changes between the config's subscribers and the recorded ones.
/// Returns how many events it appended.
pub fn apply_config(store: &SqliteStore, config: &Config) -> Result<usize, StoreError> {
    projections::catch_up(store)?;
    let known: Vec<SubscriberRow> = store.read(Subscribers::all)?;
    let mut batch = Vec::new();
    for sub in &config.subscribers {
        let digest = digest_text(&sub.digest);
        let row = known.iter().find(|k| k.email == sub.email.to_lowercase());
        let left_by_choice = row.is_some_and(|r| {
            r.status == SubscriberStatus::Unsubscribed
                && !matches!(
                    r.via,
                    SubscriptionChannel::Config | SubscriptionChannel::Command
                )
        });
        if left_by_choice {
            tracing::warn!(email = %sub.email, "still in the config but unsubscribed by link: not subscribed again");
            continue;
        }
        let same = row.is_some_and(|r| {
            r.status == SubscriberStatus::Confirmed
                && r.topics == sub.topics
                && r.digest == digest
                && r.name == sub.name
        });
        if !same {
            batch.push(confirmed_event(sub, &digest, SubscriptionChannel::Config));
        }
    }
    for row in &known {
        let in_config = config
            .subscribers
            .iter()
            .any(|s| s.email.to_lowercase() == row.email);
        if !in_config
            && row.status == SubscriberStatus::Confirmed
            && row.via == SubscriptionChannel::Config
        {
            batch.push(NewEvent::new(
                stream::subscriber(&row.email),
                Event::SubscriberUnsubscribed(SubscriberUnsubscribed {
                    email: row.address.clone(),
                    via: SubscriptionChannel::Config,
                    token: None,
                }),
            ));
        }
    }
    let n = batch.len();
    store.append(batch)?;
    Ok(n)
}

fn confirmed_event(sub: &SubscriberConfig, digest: &str, via: SubscriptionChannel) -> NewEvent {
    NewEvent::new(
        stream::subscriber(&sub.email),
        Event::SubscriberConfirmed(Subscription {
            email: sub.email.clone(),
            name: sub.name.clone(),
            topics: sub.topics.clone(),
            digest: digest.to_string(),
            via,
            token: None,
        }),
    )
}

/// `vigia subscribers add`: confirmed at once (the operator vouches for the address).
pub fn add(store: &SqliteStore, sub: &SubscriberConfig) -> Result<(), StoreError> {
    store.append_one(confirmed_event(
        sub,
        &digest_text(&sub.digest),
        SubscriptionChannel::Command,
    ))?;
    Ok(())
}

/// `vigia subscribers remove`. Returns false when the address was not subscribed.
pub fn remove(store: &SqliteStore, email: &str) -> Result<bool, StoreError> {
    projections::catch_up(store)?;
    let known = store.read(Subscribers::all)?;
    let Some(row) = known
        .iter()
        .find(|k| k.email == email.to_lowercase() && k.status != SubscriberStatus::Unsubscribed)
    else {
        return Ok(false);
    };
    store.append_one(NewEvent::new(
        stream::subscriber(&row.email),
        Event::SubscriberUnsubscribed(SubscriberUnsubscribed {
            email: row.address.clone(),
            via: SubscriptionChannel::Command,
            token: None,
        }),
    ))?;
    Ok(true)
}

/// A digest mode that self-service offers: the value a form sends, how the form names
/// it, and the schedule the subscription records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestOffer {
    pub value: &'static str,
    pub label: &'static str,
    pub schedule: &'static str,
}

/// The digest modes a self-service subscriber chooses from; the first is the default.
pub const DIGEST_OFFERS: &[DigestOffer] = &[
    DigestOffer {
        value: "on-change",
        label: "When a stance changes",
        schedule: "on-change",
    },
    DigestOffer {
        value: "daily",
        label: "Daily, at 07:00 UTC",
        schedule: "0 7 * * *",
    },
    DigestOffer {
        value: "weekly",
        label: "Weekly, Mondays at 07:00 UTC",
        schedule: "0 7 * * 1",
    },
];

/// The longest address a request may name (RFC 5321's path limit).
const MAX_ADDRESS_LEN: usize = 254;

/// What a subscription request from the web asks for, validated (`Request::validate`).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub email: String,
    pub topics: Vec<String>,
    /// "on-change" or a cron schedule.
    pub digest: String,
}

/// What is wrong with a request: the first fault found, in the order below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("not one email address")]
    Address,
    #[error("no topic chosen")]
    NoTopic,
    #[error("a topic the config does not watch")]
    UnknownTopic,
    #[error("a digest mode that is not on offer")]
    UnknownDigest,
}

impl Request {
    /// Checks what a visitor asked for: one address (surrounding spaces dropped), at
    /// least one topic, every topic one the config watches (and no more of them than
    /// it has), and a digest mode from `DIGEST_OFFERS` by its value (none named: the
    /// first). Each topic is kept once, in the order asked.
    pub fn validate(
        config: &Config,
        email: &str,
        topics: &[&str],
        digest: Option<&str>,
    ) -> Result<Request, InvalidRequest> {
        let email = email.trim();
        if email.len() > MAX_ADDRESS_LEN || !crate::config::valid_address(email) {
            return Err(InvalidRequest::Address);
        }
        if topics.is_empty() {
            return Err(InvalidRequest::NoTopic);
        }
        if topics.len() > config.topics.len()
            || !topics
                .iter()
                .all(|t| config.topics.iter().any(|c| c.id == *t))
        {
            return Err(InvalidRequest::UnknownTopic);
        }
        let value = digest.unwrap_or(DIGEST_OFFERS[0].value);
        let offer = DIGEST_OFFERS
            .iter()
            .find(|o| o.value == value)
            .ok_or(InvalidRequest::UnknownDigest)?;
        let mut once = Vec::new();
        for t in topics {
            if !once.iter().any(|o: &String| o == t) {
                once.push(t.to_string());
            }
        }
        Ok(Request {
            email: email.to_string(),
            topics: once,
            digest: offer.schedule.to_string(),
        })
    }
}

/// What became of a request. The web answers every one the same way, so that nobody
/// learns from it whether an address is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Recorded, with its confirmation mail in the outbox.
    MailQueued,
    /// A confirmation went to this address within the hour: nothing recorded or sent.
    TooSoonForAddress,
    /// The hourly cap on confirmation mails is reached: nothing recorded or sent.
    TooManyOverall,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("self-service subscribing needs a [web] section in the config")]
    NoWeb,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Records a self-service request and queues its confirmation mail, in one append,
/// unless the address had one within the hour or the hourly cap is reached. The
/// checks and the append are one write job on the store's writer, so two requests at
/// once cannot both pass them.
pub fn request(
    store: &SqliteStore,
    config: &Config,
    signer: Option<&LinkSigner>,
    templates: &Templates,
    req: &Request,
    now: DateTime<Utc>,
) -> Result<RequestOutcome, SubscribeError> {
    let signer = signer.ok_or(SubscribeError::NoWeb)?;
    let mode = if req.digest == "on-change" {
        "on change".to_string()
    } else {
        format!("digest on \"{}\"", req.digest)
    };
    // The mail is drafted first (rendering takes no lock); it is recorded only if the
    // checks below let it through.
    let (link, slot) = signer.confirm_slot(&req.email, now.timestamp())?;
    let link_id = slot.id.clone();
    let draft = ConfirmationDraft {
        recipient: req.email.clone(),
        link,
        slot,
        topics: crate::digest::topic_names(config, &req.topics),
        mode,
        expires_hours: CONFIRM_TTL_S / 3600,
    };
    let mail = crate::digest::confirmation(config, templates, &draft)?;
    let requested = NewEvent::new(
        stream::subscriber(&req.email),
        Event::SubscriberRequested(Subscription {
            email: req.email.clone(),
            name: None,
            topics: req.topics.clone(),
            digest: req.digest.clone(),
            via: SubscriptionChannel::Web,
            token: Some(link_id),
        }),
    );
    let hour_ago = rfc3339(now - chrono::Duration::seconds(CONFIRMATION_GAP_S));
    let email = req.email.clone();
    let outcome = store.write(move |tx| {
        projections::catch_up_in(tx)?;
        if Outbox::confirmations_since(tx, Some(&email), &hour_ago)? > 0 {
            return Ok(RequestOutcome::TooSoonForAddress);
        }
        if Outbox::confirmations_since(tx, None, &hour_ago)? >= CONFIRMATIONS_PER_HOUR {
            return Ok(RequestOutcome::TooManyOverall);
        }
        append_in(tx, vec![requested, mail])?;
        Ok(RequestOutcome::MailQueued)
    })?;
    if outcome == RequestOutcome::TooManyOverall {
        tracing::warn!("the hourly cap on confirmation mails is reached: requests are dropped");
    }
    Ok(outcome)
}

/// Why a signed link did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefused {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("this link has already been used")]
    Used,
    /// Confirm: no request waits; unsubscribe: the address is not subscribed, or the
    /// link belongs to an earlier subscription.
    #[error("this link no longer applies")]
    Stale,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Refused(#[from] LinkRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the subscription task stopped: {0}")]
    Panicked(String),
}

impl From<rusqlite::Error> for LinkError {
    fn from(e: rusqlite::Error) -> LinkError {
        LinkError::Store(StoreError::Sqlite(e))
    }
}

impl From<TokenError> for LinkError {
    fn from(e: TokenError) -> LinkError {
        LinkError::Refused(LinkRefused::Token(e))
    }
}

fn unix(t: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp())
}

/// The subscriber a verified link names, refusing a replayed link. Reads the
/// projections as they are on `conn`.
fn follow(conn: &Connection, token: &Token) -> Result<Option<SubscriberRow>, LinkError> {
    if Subscribers::token_used(conn, &token.id)? {
        return Err(LinkRefused::Used.into());
    }
    Ok(Subscribers::get(conn, &token.subject)?)
}

/// The request a confirmation link was sent for: the one that recorded the link's id.
/// A link from before requests recorded it (no request names any id) confirms the
/// latest request, as links did then.
fn requested_by(
    conn: &Connection,
    token: &Token,
    row: Option<SubscriberRow>,
) -> Result<(SubscriberRow, Subscription), LinkError> {
    let Some(row) = row else {
        return Err(LinkRefused::Stale.into());
    };
    let mut requests = Vec::new();
    for stored in stream_events(conn, &stream::subscriber(&row.email))? {
        if let Event::SubscriberRequested(r) = stored.decode()? {
            requests.push(r);
        }
    }
    if let Some(own) = requests
        .iter()
        .find(|r| r.token.as_deref() == Some(token.id.as_str()))
    {
        return Ok((row, own.clone()));
    }
    let legacy = requests.last().is_some_and(|r| r.token.is_none());
    let waiting = match (&row.pending, row.status) {
        (Some(p), _) if legacy => p.clone(),
        (None, SubscriberStatus::Pending) if legacy => Subscription {
            email: row.address.clone(),
            name: row.name.clone(),
            topics: row.topics.clone(),
            digest: row.digest.clone(),
            via: SubscriptionChannel::Web,
            token: None,
        },
        _ => return Err(LinkRefused::Stale.into()),
    };
    Ok((row, waiting))
}

/// Runs a link's step as one write job: the projections caught up, the checks made
/// and the outcome appended with no other write between them, so two clicks of one
/// link cannot both pass the one-use check.
fn link_step<T: Send + 'static>(
    store: &SqliteStore,
    step: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, LinkError> + Send + 'static,
) -> Result<T, LinkError> {
    store.write(move |tx| {
        projections::catch_up_in(tx)?;
        Ok(step(tx))
    })?
}

/// Checks a confirmation link without using it: the address it would confirm.
pub fn check_confirm(
    store: &SqliteStore,
    signer: &LinkSigner,
    token: &str,
    now: DateTime<Utc>,
) -> Result<String, LinkError> {
    let token = signer
        .key()
        .verify(token, Purpose::Confirm, now.timestamp())?;
    link_step(store, move |tx| {
        let row = follow(tx, &token)?;
        let (row, _) = requested_by(tx, &token, row)?;
        Ok(row.address)
    })
}

/// Follows a confirmation link: the request it was sent for becomes the subscription.
pub fn confirm(
    store: &SqliteStore,
    signer: &LinkSigner,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Subscription, LinkError> {
    let token = signer
        .key()
        .verify(token, Purpose::Confirm, now.timestamp())?;
    link_step(store, move |tx| {
        let row = follow(tx, &token)?;
        let (row, wanted) = requested_by(tx, &token, row)?;
        let confirmed = Subscription {
            email: row.address.clone(),
            via: SubscriptionChannel::Link,
            token: Some(token.id.clone()),
            ..wanted
        };
        append_in(
            tx,
            vec![NewEvent::new(
                stream::subscriber(&row.email),
                Event::SubscriberConfirmed(confirmed.clone()),
            )],
        )?;
        Ok(confirmed)
    })
}

/// Checks an unsubscribe link without using it: the address it would unsubscribe.
pub fn check_unsubscribe(
    store: &SqliteStore,
    signer: &LinkSigner,
    token: &str,
    now: DateTime<Utc>,
) -> Result<String, LinkError> {
    let token = signer
        .key()
        .verify(token, Purpose::Unsubscribe, now.timestamp())?;
    link_step(store, move |tx| {
        let row = follow(tx, &token)?;
        Ok(current_subscription(&token, row)?.address)
    })
}

/// The subscription an unsubscribe link applies to: confirmed, and begun no later
/// than the link was made (a link from an earlier subscription does not end a new one).
fn current_subscription(
    token: &Token,
    row: Option<SubscriberRow>,
) -> Result<SubscriberRow, LinkError> {
    match row {
        Some(r)
            if r.status == SubscriberStatus::Confirmed
                && r.subscribed_since
                    .as_deref()
                    .and_then(unix)
                    .is_none_or(|since| since <= token.issued) =>
        {
            Ok(r)
        }
        _ => Err(LinkRefused::Stale.into()),
    }
}

/// Follows an unsubscribe link (the page's button, or a one-click POST).
pub fn unsubscribe(
    store: &SqliteStore,
    signer: &LinkSigner,
    token: &str,
    via: SubscriptionChannel,
    now: DateTime<Utc>,
) -> Result<String, LinkError> {
    let token = signer
        .key()
        .verify(token, Purpose::Unsubscribe, now.timestamp())?;
    link_step(store, move |tx| {
        let row = current_subscription(&token, follow(tx, &token)?)?;
        append_in(
            tx,
            vec![NewEvent::new(
                stream::subscriber(&row.email),
                Event::SubscriberUnsubscribed(SubscriberUnsubscribed {
                    email: row.address.clone(),
                    via,
                    token: Some(token.id.clone()),
                }),
            )],
        )?;
        Ok(row.address)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::{Purpose, SigningKey};

    const KEY: &str = "unit-test-key-0123456789";

    fn setup() -> (tempfile::TempDir, SqliteStore, Config, LinkSigner) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.secret"), KEY).unwrap();
        let text = "[daemon]\ndatabase = \"v.db\"\n\n[mail]\ntransport = \"file\"\ndir = \"out\"\nfrom = \"v <v@example.org>\"\n\n\
                    [web]\npublic_url = \"https://vigia.example.org\"\nsecret_file = \"web.secret\"\n\n\
                    [[topic]]\nid = \"a\"\n\n[[topic]]\nid = \"b\"\n";
        let config = Config::parse(&dir.path().join("vigia.toml"), text).unwrap();
        let store = SqliteStore::open(&dir.path().join("v.db")).unwrap();
        let signer = LinkSigner::new(
            "https://vigia.example.org",
            SigningKey::from_bytes(KEY.as_bytes()).unwrap(),
        );
        (dir, store, config, signer)
    }

    fn row(store: &SqliteStore, email: &str) -> SubscriberRow {
        projections::catch_up(store).unwrap();
        store.read(|c| Subscribers::get(c, email)).unwrap().unwrap()
    }

    fn ask(
        store: &SqliteStore,
        config: &Config,
        topics: &[&str],
        now: DateTime<Utc>,
    ) -> RequestOutcome {
        let templates = Templates::load(None).unwrap();
        let req = Request {
            email: "ana@example.org".into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            digest: "on-change".into(),
        };
        let signer = LinkSigner::from_config(config, crate::links::KeyFile::MustExist).unwrap();
        request(store, config, signer.as_ref(), &templates, &req, now).unwrap()
    }

    /// The confirmation link of the last mail queued, signed as sending signs it.
    fn mailed_link(store: &SqliteStore, signer: &LinkSigner) -> String {
        let stored = store.last_of_kind("DigestQueued").unwrap().unwrap();
        let Event::DigestQueued(q) = stored.decode().unwrap() else {
            unreachable!()
        };
        assert!(
            !q.text.contains("token=ey") && q.text.contains("vigia-link-"),
            "the log holds a placeholder, not a token"
        );
        signer.key().sign_slot(&q.links[0])
    }

    #[test]
    fn a_request_is_checked_fault_by_fault_and_keeps_each_topic_once() {
        let (_dir, _store, config, _signer) = setup();
        let check =
            |email, topics: &[&str], digest| Request::validate(&config, email, topics, digest);
        assert_eq!(
            check(" ana@example.org ", &["b", "b"], None),
            Ok(Request {
                email: "ana@example.org".into(),
                topics: vec!["b".into()],
                digest: "on-change".into(),
            })
        );
        assert_eq!(
            check("ana@example.org", &["b", "a"], Some("weekly")).map(|r| (r.topics, r.digest)),
            Ok((vec!["b".into(), "a".into()], "0 7 * * 1".to_string()))
        );
        let long = format!("{}@example.org", "a".repeat(250));
        for (email, topics, digest, fault) in [
            ("not-an-address", &["a"][..], None, InvalidRequest::Address),
            (long.as_str(), &["a"][..], None, InvalidRequest::Address),
            (
                "x@example.org",
                &[][..],
                Some("nope"),
                InvalidRequest::NoTopic,
            ),
            (
                "x@example.org",
                &["a", "c"][..],
                None,
                InvalidRequest::UnknownTopic,
            ),
            (
                "x@example.org",
                &["a", "a", "a"][..],
                None,
                InvalidRequest::UnknownTopic,
            ),
            (
                "x@example.org",
                &["a"][..],
                Some("hourly"),
                InvalidRequest::UnknownDigest,
            ),
        ] {
            assert_eq!(
                check(email, topics, digest),
                Err(fault),
                "{email} {topics:?}"
            );
        }
    }

    #[test]
    fn a_request_waits_for_its_link_and_never_changes_a_confirmed_subscription() {
        let (_dir, store, config, signer) = setup();
        let t0 = Utc::now();
        assert_eq!(ask(&store, &config, &["a"], t0), RequestOutcome::MailQueued);
        assert_eq!(
            row(&store, "ana@example.org").status,
            SubscriberStatus::Pending
        );
        let confirm_link = mailed_link(&store, &signer);
        confirm(&store, &signer, &confirm_link, t0).unwrap();
        assert_eq!(row(&store, "ana@example.org").topics, vec!["a"]);

        // Within the hour: nothing recorded; after it: a pending change, not applied.
        assert_eq!(
            ask(&store, &config, &["b"], t0),
            RequestOutcome::TooSoonForAddress
        );
        let later = t0 + chrono::Duration::minutes(61);
        assert_eq!(
            ask(&store, &config, &["b"], later),
            RequestOutcome::MailQueued
        );
        let r = row(&store, "ana@example.org");
        assert_eq!(
            (r.status, r.topics.clone()),
            (SubscriberStatus::Confirmed, vec!["a".to_string()])
        );
        assert_eq!(r.pending.map(|p| p.topics), Some(vec!["b".to_string()]));
        let second = mailed_link(&store, &signer);
        confirm(&store, &signer, &second, later).unwrap();
        assert_eq!(row(&store, "ana@example.org").topics, vec!["b"]);
        assert!(matches!(
            confirm(&store, &signer, &second, later),
            Err(LinkError::Refused(LinkRefused::Used))
        ));
    }

    #[test]
    fn two_requests_for_one_address_each_link_confirms_its_own_request() {
        let (_dir, store, config, signer) = setup();
        let t0 = Utc::now();
        assert_eq!(ask(&store, &config, &["a"], t0), RequestOutcome::MailQueued);
        let first = mailed_link(&store, &signer);
        let later = t0 + chrono::Duration::minutes(61);
        assert_eq!(
            ask(&store, &config, &["b"], later),
            RequestOutcome::MailQueued
        );
        let second = mailed_link(&store, &signer);
        assert_ne!(first, second);
        // The earlier link, followed after the later request, confirms topic a.
        assert_eq!(
            confirm(&store, &signer, &first, later).unwrap().topics,
            vec!["a"]
        );
        assert_eq!(row(&store, "ana@example.org").topics, vec!["a"]);
        assert_eq!(
            confirm(&store, &signer, &second, later).unwrap().topics,
            vec!["b"]
        );
        assert_eq!(row(&store, "ana@example.org").topics, vec!["b"]);
        // A correctly signed link that no request was sent with confirms nothing.
        let stray = signer
            .key()
            .sign(Purpose::Confirm, "ana@example.org", later.timestamp(), 3600)
            .unwrap();
        assert!(matches!(
            confirm(&store, &signer, &stray, later),
            Err(LinkError::Refused(LinkRefused::Stale))
        ));
    }

    #[test]
    fn an_unsubscribe_link_from_an_earlier_subscription_does_not_end_a_new_one() {
        let (_dir, store, _config, signer) = setup();
        let sub = SubscriberConfig {
            email: "ana@example.org".into(),
            name: None,
            topics: vec!["a".into()],
            digest: DigestMode::OnChange,
        };
        add(&store, &sub).unwrap();
        let old = signer
            .key()
            .sign(
                Purpose::Unsubscribe,
                "ana@example.org",
                Utc::now().timestamp() + 1,
                3600,
            )
            .unwrap();
        assert_eq!(
            unsubscribe(
                &store,
                &signer,
                &old,
                SubscriptionChannel::OneClick,
                Utc::now()
            )
            .unwrap(),
            "ana@example.org"
        );
        // Back again (the old link has done its job; an older one than this
        // subscription must not end it either).
        let before = signer
            .key()
            .sign(
                Purpose::Unsubscribe,
                "ana@example.org",
                Utc::now().timestamp() - 60,
                3600,
            )
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        add(&store, &sub).unwrap();
        assert!(matches!(
            unsubscribe(
                &store,
                &signer,
                &before,
                SubscriptionChannel::Link,
                Utc::now()
            ),
            Err(LinkError::Refused(LinkRefused::Stale))
        ));
        assert!(matches!(
            unsubscribe(&store, &signer, &old, SubscriptionChannel::Link, Utc::now()),
            Err(LinkError::Refused(LinkRefused::Used))
        ));
        assert_eq!(
            row(&store, "ana@example.org").status,
            SubscriberStatus::Confirmed
        );
    }
}
