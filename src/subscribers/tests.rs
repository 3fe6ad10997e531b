//! The subscription life cycle end to end: requests, their links, the operator's
//! commands, against a real store.

use chrono::{DateTime, Utc};

use super::*;
use crate::digest::Templates;
use crate::links::{LinkSigner, Purpose, SigningKey};

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
    let check = |email, topics: &[&str], digest| Request::validate(&config, email, topics, digest);
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
        tz: None,
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
