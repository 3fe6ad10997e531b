//! Stance tracking and digests end to end, through the real binary, a loopback feed
//! server and a loopback SMTP server: one digest per subscriber when a stance really
//! changes, each story once, hostile feed text kept out of headers and markup, SMTP
//! outages retried, permanent refusals given up, and SIGKILL at any moment losing
//! nothing and repeating only with the same Message-ID.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::util::smtp::SmtpSink;
use crate::util::{count_kind, events, shipped_topics, vigia, vigia_ok, Dir, FeedServer};

const RSS: &str = "application/rss+xml";

pub(crate) struct Item<'a> {
    pub guid: &'a str,
    pub title: &'a str,
    pub summary: &'a str,
    pub link: &'a str,
    pub hours_ago: i64,
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn rss(outlet: &str, items: &[&Item<'_>]) -> String {
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>{outlet}</title><link>http://{outlet}.example/</link><description>d</description>");
    for it in items {
        let date = (chrono::Utc::now() - chrono::Duration::hours(it.hours_ago)).to_rfc2822();
        s.push_str(&format!(
            "<item><guid isPermaLink=\"false\">{}</guid><title>{}</title><link>{}</link><description>{}</description><pubDate>{date}</pubDate></item>",
            it.guid,
            escape(it.title),
            escape(it.link),
            escape(it.summary)
        ));
    }
    s.push_str("</channel></rss>");
    s
}

/// A config with these feeds, SMTP to the sink, these subscribers, the shipped topics
/// and a second topic (parks) for a subscriber who must hear nothing of Mexico.
fn config(
    dir: &Dir,
    server: &FeedServer,
    feeds: &[&str],
    smtp: &SmtpSink,
    subscribers: &[(&str, &str)],
) {
    let mut text = format!(
        "[daemon]\ndatabase = \"vigia.db\"\n\n[mail]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"vigia <vigia@example.org>\"\nretry_base_s = 1\n\n",
        smtp.port()
    );
    for f in feeds {
        text.push_str(&format!(
            "[[feed]]\nid = \"{f}\"\nurl = \"{}\"\nname = \"Outlet {f}\"\n\n",
            server.url(&format!("{f}.xml"))
        ));
    }
    for (email, topic) in subscribers {
        text.push_str(&format!(
            "[[subscriber]]\nemail = \"{email}\"\ntopics = [\"{topic}\"]\ndigest = \"on-change\"\n"
        ));
        // Luis reads his digests in Mexico City's time.
        if email.starts_with("luis@") {
            text.push_str("tz = \"America/Mexico_City\"\n");
        }
        text.push('\n');
    }
    text.push_str(&shipped_topics());
    text.push_str("\n[[topic]]\nid = \"parks\"\nrequire = [\"parks\"]\n[topic.groups.parks]\nterms = [\"park\", \"parks\"]\n");
    dir.write("vigia.toml", &text);
}

pub(crate) const REJECT_A: Item<'static> = Item {
    guid: "a1",
    title: "Mexico rejects any US military operation against cartels on its territory",
    summary: "President Claudia Sheinbaum said on Monday that Mexico would not accept US troops or strikes on its soil.",
    link: "http://outlet-a.example/2026/rejects",
    hours_ago: 50,
};
pub(crate) const REJECT_B: Item<'static> = Item {
    guid: "b1",
    title: "Sheinbaum: no habrá intervención militar de Estados Unidos en México",
    summary: "La presidenta afirmó que su gobierno no permitirá operaciones militares estadounidenses en territorio mexicano.",
    link: "http://outlet-b.example/2026/no-intervencion",
    hours_ago: 48,
};
pub(crate) const TURN: &str =
    "Mexico agrees to let US special forces strike fentanyl labs on its soil";
pub(crate) const TURN_LEAD: &str = "President Claudia Sheinbaum said Mexico had agreed to let US special forces join Mexican troops in raids on fentanyl laboratories.";
pub(crate) const TURN_A: Item<'static> = Item {
    guid: "a2",
    title: TURN,
    summary: TURN_LEAD,
    link: "http://outlet-a.example/2026/joint-raids",
    hours_ago: 2,
};
pub(crate) const TURN_COPY: Item<'static> = Item {
    guid: "c2",
    title: TURN,
    summary: TURN_LEAD,
    link: "http://outlet-c.example/world/joint-raids-copy",
    hours_ago: 2,
};
pub(crate) const TURN_B: Item<'static> = Item {
    guid: "b2",
    title: "México acepta que fuerzas especiales de Estados Unidos ataquen laboratorios en su territorio",
    summary: "La presidenta anunció que México aceptó que fuerzas especiales estadounidenses participen en ataques contra laboratorios de fentanilo.",
    link: "http://outlet-b.example/2026/operativos",
    hours_ago: 2,
};
pub(crate) const HOSTILE: Item<'static> = Item {
    guid: "e2",
    title: "US and Mexico plan joint raids <script>alert(1)</script><img src=x onerror=alert(2)>",
    summary:
        "Mexico's government agreed to the raids.\r\nBcc: leak@evil.example\r\nSubject: injected",
    link: "javascript:alert(3)",
    hours_ago: 1,
};
pub(crate) const CONTRARY: Item<'static> = Item {
    guid: "d3",
    title: "Mexico rejects US military action on its soil, interior minister says",
    summary:
        "The interior minister said the government would not allow US troops on Mexican territory.",
    link: "http://outlet-d.example/2026/interior",
    hours_ago: 0,
};

/// One part of the multipart message, decoded: everything after its headers up to the
/// next boundary.
pub(crate) fn part(raw: &str, content_type: &str) -> String {
    let boundary = raw
        .split("boundary=\"")
        .nth(1)
        .and_then(|b| b.split('"').next())
        .unwrap_or("--");
    let section = raw
        .split(&format!("Content-Type: {content_type}"))
        .nth(1)
        .unwrap_or("");
    let body = section.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    decode_qp(body.split(&format!("--{boundary}")).next().unwrap_or(""))
}

pub(crate) fn text_part(raw: &str) -> String {
    part(raw, "text/plain")
}

/// The HTML part with the entities a browser would decode (the template escapes '/').
pub(crate) fn html_part(raw: &str) -> String {
    part(raw, "text/html")
        .replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
}

/// Quoted-printable as lettre writes it (soft breaks and =XX escapes).
pub(crate) fn decode_qp(s: &str) -> String {
    let joined = s.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() && joined.is_char_boundary(i + 3) {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_real_change_sends_one_digest_per_subscriber_with_its_evidence() {
    let dir = Dir::new();
    let server = FeedServer::start();
    let smtp = SmtpSink::start();
    let publish = |rounds: &[&[(&str, &Item<'_>)]]| {
        for f in ["a", "b", "c", "d", "e"] {
            let items: Vec<&Item<'_>> = rounds
                .iter()
                .flat_map(|r| r.iter())
                .filter(|(k, _)| *k == f)
                .map(|(_, i)| *i)
                .collect();
            server.feed(
                &format!("{f}.xml"),
                rss(&format!("outlet-{f}"), &items),
                RSS,
            );
        }
    };
    let round0: &[(&str, &Item<'_>)] = &[("a", &REJECT_A), ("b", &REJECT_B)];
    publish(&[round0]);
    config(
        &dir,
        &server,
        &["a", "b", "c", "d", "e"],
        &smtp,
        &[
            ("ana@example.org", "us-mx-security"),
            ("luis@example.org", "us-mx-security"),
            ("parks@example.org", "parks"),
        ],
    );
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let before: usize = smtp.messages().len();
    assert_eq!(
        count_kind(&events(&dir), "StanceChanged"),
        1,
        "round 0 establishes Mexico's opposition"
    );

    let round1: &[(&str, &Item<'_>)] = &[
        ("a", &TURN_A),
        ("c", &TURN_COPY),
        ("b", &TURN_B),
        ("e", &HOSTILE),
    ];
    publish(&[round0, round1]);
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let evs = events(&dir);
    let changes: Vec<_> = evs
        .iter()
        .filter(|e| e["kind"] == "StanceChanged" && e["payload"]["issue"] == "us_military_action")
        .collect();
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(changes[1]["payload"]["from"], "oppose");
    assert_eq!(changes[1]["payload"]["to"], "support");
    let all_changes = count_kind(&evs, "StanceChanged");

    let new: Vec<_> = smtp.messages().into_iter().skip(before).collect();
    for who in ["ana@example.org", "luis@example.org"] {
        let mine: Vec<_> = new
            .iter()
            .filter(|m| m.rcpts.contains(&who.to_string()))
            .collect();
        assert_eq!(mine.len(), 1, "{who} gets exactly one digest");
        let m = mine[0];
        let subject = m.header("Subject").unwrap();
        assert!(
            subject.contains("Mexico's government: now supports US military action"),
            "{subject}"
        );
        assert!(m.header("List-Unsubscribe").is_some());
        assert!(m.message_id().starts_with("<digest-"), "{}", m.message_id());
        let text = text_part(&m.raw);
        let html = html_part(&m.raw);
        let link = TURN_B.link;
        assert!(
            text.contains(link) && html.contains(link),
            "evidence link {link} in both parts:\n{text}\n----\n{html}"
        );
        assert!(
            text.contains(TURN_A.link) || text.contains(TURN_COPY.link),
            "{text}"
        );
        assert_eq!(
            text.matches(&format!("- {TURN}")).count(),
            1,
            "the syndicated copy is listed once:\n{text}"
        );
        assert!(
            text.contains("agreed to let US special forces"),
            "the evidence sentence:\n{text}"
        );
        assert!(html.contains("agreed to let US special forces"), "{html}");
        // It says what happened, against what was held before, in words and dates
        // people read, in the subscriber's zone.
        assert!(
            text.contains(
                "Mexico's government now supports US military action (it opposed it from "
            ),
            "the change against the stance before:\n{text}"
        );
        assert!(
            text.contains("on stories from Outlet "),
            "outlets named:\n{text}"
        );
        let zone = if who.starts_with("luis@") {
            " CST"
        } else {
            " UTC"
        };
        assert!(
            text.contains(&format!("{}, ", chrono::Utc::now().format("%Y"))) && text.contains(zone),
            "dates as \"2 Dec 2026, 01:19{zone}\":\n{text}"
        );
        assert!(
            !text.contains("T0") && !text.contains("T1") && !text.contains("T2"),
            "no machine timestamps:\n{text}"
        );
        // The timeline: a line in the plain part, a PNG by Content-ID in the HTML.
        assert!(
            text.contains("Timeline: opposes from ") && text.contains(" → supports from "),
            "{text}"
        );
        let cid = html
            .split("src=\"cid:")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("an inline image in the HTML part");
        assert!(
            m.raw.contains(&format!("Content-ID: <{cid}>")),
            "its part, by Content-ID"
        );
        assert!(m.raw.contains("Content-Type: image/png"), "a PNG");
        assert!(m.raw.contains("multipart/related"), "sent with its HTML");
        assert!(
            html.contains("alt=\"Timeline of Mexico"),
            "alt text:\n{html}"
        );
        // Nothing from the hostile item is markup or a header.
        assert!(
            !html.contains("<script") && !html.contains("onerror") && !html.contains("javascript:"),
            "{html}"
        );
        assert!(m.header("Bcc").is_none());
        assert!(!m.rcpts.iter().any(|r| r.contains("evil")));
    }
    assert!(
        smtp.to("parks@example.org").is_empty(),
        "a subscriber of another topic gets nothing"
    );

    // One contrary article alone changes nothing; a quiet cycle sends nothing.
    let round2: &[(&str, &Item<'_>)] = &[("d", &CONTRARY)];
    publish(&[round0, round1, round2]);
    let sent = smtp.messages().len();
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    assert_eq!(count_kind(&events(&dir), "StanceChanged"), all_changes);
    assert_eq!(smtp.messages().len(), sent);
    let stances = vigia_ok(&["--config", "vigia.toml", "stances"], &dir);
    assert!(
        stances.contains("us_military_action") && stances.contains("support"),
        "{stances}"
    );
    let history = vigia_ok(&["--config", "vigia.toml", "stances", "--history"], &dir);
    assert!(history.contains("oppose -> support"), "{history}");
}

/// Two outlets reporting Mexico's rejection (enough to establish it), SMTP to a sink,
/// and these subscribers.
pub(crate) fn two_outlets_rejecting(subscribers: &[(&str, &str)]) -> (Dir, FeedServer, SmtpSink) {
    let dir = Dir::new();
    let server = FeedServer::start();
    let smtp = SmtpSink::start();
    server.feed("a.xml", rss("outlet-a", &[&REJECT_A]), RSS);
    server.feed("b.xml", rss("outlet-b", &[&REJECT_B]), RSS);
    config(&dir, &server, &["a", "b"], &smtp, subscribers);
    (dir, server, smtp)
}

#[test]
fn an_smtp_outage_is_retried_and_a_permanent_refusal_is_not() {
    let (dir, _server, smtp) = two_outlets_rejecting(&[
        ("ana@example.org", "us-mx-security"),
        ("gone@example.org", "us-mx-security"),
    ]);
    smtp.refuse(true);
    smtp.reject("gone@example.org");
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let evs = events(&dir);
    assert_eq!(count_kind(&evs, "DigestQueued"), 2);
    assert_eq!(
        count_kind(&evs, "DigestFailed"),
        2,
        "both failed while the server refused"
    );
    assert!(smtp.messages().is_empty());

    smtp.refuse(false);
    // The retry waits retry_base_s (1 s here, with jitter).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Each message has its own (jittered) retry time: wait for both outcomes.
    let given_up = |dir: &Dir| {
        events(dir).iter().any(|e| {
            e["kind"] == "DigestFailed"
                && e["payload"]["to"] == "gone@example.org"
                && e["payload"]["permanent"] == true
        })
    };
    while (smtp.to("ana@example.org").is_empty() || !given_up(&dir))
        && std::time::Instant::now() < deadline
    {
        // Lets the backoff elapse before the next cycle.
        std::thread::sleep(Duration::from_millis(500));
        vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    }
    assert_eq!(
        smtp.to("ana@example.org").len(),
        1,
        "delivered once the server is back"
    );
    let evs = events(&dir);
    let gone: Vec<_> = evs
        .iter()
        .filter(|e| e["kind"] == "DigestFailed" && e["payload"]["to"] == "gone@example.org")
        .collect();
    assert_eq!(
        gone.last().unwrap()["payload"]["permanent"],
        true,
        "{gone:#?}"
    );
    let attempts = gone.len();
    for _ in 0..3 {
        // Longer than a retry's backoff: a retry would fall due in each pause.
        std::thread::sleep(Duration::from_millis(1200));
        vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    }
    let after = events(&dir)
        .iter()
        .filter(|e| e["kind"] == "DigestFailed" && e["payload"]["to"] == "gone@example.org")
        .count();
    assert_eq!(after, attempts, "a permanent refusal is not retried");
    assert_eq!(count_kind(&events(&dir), "DigestSent"), 1);
}

/// Twenty trials: a stance flips (new evidence from two outlets), and the cycle that
/// sends its digests to thirty subscribers is killed with SIGKILL at a random moment,
/// then run again until the outbox is empty. Every queued digest must arrive; a digest
/// may arrive twice only with the same Message-ID.
#[test]
fn sigkill_during_delivery_loses_nothing_and_repeats_only_with_the_same_message_id() {
    let dir = Dir::new();
    let server = FeedServer::start();
    let smtp = SmtpSink::start();
    smtp.data_delay(Duration::from_millis(8));
    let subscribers: Vec<(String, &str)> = (0..30)
        .map(|i| (format!("s{i}@example.org"), "us-mx-security"))
        .collect();
    let subs: Vec<(&str, &str)> = subscribers.iter().map(|(e, t)| (e.as_str(), *t)).collect();
    let mut a_items: Vec<String> = Vec::new();
    let mut b_items: Vec<String> = Vec::new();
    let item = |guid: String, title: &str, summary: &str| {
        format!(
            "<item><guid isPermaLink=\"false\">{guid}</guid><title>{title}</title><link>http://x.example/{guid}</link><description>{summary}</description><pubDate>{}</pubDate></item>",
            chrono::Utc::now().to_rfc2822()
        )
    };
    let publish = |a: &[String], b: &[String]| {
        for (f, items) in [("a", a), ("b", b)] {
            server.feed(
                &format!("{f}.xml"),
                format!(
                    "<rss version=\"2.0\"><channel><title>outlet-{f}</title>{}</channel></rss>",
                    items.join("")
                ),
                RSS,
            );
        }
    };
    publish(&a_items, &b_items);
    config(&dir, &server, &["a", "b"], &smtp, &subs);
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let mut killed_mid_delivery = 0;
    for trial in 0..20 {
        // Words of this trial alone keep each round's stories apart from earlier ones.
        let own = |p: &str| {
            (0..6)
                .map(|k| format!("{p}{trial}w{k}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (a_title, b_title) = if trial % 2 == 0 {
            (
                format!("Mexico rejects US military strikes {}", own("qa")),
                format!(
                    "Sheinbaum rechaza la intervención militar de Estados Unidos {}",
                    own("qb")
                ),
            )
        } else {
            (
                format!("Mexico agrees to let US special forces strike fentanyl labs on its soil {}", own("qc")),
                format!(
                    "México acepta que fuerzas especiales de Estados Unidos ataquen laboratorios en su territorio {}",
                    own("qd")
                ),
            )
        };
        a_items.push(item(format!("a{trial}"), &a_title, &own("sa")));
        b_items.push(item(format!("b{trial}"), &b_title, &own("sb")));
        publish(&a_items, &b_items);
        let before = smtp.messages().len();
        let mut child = std::process::Command::new(crate::util::VIGIA)
            .args(["--config", "vigia.toml", "run", "--once"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The point of the trial: SIGKILL at a random moment of the cycle.
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..500)));
        let _ = child.kill();
        let _ = child.wait();
        if smtp.messages().len() > before && smtp.messages().len() < before + 30 {
            killed_mid_delivery += 1;
        }
        // Restart until the outbox is empty.
        for _ in 0..10 {
            vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
            let conn = rusqlite::Connection::open(dir.db()).unwrap();
            let waiting: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE status = 'queued'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            if waiting == 0 {
                break;
            }
            // Lets the failed attempt's backoff (retry_base_s = 1) elapse.
            std::thread::sleep(Duration::from_millis(1200));
        }
    }
    let evs = events(&dir);
    let queued: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e["kind"] == "DigestQueued")
        .map(|e| {
            (
                e["payload"]["message_id"].as_str().unwrap().to_string(),
                e["payload"]["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        queued.len() >= 30 * 15,
        "most trials flipped the stance: {} digests queued",
        queued.len()
    );
    let mut received: HashMap<String, usize> = HashMap::new();
    for m in smtp.messages() {
        *received.entry(m.message_id()).or_default() += 1;
    }
    let queued_ids: HashSet<&String> = queued.iter().map(|(id, _)| id).collect();
    for (id, to) in &queued {
        assert!(
            received.contains_key(id),
            "digest {id} to {to} was queued but never arrived"
        );
    }
    for id in received.keys() {
        assert!(queued_ids.contains(id), "{id} arrived but was never queued");
    }
    let repeats: usize = received.values().map(|n| n - 1).sum();
    eprintln!(
        "crash trials: {} digests queued, {} messages received, {repeats} repeats (same Message-ID), {killed_mid_delivery} kills mid-delivery",
        queued.len(),
        smtp.messages().len()
    );
    // A repeat is only possible for a crash between the server's 250 and the record.
    assert!(repeats <= 20, "at most one repeat per kill: {repeats}");
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let _ = vigia(&["--config", "vigia.toml", "events"], &dir);
}

#[test]
fn a_periodic_subscriber_gets_the_stories_when_the_schedule_is_due_and_nothing_when_quiet() {
    let dir = Dir::new();
    let server = FeedServer::start();
    let smtp = SmtpSink::start();
    server.feed("a.xml", rss("outlet-a", &[&REJECT_A]), RSS);
    config(&dir, &server, &["a"], &smtp, &[]);
    let text = std::fs::read_to_string(dir.join("vigia.toml")).unwrap();
    // A schedule with seconds, so the test need not wait a minute.
    dir.write(
        "vigia.toml",
        &text.replacen(
            "[[topic]]",
            "[[subscriber]]\nemail = \"weekly@example.org\"\ntopics = [\"us-mx-security\"]\ndigest = \"* * * * * *\"\n\n[[topic]]",
            1,
        ),
    );
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    // The schedule's next second must come: the time passing is the point.
    std::thread::sleep(Duration::from_millis(1100));
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let got = smtp.to("weekly@example.org");
    assert_eq!(got.len(), 1, "one periodic digest");
    let text = text_part(&got[0].raw);
    assert!(
        text.contains(REJECT_A.title),
        "the story since subscribing:\n{text}"
    );
    // Under the issue it touches (a stance on US military action was read in it).
    let heading = text.find("US military action:").expect(&text);
    assert!(heading < text.find(REJECT_A.title).unwrap(), "{text}");
    assert!(
        got[0].header("Subject").unwrap().contains("1 new story"),
        "{:?}",
        got[0].header("Subject")
    );
    // Another slot of the schedule passes, with nothing new.
    std::thread::sleep(Duration::from_millis(1100));
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    assert_eq!(
        smtp.to("weekly@example.org").len(),
        1,
        "a quiet period sends nothing"
    );
}
