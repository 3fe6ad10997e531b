//! The writer's queue, bounded in bytes: append requests waiting for the one writer
//! thread (and the group it is writing) hold at most a set number of payload bytes,
//! so a burst of large polls cannot pile up in memory faster than SQLite takes them.
//! A caller whose request would pass the bound waits until the writer has finished
//! enough of the queue; a request larger than the whole bound waits for an empty
//! queue and then goes alone, so every request gets through.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Payload bytes the queue holds at most by default. A poll of the ingest benchmark's
/// cold cycle queues about 33 KB (a poll outcome and twenty articles of 900 bytes;
/// its 1,000 polls fill 32.7 MB of `events`), so this is some 250 such polls: more
/// than the fetch limits let run at once, so only bursts of large feeds ever wait.
pub const DEFAULT_QUEUE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
struct Held {
    bytes: usize,
    /// The most ever held at once (what tests and benchmarks read).
    peak: usize,
}

/// The bytes queued for the writer, shared by every handle on one store.
#[derive(Debug)]
pub struct QueueBudget {
    limit: usize,
    held: Mutex<Held>,
    freed: Condvar,
}

/// A request's bytes in the queue, held until this is dropped: when the writer has
/// answered the request, or when the request never reached it.
#[derive(Debug)]
pub struct QueueSlot {
    budget: Arc<QueueBudget>,
    bytes: usize,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        let mut held = self.budget.lock();
        held.bytes -= self.bytes;
        drop(held);
        self.budget.freed.notify_all();
    }
}

impl QueueBudget {
    pub fn new(limit: usize) -> Arc<QueueBudget> {
        Arc::new(QueueBudget {
            limit: limit.max(1),
            held: Mutex::new(Held::default()),
            freed: Condvar::new(),
        })
    }

    /// The most bytes ever queued at once.
    pub fn peak(&self) -> usize {
        self.lock().peak
    }

    // A panic while holding this lock leaves plain counters behind, still true.
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request's share: its bytes, or the whole bound for a request larger than it.
    fn share(&self, bytes: usize) -> usize {
        bytes.min(self.limit)
    }

    fn admit(self: &Arc<Self>, held: &mut Held, bytes: usize) -> QueueSlot {
        held.bytes += bytes;
        held.peak = held.peak.max(held.bytes);
        QueueSlot {
            budget: self.clone(),
            bytes,
        }
    }

    /// A slot for `bytes` now, if the queue has room.
    pub fn try_take(self: &Arc<Self>, bytes: usize) -> Option<QueueSlot> {
        let bytes = self.share(bytes);
        let mut held = self.lock();
        (held.bytes + bytes <= self.limit).then(|| self.admit(&mut held, bytes))
    }

    /// A slot for `bytes`, waiting for the writer to free room.
    pub fn take(self: &Arc<Self>, bytes: usize) -> QueueSlot {
        let bytes = self.share(bytes);
        let mut held = self.lock();
        while held.bytes + bytes > self.limit {
            held = self
                .freed
                .wait(held)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        self.admit(&mut held, bytes)
    }

    /// `take`, awaited: the common case (room now) costs nothing more; a caller that
    /// must wait does so on the blocking pool, never on a runtime worker. Dropping the
    /// future meanwhile frees the slot as soon as it is granted.
    pub async fn take_async(self: &Arc<Self>, bytes: usize) -> QueueSlot {
        if let Some(slot) = self.try_take(bytes) {
            return slot;
        }
        let budget = self.clone();
        match tokio::task::spawn_blocking(move || budget.take(bytes)).await {
            Ok(slot) => slot,
            // The blocking pool is shutting down: wait here rather than fail an append.
            Err(_) => self.take(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_queue_makes_the_next_request_wait_until_room_is_freed() {
        let budget = QueueBudget::new(100);
        let first = budget.try_take(60).expect("room for the first");
        assert!(
            budget.try_take(50).is_none(),
            "60 + 50 passes the bound of 100"
        );
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.take(50))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "it must wait while the first is held"
        );
        drop(first);
        let second = waiter.join().expect("the waiter got its slot");
        assert_eq!(budget.peak(), 60);
        drop(second);
        assert!(budget.try_take(100).is_some(), "everything was given back");
    }

    #[test]
    fn a_request_larger_than_the_bound_goes_alone() {
        let budget = QueueBudget::new(100);
        let big = budget
            .try_take(1_000)
            .expect("an empty queue takes any request");
        assert!(budget.try_take(1).is_none());
        drop(big);
        assert_eq!(budget.peak(), 100);
    }
}
