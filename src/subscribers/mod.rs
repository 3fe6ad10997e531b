//! Subscriptions as events: the config's subscribers applied when the config is, the
//! operator's `vigia subscribers add/remove` (this file), and self-service from the web:
//! a request (pending, with a confirmation mail in the outbox; `requests.rs`), its
//! confirmation by a signed link, and unsubscribing by a signed link or one-click POST
//! (`by_link.rs`).
//!
//! Someone who unsubscribed by link is not put back by a config that still names them
//! (their choice wins; the log says so). Every link works once: the event it causes
//! records the token's id. A confirmation link confirms the request it was sent for
//! (the request records the link's id), never a later one. Nothing here knows HTTP;
//! `crate::web` turns outcomes into pages.

mod by_link;
mod requests;
#[cfg(test)]
mod tests;

use crate::config::{Config, DigestMode, SubscriberConfig};
use crate::events::stream;
use crate::events::{Event, SubscriberUnsubscribed, Subscription, SubscriptionChannel};
use crate::projections::{self, SubscriberRow, SubscriberStatus, Subscribers};
use crate::store::{NewEvent, SqliteStore, StoreError};

pub use by_link::{check_confirm, check_unsubscribe, confirm, unsubscribe, LinkError, LinkRefused};
pub use requests::{
    request, DigestOffer, InvalidRequest, Request, RequestOutcome, SubscribeError,
    CONFIRMATIONS_PER_HOUR, CONFIRMATION_GAP_S, DIGEST_OFFERS,
};

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
