//! The one place that names streams and idempotency keys (ARCHITECTURE.md's
//! "Streams" and "Event kinds" tables). Every stream and key the program writes is
//! built here, so a second backend, a migration or a reader of the log sees the
//! same names, and changing one is a change to this file alone.

/// The config's stream: `ConfigApplied`.
pub const CONFIG: &str = "config";

/// A feed's polls: `FeedPolled`, `FeedPollFailed`.
pub fn feed(feed_id: &str) -> String {
    format!("feed:{feed_id}")
}

/// An article's life: discovery, revisions, readings, corrections.
pub fn article(article_id: &str) -> String {
    format!("article:{article_id}")
}

/// The tracked stance of an actor on an issue: `StanceChanged`.
pub fn stance(topic: &str, issue: &str, actor: &str) -> String {
    format!("stance:{topic}:{issue}:{actor}")
}

/// A subscriber, by address (case-insensitive, as mail systems treat it).
pub fn subscriber(email: &str) -> String {
    format!("subscriber:{}", email.to_lowercase())
}

/// One digest's life: queued, sent or failed.
pub fn digest(digest_id: &str) -> String {
    format!("digest:{digest_id}")
}

/// Idempotency keys: the same fact appended twice is recorded once.
pub mod key {
    /// An article's discovery.
    pub fn discovered(article_id: &str) -> String {
        format!("article:{article_id}:discovered")
    }

    /// An article's n-th revision.
    pub fn revised(article_id: &str, revision: u32) -> String {
        format!("article:{article_id}:revision:{revision}")
    }

    /// A reading of one text under one set of rules.
    pub fn classified(article_id: &str, content_hash: &str, rules_hash: &str) -> String {
        format!("classified:{article_id}:{content_hash}:{rules_hash}")
    }

    /// One stance read in one text under one set of rules.
    pub fn stance_observed(
        article_id: &str,
        content_hash: &str,
        rules_hash: &str,
        (topic, issue, actor): (&str, &str, &str),
        stance: &str,
    ) -> String {
        format!("stance:{article_id}:{content_hash}:{rules_hash}:{topic}:{issue}:{actor}:{stance}")
    }

    /// A change of a tracked stance, at the stream version it takes.
    pub fn stance_changed(stream: &str, version: u64) -> String {
        format!("stance-change:{stream}:{version}")
    }

    /// A digest queued (its id is the digest's identity).
    pub fn digest_queued(digest_id: &str) -> String {
        format!("digest:{digest_id}")
    }

    pub fn digest_sent(digest_id: &str) -> String {
        format!("digest-sent:{digest_id}")
    }

    pub fn digest_failed(digest_id: &str, attempt: u32) -> String {
        format!("digest-failed:{digest_id}:{attempt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These names are in every log written so far: they must never change.
    #[test]
    fn names_are_those_already_in_the_log() {
        assert_eq!(feed("a"), "feed:a");
        assert_eq!(article("x"), "article:x");
        assert_eq!(stance("t", "i", "a"), "stance:t:i:a");
        assert_eq!(subscriber("Ana@Example.ORG"), "subscriber:ana@example.org");
        assert_eq!(digest("d"), "digest:d");
        assert_eq!(key::discovered("x"), "article:x:discovered");
        assert_eq!(key::revised("x", 2), "article:x:revision:2");
        assert_eq!(key::classified("x", "c", "r"), "classified:x:c:r");
        assert_eq!(
            key::stance_observed("x", "c", "r", ("t", "i", "a"), "oppose"),
            "stance:x:c:r:t:i:a:oppose"
        );
        assert_eq!(
            key::stance_changed("stance:t:i:a", 3),
            "stance-change:stance:t:i:a:3"
        );
        assert_eq!(key::digest_queued("d"), "digest:d");
        assert_eq!(key::digest_sent("d"), "digest-sent:d");
        assert_eq!(key::digest_failed("d", 4), "digest-failed:d:4");
    }
}
