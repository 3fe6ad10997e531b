//! Building blocks for several daemons on one PostgreSQL database (the daemon is
//! wired to them later): leases on feeds, so each feed is polled by one daemon at a
//! time, and leadership, so one daemon does the once-only work (tracking, digests).
//!
//! Leases (`feed_leases`, migration 0002): a daemon takes free or expired leases for
//! a time (`take_leases`), renews them while it polls (`renew_leases`) and releases
//! them when it stops (`release_leases`). A daemon that dies without releasing loses
//! its leases when they expire, and another takes them. Claims lock the rows they take
//! with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other nor
//! take one row twice; times are the server's (`now()`), so the daemons' clocks need
//! not agree.
//!
//! Leadership (`try_lead`): a session-level advisory lock on a connection of its own.
//! The server releases it when that session ends, however it ends (the handle dropped,
//! the process killed, the network gone), so a dead leader cannot keep it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{pg, PgStore};
use crate::store::StoreError;

/// The advisory lock key that one leader holds: "vigiaL" in ASCII (apart from
/// `LOG_LOCK`, which appends take for a moment).
const LEAD_LOCK: i64 = 0x7669_6769_614c;

/// How often a leader checks that its connection, and so its lock, is still there.
const LEAD_CHECK: Duration = Duration::from_secs(1);

fn seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// The feeds named, sorted and once each: claimers that insert rows in one order
/// cannot deadlock on each other.
fn sorted(feeds: &[String]) -> Vec<String> {
    let mut feeds = feeds.to_vec();
    feeds.sort();
    feeds.dedup();
    feeds
}

impl PgStore {
    /// Claims leases for `holder` on at most `max` of `candidates`: feeds no one holds,
    /// feeds whose lease has expired, and the holder's own (renewed, and counted in
    /// `max`). Returns the feeds the holder now holds among the candidates, each until
    /// `ttl` from now; a feed another holder holds, or is claiming at this moment, is
    /// left alone.
    pub fn take_leases(
        &self,
        holder: &str,
        candidates: &[String],
        ttl: Duration,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        let (holder, candidates) = (holder.to_string(), sorted(candidates));
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let ttl = seconds(ttl);
        self.run(move |client| {
            // Rows that exist: the holder's own first (a daemon keeps its feeds), then
            // the longest expired. Rows another claimer has locked are skipped; a row
            // updated since this statement began is checked again as it now stands.
            let mut taken: Vec<String> = client
                .query(
                    "WITH claim AS (
                         SELECT feed FROM feed_leases
                         WHERE feed = ANY($2) AND (holder = $1 OR expires_at <= now())
                         ORDER BY (holder = $1) DESC, expires_at, feed
                         LIMIT $4
                         FOR UPDATE SKIP LOCKED)
                     UPDATE feed_leases AS l
                     SET holder = $1, expires_at = now() + make_interval(secs => $3)
                     FROM claim WHERE l.feed = claim.feed
                     RETURNING l.feed",
                    &[&holder, &candidates, &ttl, &max],
                )
                .map_err(pg)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(pg)?;
            let room = max - taken.len() as i64;
            if room > 0 {
                // Feeds never leased (or released): a row each. Two claimers inserting
                // one feed: the second waits for the first to commit, then skips it.
                let inserted = client
                    .query(
                        "INSERT INTO feed_leases (feed, holder, expires_at)
                         SELECT f, $1, now() + make_interval(secs => $3)
                         FROM unnest($2::text[]) AS f
                         WHERE NOT EXISTS (SELECT 1 FROM feed_leases WHERE feed = f)
                         ORDER BY f
                         LIMIT $4
                         ON CONFLICT (feed) DO NOTHING
                         RETURNING feed",
                        &[&holder, &candidates, &ttl, &room],
                    )
                    .map_err(pg)?;
                for row in inserted {
                    taken.push(row.try_get(0).map_err(pg)?);
                }
            }
            taken.sort();
            Ok(taken)
        })
    }

    /// Extends the holder's leases on `feeds` to `ttl` from now; returns those it
    /// still held. A feed missing from the answer was taken by another holder after
    /// its lease expired: stop polling it.
    pub fn renew_leases(
        &self,
        holder: &str,
        feeds: &[String],
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let (holder, feeds) = (holder.to_string(), sorted(feeds));
        let ttl = seconds(ttl);
        self.run(move |client| {
            let mut renewed: Vec<String> = client
                .query(
                    "UPDATE feed_leases SET expires_at = now() + make_interval(secs => $3)
                     WHERE holder = $1 AND feed = ANY($2)
                     RETURNING feed",
                    &[&holder, &feeds, &ttl],
                )
                .map_err(pg)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(pg)?;
            renewed.sort();
            Ok(renewed)
        })
    }

    /// Gives up the holder's leases on `feeds` (others' are untouched), so another
    /// daemon may take them at once; returns how many it held.
    pub fn release_leases(&self, holder: &str, feeds: &[String]) -> Result<u64, StoreError> {
        let (holder, feeds) = (holder.to_string(), sorted(feeds));
        self.run(move |client| {
            client
                .execute(
                    "DELETE FROM feed_leases WHERE holder = $1 AND feed = ANY($2)",
                    &[&holder, &feeds],
                )
                .map_err(pg)
        })
    }

    /// Tries to become the leader, at once (no waiting): `Some` while this handle's
    /// `Leadership` lives, `None` if another holder leads. The lock lives on a
    /// connection of its own, named `vigia leader {holder}` in `pg_stat_activity`;
    /// dropping the `Leadership` closes it, and so does the process dying.
    pub fn try_lead(&self, holder: &str) -> Result<Option<Leadership>, StoreError> {
        let connector = self.inner.connector.clone();
        let name = format!("vigia leader {holder}");
        let held = Arc::new(AtomicBool::new(false));
        let (answer_tx, answer) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = held.clone();
        // A thread owns the connection: the synchronous client must not run on a
        // tokio runtime's thread, and the lock must outlive this call.
        let thread = std::thread::Builder::new()
            .name("vigia-store-postgres-lead".into())
            .spawn(move || {
                let attempt = connector.connect().and_then(|mut client| {
                    let row = client
                        .query_one(
                            "SELECT set_config('application_name', $1, false), pg_try_advisory_lock($2)",
                            &[&name, &LEAD_LOCK],
                        )
                        .map_err(pg)?;
                    let led: bool = row.try_get(1).map_err(pg)?;
                    Ok((client, led))
                });
                let mut client = match attempt {
                    Ok((client, true)) => client,
                    Ok((_, false)) => {
                        let _ = answer_tx.send(Ok(false));
                        return;
                    }
                    Err(e) => {
                        let _ = answer_tx.send(Err(e));
                        return;
                    }
                };
                flag.store(true, Ordering::SeqCst);
                let _ = answer_tx.send(Ok(true));
                // Until dropped (the sender goes) or the connection fails.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(LEAD_CHECK) {
                    if client.is_valid(LEAD_CHECK).is_err() {
                        break;
                    }
                }
                flag.store(false, Ordering::SeqCst);
                // Dropping the client ends the session, and the server frees the lock.
            })
            .map_err(|e| StoreError::Postgres(format!("cannot start a leader's thread: {e}")))?;
        match answer.recv() {
            Ok(Ok(true)) => Ok(Some(Leadership {
                holder: holder.to_string(),
                held,
                stop: Some(stop),
                thread: Some(thread),
            })),
            Ok(Ok(false)) => {
                let _ = thread.join();
                Ok(None)
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(StoreError::Panicked("the leader's thread".into())),
        }
    }
}

/// Leadership held: the lock lives as long as this value and its connection. Check
/// `is_held` before acting as leader: a lost connection loses the lock, and another
/// daemon may lead by then.
pub struct Leadership {
    holder: String,
    held: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Leadership {
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether the lock's connection was alive at its last check (every second).
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Leadership({}, held: {})", self.holder, self.is_held())
    }
}

impl Drop for Leadership {
    /// Steps down: the connection is closed before this returns, so another daemon
    /// can lead at once.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
