//! Self-service requests: what a visitor may ask for (`Request::validate`, the digest
//! modes on offer), and recording a request with its confirmation mail in one append,
//! within the per-address and hourly caps on confirmation mails.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::digest::{ConfirmationDraft, RenderError, Templates};
use crate::events::stream;
use crate::events::{Event, Subscription, SubscriptionChannel};
use crate::links::{KeyError, LinkSigner, CONFIRM_TTL_S};
use crate::projections::{self, Outbox};
use crate::store::{append_in, NewEvent, SqliteStore, StoreError};

/// At most one confirmation mail per address in this many seconds.
pub const CONFIRMATION_GAP_S: i64 = 3600;
/// At most this many confirmation mails in an hour, over all addresses: the form
/// cannot be turned into a mail cannon by spreading requests over many addresses.
pub const CONFIRMATIONS_PER_HOUR: u64 = 200;

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
        if email.len() > MAX_ADDRESS_LEN || !crate::config::valid_public_address(email) {
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
