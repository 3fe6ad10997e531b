//! Delivery: sends what the outbox holds, through SMTP (none, STARTTLS or TLS),
//! sendmail, or files, and records each outcome.
//!
//! A message is sent exactly as it was queued (same body, same Message-ID). Success is
//! `DigestSent`; a refusal is `DigestFailed`, permanent for a 5xx (never retried) and
//! otherwise retried with exponential backoff on later cycles. A crash between the
//! server's acceptance and the `DigestSent` record means one resend, carrying the same
//! Message-ID; nothing is ever lost, since the message lives in its DigestQueued event.
//! Its signed links are signed here, at sending, from the slots the event records
//! (the log holds no usable token), and the same way on every attempt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SendmailTransport, SmtpTransport, Transport};

use super::header_safe;
use crate::config::{Config, MailTransport, TlsMode};
use crate::events::stream;
use crate::events::{DigestFailed, DigestQueued, DigestReason, DigestSent, Event};
use crate::links::LinkSigner;
use crate::projections::{Outbox, OutboxRow, SubscriberStatus};
use crate::store::{NewEvent, SqliteStore, StoreError};

/// The longest wait between attempts.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// An SMTP conversation that takes longer than this has failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

enum Channel {
    Smtp(Box<SmtpTransport>),
    Sendmail(SendmailTransport),
    Files(PathBuf),
}

/// A configured way to send mail.
pub struct Mailer {
    channel: Channel,
    from: Mailbox,
    retry_base: Duration,
    /// Signs the links that queued messages carry as slots.
    signer: Option<LinkSigner>,
}

impl Mailer {
    pub fn new(config: &Config, signer: Option<LinkSigner>) -> Result<Mailer, SendError> {
        let from: Mailbox =
            config.mail.from.parse().map_err(|e| {
                SendError::Permanent(format!("mail.from {:?}: {e}", config.mail.from))
            })?;
        let channel = match &config.mail.transport {
            MailTransport::Smtp {
                host,
                port,
                tls,
                username,
                password,
            } => {
                let builder = match tls {
                    TlsMode::None => SmtpTransport::builder_dangerous(host),
                    TlsMode::Starttls => SmtpTransport::starttls_relay(host).map_err(|e| {
                        SendError::Permanent(format!("SMTP STARTTLS setup for {host}: {e}"))
                    })?,
                    TlsMode::Tls => SmtpTransport::relay(host).map_err(|e| {
                        SendError::Permanent(format!("SMTP TLS setup for {host}: {e}"))
                    })?,
                };
                let mut builder = builder.port(*port).timeout(Some(SMTP_TIMEOUT));
                if let (Some(user), Some(secret)) = (username, password) {
                    let password = secret.read().map_err(|e| {
                        SendError::Transient(format!("reading the SMTP password: {e}"))
                    })?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                Channel::Smtp(Box::new(builder.build()))
            }
            MailTransport::Sendmail { command } => {
                Channel::Sendmail(SendmailTransport::new_with_command(command.as_os_str()))
            }
            MailTransport::File { dir } => Channel::Files(dir.clone()),
        };
        Ok(Mailer {
            channel,
            from,
            retry_base: Duration::from_secs(config.mail.retry_base_s),
            signer,
        })
    }

    /// The message as it goes out: both parts, the queued Message-ID and headers, and
    /// its links signed. Every attempt builds the same bytes: the Date is when it was
    /// queued and the MIME boundary comes from the digest's id, not from chance.
    pub fn build(
        &self,
        queued: &DigestQueued,
        queued_at: DateTime<Utc>,
    ) -> Result<Message, SendError> {
        let fill = |text: &str| -> Result<String, SendError> {
            if queued.links.is_empty() {
                return Ok(text.to_string());
            }
            let signer = self.signer.as_ref().ok_or_else(|| {
                SendError::Transient(
                    "the message carries signed links, but no web key is loaded ([web] secret); it waits until one is".into(),
                )
            })?;
            Ok(signer.fill(text, &queued.links))
        };
        let to: Mailbox = queued
            .to
            .parse()
            .map_err(|e| SendError::Permanent(format!("recipient {:?}: {e}", queued.to)))?;
        let mut message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(header_safe(&queued.subject))
            .message_id(Some(header_safe(&queued.message_id)))
            .date(queued_at.into())
            .multipart({
                let boundary = format!("vigia-{}", header_safe(&queued.digest_id));
                let alternative = MultiPart::alternative()
                    .boundary(boundary.clone())
                    .singlepart(SinglePart::plain(fill(&queued.text)?));
                if queued.images.is_empty() {
                    alternative.singlepart(SinglePart::html(fill(&queued.html)?))
                } else {
                    // The HTML and the pictures it shows by Content-ID travel together
                    // (RFC 2387), so clients show them inline, not as attachments.
                    let mut related = MultiPart::related()
                        .boundary(format!("{boundary}-related"))
                        .singlepart(SinglePart::html(fill(&queued.html)?));
                    for image in &queued.images {
                        let png = base64::engine::general_purpose::STANDARD
                            .decode(&image.png_base64)
                            .map_err(|e| {
                                SendError::Permanent(format!("image {}: {e}", image.cid))
                            })?;
                        related = related.singlepart(
                            Attachment::new_inline(header_safe(&image.cid)).body(
                                png,
                                ContentType::parse("image/png").map_err(|e| {
                                    SendError::Permanent(format!("image type: {e}"))
                                })?,
                            ),
                        );
                    }
                    alternative.multipart(related)
                }
            })
            .map_err(|e| SendError::Permanent(format!("building the message: {e}")))?;
        for (name, value) in &queued.headers {
            let name = HeaderName::new_from_ascii(name.clone())
                .map_err(|e| SendError::Permanent(format!("header name {name:?}: {e}")))?;
            message
                .headers_mut()
                .insert_raw(HeaderValue::new(name, header_safe(&fill(value)?)));
        }
        Ok(message)
    }

    /// Sends one queued message; blocking (call it off the async workers).
    pub fn send(
        &self,
        queued: &DigestQueued,
        queued_at: DateTime<Utc>,
    ) -> Result<String, SendError> {
        let message = self.build(queued, queued_at)?;
        match &self.channel {
            Channel::Smtp(smtp) => smtp
                .send(&message)
                .map(|r| r.message().collect::<Vec<_>>().join(" "))
                .map_err(|e| {
                    if e.is_permanent() {
                        SendError::Permanent(format!("the SMTP server refused: {e}"))
                    } else {
                        SendError::Transient(format!("SMTP: {e}"))
                    }
                }),
            Channel::Sendmail(sendmail) => sendmail
                .send(&message)
                .map(|_| "handed to sendmail".to_string())
                .map_err(|e| SendError::Transient(format!("sendmail: {e}"))),
            Channel::Files(dir) => write_file(dir, &queued.digest_id, &message.formatted()),
        }
    }
}

/// Writes `<digest_id>.eml` atomically (a temporary file renamed into place), so a
/// crash leaves either the whole message or none, and a resend overwrites it.
fn write_file(dir: &Path, digest_id: &str, bytes: &[u8]) -> Result<String, SendError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SendError::Transient(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("{digest_id}.eml"));
    let tmp = dir.join(format!(".{digest_id}.eml.tmp"));
    std::fs::write(&tmp, bytes)
        .map_err(|e| SendError::Transient(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| SendError::Transient(format!("renaming into {}: {e}", path.display())))?;
    Ok(format!("written to {}", path.display()))
}

fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let base = base.saturating_mul(1 << exp).min(RETRY_MAX);
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// What one delivery round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub sent: u32,
    pub failed: u32,
    pub given_up: u32,
}

/// The DigestQueued event behind an outbox row, and when it was recorded.
fn queued_message(
    store: &SqliteStore,
    row: &OutboxRow,
) -> Result<Option<(DigestQueued, DateTime<Utc>)>, StoreError> {
    let events = store.read_from(row.queued_seq.saturating_sub(1), 1, None)?;
    let Some(stored) = events.first() else {
        return Ok(None);
    };
    let at = DateTime::parse_from_rfc3339(&stored.recorded_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    match stored.decode()? {
        Event::DigestQueued(q) => Ok(Some((q, at))),
        _ => Ok(None),
    }
}

/// Sends every due message in the outbox and records each outcome.
pub fn deliver_due(
    store: &SqliteStore,
    mailer: &Mailer,
    now: DateTime<Utc>,
) -> Result<DeliveryReport, StoreError> {
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let due = store.read(|c| Outbox::due(c, &stamp))?;
    let mut report = DeliveryReport::default();
    for row in due {
        let Some((queued, queued_at)) = queued_message(store, &row)? else {
            tracing::error!(digest = %row.digest_id, "the outbox names a message the log does not hold");
            continue;
        };
        let attempt = row.attempts + 1;
        let stream = stream::digest(&row.digest_id);
        // Someone who left while their digest waited (an SMTP outage, say) is not sent
        // it: it is given up, and the log says why.
        let left = row.reason != DigestReason::Confirmation
            && store
                .read(|c| crate::projections::Subscribers::get(c, &row.recipient))?
                .is_some_and(|s| s.status == SubscriberStatus::Unsubscribed);
        let outcome = if left {
            Err(SendError::Permanent(
                "not sent: the recipient unsubscribed after it was queued".into(),
            ))
        } else {
            mailer.send(&queued, queued_at)
        };
        let event = match outcome {
            Ok(response) => {
                report.sent += 1;
                tracing::info!(digest = %row.digest_id, to = %queued.to, "digest sent");
                NewEvent::new(
                    stream,
                    Event::DigestSent(DigestSent {
                        digest_id: row.digest_id.clone(),
                        to: queued.to.clone(),
                        message_id: queued.message_id.clone(),
                        attempt,
                        response,
                    }),
                )
                .idempotent(stream::key::digest_sent(&row.digest_id))
            }
            Err(e) => {
                let permanent = matches!(e, SendError::Permanent(_));
                if permanent {
                    report.given_up += 1;
                } else {
                    report.failed += 1;
                }
                tracing::warn!(digest = %row.digest_id, to = %queued.to, attempt, permanent, error = %e, "digest not sent");
                let retry = (!permanent).then(|| {
                    (now + chrono::Duration::from_std(retry_delay(mailer.retry_base, attempt))
                        .unwrap_or_default())
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                });
                NewEvent::new(
                    stream,
                    Event::DigestFailed(DigestFailed {
                        digest_id: row.digest_id.clone(),
                        to: queued.to.clone(),
                        attempt,
                        permanent,
                        error: e.to_string(),
                        retry_not_before: retry,
                    }),
                )
                .idempotent(stream::key::digest_failed(&row.digest_id, attempt))
            }
        };
        store.append_one(event)?;
        // The outbox row must move before the next one is read, or a failed message
        // could be attempted twice in one round by a concurrent cycle.
        crate::projections::catch_up(store)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_are_capped() {
        let base = Duration::from_secs(20);
        let first = retry_delay(base, 1).as_secs_f64();
        assert!((15.0..=25.0).contains(&first), "{first}");
        assert!(retry_delay(base, 4).as_secs_f64() >= 8.0 * 15.0);
        assert!(retry_delay(base, 30).as_secs_f64() <= RETRY_MAX.as_secs_f64() * 1.25);
    }
}
