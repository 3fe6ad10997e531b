//! Digests: what each subscriber should be told now, rendered and queued in the
//! outbox before any attempt to send.
//!
//! On-change subscribers get the stance changes of their topics recorded since their
//! last digest; periodic ones get a digest when their schedule falls due. Each digest
//! also lists the other relevant stories since the last one, each story once. A digest
//! is queued as a `DigestQueued` event holding the rendered message and its Message-ID,
//! keyed by subscriber and content, so a repeated cycle queues nothing twice; `mail`
//! sends what is queued. At most one digest per subscriber per cycle.

pub mod chart;
pub mod mail;
mod render;
pub mod timeline;
mod views;
pub mod words;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::config::CronSchedule;
use crate::events::stream;
use base64::Engine as _;

use crate::events::{DigestQueued, DigestReason, Event, InlineImage, LinkSlot};
use crate::links::LinkSigner;
use crate::projections::{Outbox, StanceChange, Stances, SubscriberRow, Subscribers};
use crate::store::{NewEvent, SqliteStore, StoreError};

pub use render::{template_environment, RenderError, Templates};
use views::{change_view, grouped, stories, Clock};
pub use views::{
    header_safe, safe_url, topic_names, ChangeView, ChartView, EvidenceView, StoryGroup, StoryView,
};

/// Everything one digest says, before rendering.
#[derive(Debug, Clone, Serialize)]
pub struct Draft {
    pub recipient: String,
    pub subject: String,
    pub headline: String,
    pub changes: Vec<ChangeView>,
    pub stories: Vec<StoryView>,
    /// The same stories under the issue each touches.
    pub story_groups: Vec<StoryGroup>,
    pub topics: String,
    pub mode: String,
    /// Where the templates send someone who wants to leave: the signed link where
    /// the config has `[web]`, else the mailto.
    pub unsubscribe: String,
    /// The signed one-click link (RFC 8058), where the config has `[web]`.
    pub unsubscribe_link: Option<String>,
    pub unsubscribe_mailto: String,
    pub reason: DigestReason,
    /// The signed links in `unsubscribe` and `unsubscribe_link`, still unsigned.
    #[serde(skip)]
    pub links: Vec<LinkSlot>,
}

/// A confirmation mail (double opt-in), before rendering.
#[derive(Debug, Clone, Serialize)]
pub struct ConfirmationDraft {
    pub recipient: String,
    /// The confirmation link, with a placeholder where `slot`'s token goes.
    pub link: String,
    #[serde(skip)]
    pub slot: LinkSlot,
    pub topics: String,
    pub mode: String,
    pub expires_hours: i64,
}

/// What stays as it is in a mailto URL (RFC 6068): everything else is encoded, so no
/// address can add a header or a recipient (`a&cc=x@evil.example` passes as an
/// address, and must stay one word of the subject).
const MAILTO_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'@')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');

fn unsubscribe_mailto(config: &Config, email: &str) -> String {
    let from = config
        .mail
        .from
        .rsplit_once('<')
        .map(|(_, a)| a.trim_end_matches('>'))
        .unwrap_or(&config.mail.from);
    format!(
        "mailto:{}?subject=unsubscribe%20{}",
        percent_encoding::utf8_percent_encode(from.trim(), MAILTO_KEEP),
        percent_encoding::utf8_percent_encode(email, MAILTO_KEEP)
    )
}

/// The digest due for one subscriber now, if any.
pub fn draft_for(
    conn: &Connection,
    config: &Config,
    signer: Option<&LinkSigner>,
    sub: &SubscriberRow,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<Draft>> {
    let topics: Vec<String> = sub
        .topics
        .iter()
        .filter(|t| config.topics.iter().any(|c| &c.id == *t))
        .cloned()
        .collect();
    if topics.is_empty() {
        return Ok(None);
    }
    let reported = Outbox::last_change_reported(conn, &sub.email)?;
    let last_digest = Outbox::last_digest_at(conn, &sub.email)?;
    // Changes recorded before someone subscribed are not news to them.
    let since = sub.subscribed_since.as_deref().unwrap_or(&sub.changed_at);
    let changes: Vec<StanceChange> = Stances::changes_since(conn, reported)?
        .into_iter()
        .filter(|c| topics.contains(&c.topic) && c.at.as_str() >= since)
        .collect();
    let periodic = sub.digest != "on-change";
    if periodic {
        if !periodic_due(&sub.digest, last_digest.as_deref().unwrap_or(since), now) {
            return Ok(None);
        }
    } else if changes.is_empty() {
        return Ok(None);
    }
    let tz = config
        .subscribers
        .iter()
        .find(|s| s.email.eq_ignore_ascii_case(&sub.email))
        .and_then(|s| s.tz);
    let clock = Clock { now, tz };
    let views = change_views(conn, config, &changes, clock)?;
    let shown: HashSet<String> = changes
        .iter()
        .flat_map(|c| c.evidence.iter().map(|e| e.article_id.clone()))
        .collect();
    let after = last_digest.clone().unwrap_or_else(|| since.to_string());
    let stories = stories(conn, config, &topics, &after, &shown, clock)?;
    if views.is_empty() && stories.is_empty() {
        return Ok(None);
    }
    let mailto = unsubscribe_mailto(config, &sub.address);
    let unsubscribe_slot = signer.and_then(|s| {
        s.unsubscribe_slot(&sub.email, now.timestamp())
            .map_err(|e| tracing::error!(error = %e, "no unsubscribe link in this digest"))
            .ok()
    });
    let (unsubscribe_link, links) = match unsubscribe_slot {
        Some((url, slot)) => (Some(url), vec![slot]),
        None => (None, vec![]),
    };
    Ok(Some(Draft {
        recipient: sub.address.clone(),
        subject: header_safe(&digest_subject(&views, stories.len())),
        headline: headline(&views, changes.iter().filter(|c| c.from.is_none()).count()),
        changes: views,
        story_groups: grouped(&stories),
        stories,
        topics: topic_names(config, &topics),
        mode: if periodic {
            format!("digest on \"{}\"", sub.digest)
        } else {
            "on change".into()
        },
        unsubscribe: unsubscribe_link.clone().unwrap_or_else(|| mailto.clone()),
        unsubscribe_link,
        unsubscribe_mailto: mailto,
        reason: if periodic {
            DigestReason::Periodic
        } else {
            DigestReason::OnChange
        },
        links,
    }))
}

/// Whether a periodic digest (its cron expression) has a slot between the last one
/// (or the subscription) and now. An expression that no longer parses sends nothing.
fn periodic_due(expression: &str, last: &str, now: DateTime<Utc>) -> bool {
    let Ok(schedule) = CronSchedule::parse(expression) else {
        return false;
    };
    let from = DateTime::parse_from_rfc3339(last)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    schedule.next_after(from).is_some_and(|due| due <= now)
}

/// The changes as the digest shows them: real changes before first establishments
/// (the subject names the most important), and each story in full once, later
/// changes it supports naming it briefly.
fn change_views(
    conn: &Connection,
    config: &Config,
    changes: &[StanceChange],
    clock: Clock,
) -> rusqlite::Result<Vec<ChangeView>> {
    let mut ordered: Vec<&StanceChange> = changes.iter().collect();
    ordered.sort_by_key(|c| (c.from.is_none(), c.seq));
    let mut views: Vec<ChangeView> = ordered
        .iter()
        .map(|c| change_view(conn, config, c, clock))
        .collect::<rusqlite::Result<_>>()?;
    let mut shown_stories = HashSet::new();
    for view in &mut views {
        for e in &mut view.evidence {
            e.repeat = !shown_stories.insert(e.story.clone());
        }
    }
    Ok(views)
}

/// The subject: the most important change, and how many more; or, with no change,
/// how many stories.
fn digest_subject(views: &[ChangeView], stories: usize) -> String {
    match views {
        [] => format!(
            "vigia digest: {stories} new {}",
            if stories == 1 { "story" } else { "stories" }
        ),
        [one] => one.subject.clone(),
        [first, rest @ ..] => format!("{} (+{} more)", first.subject, rest.len()),
    }
}

/// The first line: what kind of news this is, in words that fit what happened (a
/// first reading is not a change).
fn headline(views: &[ChangeView], firsts: usize) -> String {
    let changed = views.len() - firsts;
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    match (changed, firsts) {
        (0, 0) => "No stance changed; the relevant stories since your last digest:".to_string(),
        (1, 0) => "A stance changed:".to_string(),
        (c, 0) => format!("{} changed:", plural(c, "stance", "stances")),
        (0, f) => format!(
            "{}:",
            plural(f, "first reading of a stance", "first readings of stances")
        ),
        (c, f) => format!(
            "{} changed, and {}:",
            plural(c, "stance", "stances"),
            plural(f, "first reading", "first readings")
        ),
    }
}

/// Every digest due now, one per confirmed subscriber at most.
pub fn drafts(
    conn: &Connection,
    config: &Config,
    signer: Option<&LinkSigner>,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<Draft>> {
    let mut out = Vec::new();
    for sub in Subscribers::confirmed(conn)? {
        if let Some(d) = draft_for(conn, config, signer, &sub, now)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// The domain part of the From address, for Message-IDs.
fn from_domain(config: &Config) -> String {
    config
        .mail
        .from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>').trim().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "vigia.localhost".into())
}

/// RFC 2369 and RFC 8058: the signed link first (mail clients offer one-click
/// unsubscribing with it), then the mailto.
fn list_headers(d: &Draft) -> Vec<(String, String)> {
    match &d.unsubscribe_link {
        Some(link) => vec![
            (
                "List-Unsubscribe".into(),
                format!("<{link}>, <{}>", d.unsubscribe_mailto),
            ),
            (
                "List-Unsubscribe-Post".into(),
                "List-Unsubscribe=One-Click".into(),
            ),
        ],
        None => vec![(
            "List-Unsubscribe".into(),
            format!("<{}>", d.unsubscribe_mailto),
        )],
    }
}

/// The confirmation mail for a subscription request, as the DigestQueued event that
/// puts it in the outbox (sent, retried and never lost like a digest).
pub fn confirmation(
    config: &Config,
    templates: &Templates,
    draft: &ConfirmationDraft,
) -> Result<NewEvent, RenderError> {
    let digest_id = hex::encode(
        &Sha256::digest(format!(
            "{}\0confirmation\0{}",
            draft.recipient.to_lowercase(),
            draft.slot.id
        ))[..10],
    );
    let (text, html) = templates.render_confirmation(draft)?;
    Ok(NewEvent::new(
        stream::digest(&digest_id),
        Event::DigestQueued(DigestQueued {
            digest_id: digest_id.clone(),
            to: draft.recipient.clone(),
            subject: "Confirm your vigia subscription".into(),
            message_id: format!("<confirm-{digest_id}@{}>", from_domain(config)),
            text,
            html,
            headers: vec![("Auto-Submitted".into(), "auto-generated".into())],
            changes: vec![],
            reason: DigestReason::Confirmation,
            links: vec![draft.slot.clone()],
            images: vec![],
        }),
    )
    .idempotent(stream::key::digest_queued(&digest_id)))
}

/// Renders the drafts and queues them. Returns how many were newly queued.
pub fn queue(
    store: &SqliteStore,
    config: &Config,
    templates: &Templates,
    drafts: Vec<Draft>,
    now: DateTime<Utc>,
) -> Result<usize, QueueError> {
    let mut batch = Vec::new();
    for d in drafts {
        let changes: Vec<u64> = d.changes.iter().map(|c| c.seq).collect();
        // The key names the recipient and what is reported: the same digest is never
        // queued twice, whatever crashes in between. A periodic digest is keyed by its
        // due date instead.
        let trigger = match d.reason {
            DigestReason::Periodic => now.format("%Y-%m-%dT%H:%M").to_string(),
            DigestReason::OnChange | DigestReason::Confirmation => {
                changes.iter().max().copied().unwrap_or(0).to_string()
            }
        };
        let digest_id = hex::encode(
            &Sha256::digest(format!(
                "{}\0{}\0{}",
                d.recipient.to_lowercase(),
                d.reason.as_str(),
                trigger
            ))[..10],
        );
        let (text, html) = templates.render(&d)?;
        let message_id = format!("<digest-{digest_id}@{}>", from_domain(config));
        batch.push(
            NewEvent::new(
                stream::digest(&digest_id),
                Event::DigestQueued(DigestQueued {
                    digest_id: digest_id.clone(),
                    to: d.recipient.clone(),
                    subject: d.subject.clone(),
                    message_id,
                    text,
                    html,
                    headers: list_headers(&d),
                    changes,
                    reason: d.reason,
                    links: d.links.clone(),
                    images: d
                        .changes
                        .iter()
                        .filter_map(|c| c.chart.as_ref())
                        .map(|chart| InlineImage {
                            cid: chart.cid.clone(),
                            png_base64: base64::engine::general_purpose::STANDARD
                                .encode(&chart.png),
                        })
                        .collect(),
                }),
            )
            .idempotent(stream::key::digest_queued(&digest_id)),
        );
    }
    let appended = store.append(batch)?;
    Ok(appended.iter().filter(|a| a.is_new()).count())
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unsubscribe_mailto_keeps_an_address_one_word_of_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[daemon]\ndatabase = \"v.db\"\n\n[mail]\ntransport = \"file\"\ndir = \"out\"\nfrom = \"vigia <vigia@example.org>\"\n";
        let config = Config::parse(&dir.path().join("vigia.toml"), text).unwrap();
        let hostile = "a&cc=x@evil.example";
        assert!(
            crate::config::valid_address(hostile),
            "it is a valid address"
        );
        let mailto = unsubscribe_mailto(&config, hostile);
        assert_eq!(
            mailto,
            "mailto:vigia@example.org?subject=unsubscribe%20a%26cc%3Dx@evil.example"
        );
        assert!(!mailto.contains('&'), "no second field: {mailto}");
    }

    #[test]
    fn header_text_loses_line_breaks_and_invisible_controls() {
        assert_eq!(
            header_safe("M\u{e9}xico\u{202E} rechaza\r\nBcc: x@y \u{200B}"),
            "M\u{e9}xico rechaza  Bcc: x@y"
        );
    }
}
