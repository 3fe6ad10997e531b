//! Subscriptions and the web pages end to end: the real daemon serving its pages on
//! loopback, a plain HTTP client, a loopback feed server and a loopback SMTP server.
//! Subscribe → confirmation mail → confirm by its link → a digest on the next change →
//! one-click unsubscribe from the digest's List-Unsubscribe → nothing on the change
//! after. Forged, expired, wrong-purpose and replayed links refused; cross-site posts
//! refused; the same answer for known and unknown addresses; hostile feed text shown
//! as text; bad requests answered with clear pages.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vigia::links::{Purpose, SigningKey};

use crate::util::shipped_topics;

use crate::digest::{
    html_part, rss, text_part, Item, HOSTILE, REJECT_A, REJECT_B, TURN_A, TURN_B, TURN_COPY,
};
use crate::util::http::{get, post_form, request, Reply};
use crate::util::smtp::{Received, SmtpSink};
use crate::util::{count_kind, events, Daemon, Dir, FeedServer};

const RSS: &str = "application/rss+xml";
/// The key the test daemons sign with; the tests sign their own forgeries with it.
const SECRET: &str = "test-secret-0123456789abcdef";
const TOPIC: &str = "us-mx-security";
/// The base of the links the test sites mail. Like a real site's (behind its proxy),
/// it is not the listener's address, which the daemon picks (port 0) and logs; the
/// tests follow links by their path.
pub(crate) const PUBLIC_URL: &str = "http://vigia.test";

/// A title whose text (after the feed's own escaping) is markup: it must stay text.
const SCRIPTED: Item<'static> = Item {
    guid: "e9",
    title: "Mexico rejects US troops: &lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;",
    summary: "Mexico's foreign ministry said the government rejects any US military operation on its territory.",
    link: "javascript:alert(3)",
    hours_ago: 1,
};

pub(crate) const AGAIN_C: Item<'static> = Item {
    guid: "c3",
    title: "Mexico's foreign ministry rejects US military intervention against cartels",
    summary: "The foreign ministry said Mexico will not accept unilateral US military action on its territory.",
    link: "http://outlet-c.example/2026/sre",
    hours_ago: 0,
};
pub(crate) const AGAIN_D: Item<'static> = Item {
    guid: "d3",
    title: "Sheinbaum rechaza de nuevo cualquier incursión militar estadounidense",
    summary: "La presidenta dijo que México no aceptará tropas de Estados Unidos en su territorio.",
    link: "http://outlet-d.example/2026/incursion",
    hours_ago: 0,
};
pub(crate) const AGAIN_E: Item<'static> = Item {
    guid: "e3",
    title: "Mexico's security cabinet refuses to allow US drone strikes on Mexican soil",
    summary:
        "Officials said the government rejects US military operations against cartels in Mexico.",
    link: "http://outlet-e.example/2026/drones",
    hours_ago: 0,
};

pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut found: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = found() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running daemon with its feed server, SMTP server and web listener.
pub(crate) struct Site {
    /// First, so that it stops before the folder and the servers go.
    daemon: Daemon,
    pub dir: Dir,
    server: FeedServer,
    pub smtp: SmtpSink,
    /// The pages' port on 127.0.0.1, as the daemon reported it.
    pub port: u16,
    /// The operators' listener (/healthz, /metrics), as the daemon reported it.
    pub ops: SocketAddr,
    published: RefCell<Vec<(&'static str, &'static Item<'static>)>>,
}

const FEEDS: &[&str] = &["a", "b", "c", "d", "e"];

impl Site {
    /// A site whose web section trusts the X-Forwarded-For of a proxy on 127.0.0.1.
    pub(crate) fn start(config_subscribers: &[&str], self_service: bool) -> Site {
        Site::start_with(config_subscribers, self_service, &["127.0.0.1/32"])
    }

    pub(crate) fn start_with(
        config_subscribers: &[&str],
        self_service: bool,
        trusted_proxies: &[&str],
    ) -> Site {
        let dir = Dir::new();
        let server = FeedServer::start();
        let smtp = SmtpSink::start();
        write_config(
            &dir,
            &server,
            &smtp,
            config_subscribers,
            self_service,
            trusted_proxies,
        );
        publish(&server, &[]);
        dir.write("web.secret", SECRET);
        let daemon = Daemon::start(&dir);
        let pages = daemon.pages();
        assert_eq!(pages.ip().to_string(), "127.0.0.1", "listen as configured");
        let ops = daemon.ops();
        Site {
            daemon,
            dir,
            server,
            smtp,
            port: pages.port(),
            ops,
            published: RefCell::new(Vec::new()),
        }
    }

    /// Adds items to their outlets' feeds (earlier items stay).
    pub(crate) fn publish(&self, items: &[(&'static str, &'static Item<'static>)]) {
        let mut all = self.published.borrow_mut();
        all.extend_from_slice(items);
        publish(&self.server, &all);
    }

    /// A link as the site mails it: `PUBLIC_URL` and this path.
    pub(crate) fn link(&self, path: &str) -> String {
        format!("{PUBLIC_URL}{path}")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub(crate) fn log(&self) -> String {
        self.daemon.log()
    }

    /// Waits until `who` has received `n` messages; returns them all.
    pub(crate) fn mail_for(&self, who: &str, n: usize) -> Vec<Received> {
        let found = (|| {
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                let mine = self.smtp.to(who);
                if mine.len() >= n {
                    return Some(mine);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            None
        })();
        found.unwrap_or_else(|| {
            panic!(
                "{who} did not get {n} messages (got {}); daemon log:\n{}",
                self.smtp.to(who).len(),
                self.log()
            )
        })
    }

    /// Opens the form: (cookie "name=value", form token).
    pub(crate) fn form(&self) -> (String, String) {
        let page = get(self.port, "/subscribe");
        assert_eq!(page.status, 200, "{}", page.body);
        let cookie = page.cookie("vigia_form").expect("the form sets its cookie");
        let token = page
            .input_value("form_token")
            .expect("the form carries a token");
        (cookie, token)
    }

    pub(crate) fn subscribe(&self, email: &str) -> Reply {
        let (cookie, token) = self.form();
        post_form(
            self.port,
            "/subscribe",
            &[
                ("Cookie", &cookie),
                ("Origin", &format!("http://127.0.0.1:{}", self.port)),
            ],
            &[
                ("form_token", &token),
                ("email", email),
                ("topic", TOPIC),
                ("digest", "on-change"),
            ],
        )
    }

    /// The key the site signs links with.
    pub(crate) fn key(&self) -> SigningKey {
        SigningKey::from_bytes(SECRET.as_bytes()).unwrap()
    }
}

/// The pages on 127.0.0.1 and the operators' endpoints on 127.0.0.2, both on port 0:
/// the daemon picks the ports and logs them. (Two addresses, because `vigia check`
/// refuses `listen` and `ops_listen` written the same, port 0 included.)
fn write_config(
    dir: &Dir,
    server: &FeedServer,
    smtp: &SmtpSink,
    subscribers: &[&str],
    self_service: bool,
    trusted: &[&str],
) {
    let mut text = format!(
        "[daemon]\ndatabase = \"vigia.db\"\nschedule = \"* * * * * *\"\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.2:0\"\n\n\
         [mail]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"vigia <vigia@example.org>\"\nretry_base_s = 1\n\n\
         [web]\npublic_url = \"{PUBLIC_URL}\"\nsecret_file = \"web.secret\"\nself_service = {self_service}\ntrusted_proxies = {trusted:?}\n\n",
        smtp.port(),
    );
    for f in FEEDS {
        text.push_str(&format!(
            "[[feed]]\nid = \"{f}\"\nurl = \"{}\"\nname = \"Outlet {f}\"\n\n",
            server.url(&format!("{f}.xml"))
        ));
    }
    for email in subscribers {
        text.push_str(&format!(
            "[[subscriber]]\nemail = \"{email}\"\ntopics = [\"{TOPIC}\"]\ndigest = \"on-change\"\n\n"
        ));
    }
    text.push_str(&shipped_topics());
    dir.write("vigia.toml", &text);
}

/// Serves each outlet's feed with its items.
fn publish(server: &FeedServer, all: &[(&'static str, &'static Item<'static>)]) {
    for f in FEEDS {
        let mine: Vec<&Item<'_>> = all
            .iter()
            .filter(|(k, _)| k == f)
            .map(|(_, i)| *i)
            .collect();
        server.feed(&format!("{f}.xml"), rss(&format!("outlet-{f}"), &mine), RSS);
    }
}

/// The link in a mail's text part that starts with `prefix`.
pub(crate) fn link_in(mail: &Received, prefix: &str) -> String {
    let text = text_part(&mail.raw);
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"));
    text[start..].split_whitespace().next().unwrap().to_string()
}

/// "/path?query" of an absolute http URL on the test site.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest[rest.find('/').unwrap_or(rest.len())..].to_string()
}

pub(crate) fn token_of(url: &str) -> String {
    url.split_once("token=")
        .map(|(_, t)| t.to_string())
        .unwrap()
}

pub(crate) fn is_digest(m: &Received) -> bool {
    m.message_id().starts_with("<digest-")
}

#[test]
fn subscribe_confirm_digest_then_one_click_unsubscribe() {
    let site = Site::start(&["control@example.org"], true);
    site.publish(&[("a", &REJECT_A), ("b", &REJECT_B)]);
    // The first stance is established and told to the config's subscriber.
    site.mail_for("control@example.org", 1);

    let answer = site.subscribe("Reader@Example.org");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("Check your inbox"), "{}", answer.body);
    let lurker = site.subscribe("lurker@example.org");
    assert_eq!(lurker.status, 200);

    let confirmation = site.mail_for("reader@example.org", 1).remove(0);
    assert_eq!(
        confirmation.header("Subject").as_deref(),
        Some("Confirm your vigia subscription")
    );
    let link = link_in(&confirmation, &site.link("/subscribe/confirm?token="));
    assert!(
        html_part(&confirmation.raw).contains(&link),
        "the HTML part has the same link"
    );

    // A second request within the hour: the same answer, and no second mail.
    let again = site.subscribe("reader@example.org");
    assert_eq!(
        (again.status, again.body_without_footer()),
        (answer.status, answer.body_without_footer())
    );

    // Following the link shows one button; pressing it confirms.
    let page = get(site.port, &path_of(&link));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Confirm subscription") && page.body.contains("Reader@Example.org"),
        "{}",
        page.body
    );
    let token = page
        .input_value("token")
        .expect("the page's button carries the token");
    assert_eq!(token, token_of(&link));
    let confirmed = post_form(site.port, "/subscribe/confirm", &[], &[("token", &token)]);
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert!(confirmed.body.contains("Subscribed"), "{}", confirmed.body);
    // The same link again is refused, and changes nothing.
    let replay = post_form(site.port, "/subscribe/confirm", &[], &[("token", &token)]);
    assert_eq!(replay.status, 410, "{}", replay.body);
    assert!(replay.body.contains("already been used"), "{}", replay.body);

    // The next change: a digest for the reader, with RFC 8058 headers.
    site.publish(&[
        ("a", &TURN_A),
        ("c", &TURN_COPY),
        ("b", &TURN_B),
        ("e", &HOSTILE),
    ]);
    site.mail_for("control@example.org", 2);
    let digest = site
        .mail_for("reader@example.org", 2)
        .into_iter()
        .find(is_digest)
        .expect("the reader's digest");
    assert!(digest
        .header("Subject")
        .unwrap()
        .contains("now supports US military action"));
    let list = digest.header("List-Unsubscribe").unwrap();
    let prefix = format!("<{}", site.link("/unsubscribe?token="));
    assert!(
        list.starts_with(&prefix) && list.contains("<mailto:vigia@example.org?"),
        "{list}"
    );
    assert_eq!(
        digest.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let stance_page = site.link("/stances/us_military_action/mx_gov");
    assert!(
        text_part(&digest.raw).contains(&stance_page),
        "the digest links to the stance page"
    );

    // The front page lists the syndicated story once, with its copy counted.
    let home = get(site.port, "/");
    let stories = &home.body[home.body.find("<section class=\"stories\">").unwrap()..];
    assert_eq!(stories.matches(crate::digest::TURN).count(), 1, "{stories}");
    assert!(stories.contains("also in 1 more"), "{stories}");

    // The stance page it links to shows the change and its evidence.
    let history = get(site.port, "/stances/us_military_action/mx_gov");
    assert_eq!(history.status, 200);
    assert!(
        history
            .body
            .contains("Mexico agrees to let US special forces"),
        "{}",
        history.body
    );
    assert!(
        history.body.contains("<svg class=\"timeline\""),
        "{}",
        history.body
    );

    // One click: a POST to the link, as a mail provider sends it.
    let one_click = &list[1..list.find('>').unwrap()];
    let left = post_form(
        site.port,
        &path_of(one_click),
        &[],
        &[("List-Unsubscribe", "One-Click")],
    );
    assert_eq!(left.status, 200, "{}", left.body);
    assert!(left.body.contains("Unsubscribed"), "{}", left.body);
    let evs = events(&site.dir);
    let gone: Vec<_> = evs
        .iter()
        .filter(|e| e["kind"] == "SubscriberUnsubscribed")
        .collect();
    assert_eq!(gone.len(), 1, "{gone:#?}");
    assert_eq!(gone[0]["payload"]["via"], "one-click");
    assert_eq!(
        post_form(
            site.port,
            &path_of(one_click),
            &[],
            &[("List-Unsubscribe", "One-Click")]
        )
        .status,
        410
    );

    // The change after: the control hears of it, the reader does not.
    site.publish(&[("c", &AGAIN_C), ("d", &AGAIN_D), ("e", &AGAIN_E)]);
    let control = site.mail_for("control@example.org", 3);
    assert!(
        control[2]
            .header("Subject")
            .unwrap()
            .contains("now opposes"),
        "{:?}",
        control[2].header("Subject")
    );
    // The digests of one cycle are queued in one batch before any is sent: with the
    // control's in the log, any for the reader would be there too.
    let queued_for_reader = events(&site.dir)
        .iter()
        .filter(|e| {
            e["kind"] == "DigestQueued"
                && e["payload"]["to"]
                    .as_str()
                    .is_some_and(|to| to.eq_ignore_ascii_case("reader@example.org"))
        })
        .count();
    assert_eq!(
        queued_for_reader, 2,
        "the confirmation and one digest, none after unsubscribing"
    );
    let reader: Vec<_> = site
        .smtp
        .to("reader@example.org")
        .into_iter()
        .filter(is_digest)
        .collect();
    assert_eq!(reader.len(), 1, "no digest after unsubscribing");
    assert_eq!(
        site.smtp.to("reader@example.org").len(),
        2,
        "one confirmation (the second request within the hour sent none) and one digest"
    );
    // Never confirmed, never a digest: only the confirmation mail.
    let lurker_mail = site.smtp.to("lurker@example.org");
    assert_eq!(lurker_mail.len(), 1);
    assert!(!is_digest(&lurker_mail[0]));
    assert_eq!(
        count_kind(&evs, "SubscriberRequested"),
        2,
        "the throttled request recorded nothing"
    );
}

#[test]
fn links_refuse_forgery_expiry_wrong_purpose_and_replay() {
    let site = Site::start(&[], true);
    let now = chrono::Utc::now().timestamp();
    let key = site.key();
    let other = SigningKey::from_bytes(b"some-other-key-0123456789").unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "forged",
            other
                .sign(Purpose::Confirm, "a@example.org", now, 3600)
                .unwrap(),
            400,
            "not valid",
        ),
        (
            "expired",
            key.sign(Purpose::Confirm, "a@example.org", now - 7200, 3600)
                .unwrap(),
            410,
            "expired",
        ),
        (
            "wrong purpose",
            key.sign(Purpose::Unsubscribe, "a@example.org", now, 3600)
                .unwrap(),
            400,
            "something else",
        ),
        ("damaged", "abc.def".to_string(), 400, "not valid"),
    ];
    for (what, token, status, says) in &cases {
        for reply in [
            get(site.port, &format!("/subscribe/confirm?token={token}")),
            post_form(site.port, "/subscribe/confirm", &[], &[("token", token)]),
        ] {
            assert_eq!(reply.status, *status, "{what}: {}", reply.body);
            assert!(reply.body.contains(says), "{what}: {}", reply.body);
        }
    }
    // Unsubscribe links likewise, and one for an address that is not subscribed.
    let forged = other
        .sign(Purpose::Unsubscribe, "a@example.org", now, 3600)
        .unwrap();
    assert_eq!(
        post_form(
            site.port,
            &format!("/unsubscribe?token={forged}"),
            &[],
            &[("List-Unsubscribe", "One-Click")]
        )
        .status,
        400
    );
    let confirm_token = key
        .sign(Purpose::Confirm, "a@example.org", now, 3600)
        .unwrap();
    assert_eq!(
        post_form(
            site.port,
            &format!("/unsubscribe?token={confirm_token}"),
            &[],
            &[]
        )
        .status,
        400
    );
    let stranger = key
        .sign(Purpose::Unsubscribe, "nobody@example.org", now, 3600)
        .unwrap();
    let reply = post_form(
        site.port,
        &format!("/unsubscribe?token={stranger}"),
        &[],
        &[("List-Unsubscribe", "One-Click")],
    );
    assert_eq!(reply.status, 410, "{}", reply.body);
    assert!(reply.body.contains("Not subscribed"));
    // A confirmation link for someone who asked for nothing confirms nothing.
    let unasked = key
        .sign(Purpose::Confirm, "nobody@example.org", now, 3600)
        .unwrap();
    assert_eq!(
        post_form(site.port, "/subscribe/confirm", &[], &[("token", &unasked)]).status,
        410
    );
    let evs = events(&site.dir);
    assert_eq!(
        count_kind(&evs, "SubscriberConfirmed") + count_kind(&evs, "SubscriberUnsubscribed"),
        0
    );
    // Replay of an unsubscribe link: only the first use counts.
    crate::util::vigia_ok(
        &[
            "--config",
            "vigia.toml",
            "subscribers",
            "add",
            "kim@example.org",
            "--topic",
            TOPIC,
        ],
        &site.dir,
    );
    let link = key
        .sign(Purpose::Unsubscribe, "kim@example.org", now + 1, 3600)
        .unwrap();
    let page = get(site.port, &format!("/unsubscribe?token={link}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"action-button\""),
        "GET shows one button and changes nothing"
    );
    assert_eq!(
        post_form(site.port, "/unsubscribe", &[], &[("token", &link)]).status,
        200
    );
    let replay = post_form(site.port, "/unsubscribe", &[], &[("token", &link)]);
    assert_eq!(replay.status, 410);
    assert!(replay.body.contains("already been used"), "{}", replay.body);
    // RFC 8058 prefers multipart/form-data for the one-click POST: taken as well.
    crate::util::vigia_ok(
        &[
            "--config",
            "vigia.toml",
            "subscribers",
            "add",
            "lea@example.org",
            "--topic",
            TOPIC,
        ],
        &site.dir,
    );
    let lea = key
        .sign(Purpose::Unsubscribe, "lea@example.org", now + 1, 3600)
        .unwrap();
    let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
    let reply = request(
        site.port,
        "POST",
        &format!("/unsubscribe?token={lea}"),
        &[("Content-Type", "multipart/form-data; boundary=XyZ")],
        multipart,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let evs = events(&site.dir);
    let left: Vec<_> = evs
        .iter()
        .filter(|e| e["kind"] == "SubscriberUnsubscribed")
        .collect();
    assert_eq!(
        left.len(),
        2,
        "kim by the page's button, lea by one click: {left:#?}"
    );
    assert_eq!(left[0]["payload"]["via"], "link");
    assert_eq!(left[1]["payload"]["via"], "one-click");
}

#[test]
fn the_form_refuses_cross_site_posts_and_bad_input_and_answers_alike() {
    let site = Site::start(&["known@example.org"], true);
    assert!(
        get(site.port, "/").body.contains("href=\"/subscribe\""),
        "with self-service on, the front page links to the form"
    );
    let origin = format!("http://127.0.0.1:{}", site.port);
    let (cookie, token) = site.form();
    // Each check below comes from its own client (the site trusts its loopback proxy's
    // X-Forwarded-For), so that the per-client rate, which counts every post, stays
    // out of the way until it is the point.
    let next_client = std::cell::Cell::new(0u8);
    let client = || {
        next_client.set(next_client.get() + 1);
        format!("192.0.2.{}", next_client.get())
    };
    let fields = |token: &str, email: &str| {
        vec![
            ("form_token", token.to_string()),
            ("email", email.to_string()),
            ("topic", TOPIC.to_string()),
        ]
    };
    let post = |headers: &[(&str, &str)], fields: Vec<(&str, String)>| {
        let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let from = client();
        let mut h = headers.to_vec();
        h.push(("X-Forwarded-For", from.as_str()));
        post_form(site.port, "/subscribe", &h, &f)
    };
    // Cross-site: another Origin, a browser's own cross-site mark, no cookie, a
    // token made for another cookie.
    for (what, headers) in [
        (
            "origin",
            vec![
                ("Cookie", cookie.as_str()),
                ("Origin", "http://evil.example"),
            ],
        ),
        (
            "sec-fetch-site",
            vec![
                ("Cookie", cookie.as_str()),
                ("Sec-Fetch-Site", "cross-site"),
            ],
        ),
        ("no cookie", vec![("Origin", origin.as_str())]),
        (
            "other cookie",
            vec![("Cookie", "vigia_form=0123"), ("Origin", origin.as_str())],
        ),
    ] {
        let reply = post(&headers, fields(&token, "x@example.org"));
        assert_eq!(reply.status, 403, "{what}: {}", reply.body);
        assert!(reply.body.contains("Form refused"), "{what}");
    }
    let ok_headers = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
    // Bad input: a clear page, nothing recorded, and the form can be sent again.
    let bad_address = post(&ok_headers, fields(&token, "not-an-address"));
    assert_eq!(bad_address.status, 400);
    assert!(bad_address.body.contains("Not an email address"));
    let mut unknown = fields(&token, "x@example.org");
    unknown[2].1 = "no-such-topic".into();
    let unknown_topic = post(&ok_headers, unknown);
    assert_eq!(unknown_topic.status, 400);
    assert!(unknown_topic.body.contains("Unknown topic"));
    let huge = "a".repeat(20_000);
    let too_big = request(
        site.port,
        "POST",
        "/subscribe",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Forwarded-For", &client()),
        ],
        format!("email={huge}").as_bytes(),
    );
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    let json = request(
        site.port,
        "POST",
        "/subscribe",
        &[
            ("Content-Type", "application/json"),
            ("Cookie", &cookie),
            ("X-Forwarded-For", &client()),
        ],
        b"{\"email\":1}",
    );
    assert!(matches!(json.status, 403 | 415), "{}", json.status);
    assert_eq!(
        request(site.port, "PUT", "/subscribe", &[], b"").status,
        405
    );
    assert_eq!(
        request(site.port, "DELETE", "/unsubscribe", &[], b"").status,
        405
    );
    assert_eq!(get(site.port, "/no-such-page").status, 404);
    assert_eq!(get(site.port, "/stances/no_issue/no_actor").status, 404);
    assert_eq!(get(site.port, "/stances/%3Cscript%3E/x").status, 404);
    assert_eq!(count_kind(&events(&site.dir), "SubscriberRequested"), 0);

    // Known (confirmed by the config) and unknown addresses get the same answer (and
    // take as long: regression::the_time_a_subscribe_answer_takes_does_not_tell_what_was_recorded).
    let with_a_form = |email: &'static str| {
        let (cookie, token) = site.form();
        let headers = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
        let reply = post(&headers, fields(&token, email));
        (reply, cookie, token)
    };
    let (known, used_cookie, used_token) = with_a_form("known@example.org");
    let (unknown, _, _) = with_a_form("stranger@example.org");
    assert_eq!(known.status, 200, "{}", known.body);
    assert_eq!(
        (known.status, known.body_without_footer()),
        (unknown.status, unknown.body_without_footer())
    );
    // A form token works once: sent again, it is refused.
    let again = post(
        &[
            ("Cookie", used_cookie.as_str()),
            ("Origin", origin.as_str()),
        ],
        fields(&used_token, "third@example.org"),
    );
    assert_eq!(again.status, 403, "{}", again.body);
    // A confirmed subscriber's request does not change what they receive until confirmed.
    let listed = crate::util::vigia_ok(
        &["--config", "vigia.toml", "subscribers", "list"],
        &site.dir,
    );
    let known_line = listed
        .lines()
        .find(|l| l.starts_with("known@example.org"))
        .unwrap();
    assert!(known_line.contains("confirmed"), "{listed}");
    // Per-client rate: five posts in ten minutes, bad ones counted before they are
    // read, then 429 even for a good one.
    let one_client = [
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
        ("X-Forwarded-For", "198.51.100.7"),
    ];
    let from_one = |fields: Vec<(&str, String)>| {
        let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post_form(site.port, "/subscribe", &one_client, &f)
    };
    for _ in 0..4 {
        assert_eq!(from_one(fields(&token, "not-an-address")).status, 400);
    }
    assert_eq!(from_one(fields(&token, "fifth@example.org")).status, 200);
    let limited = from_one(fields(&token, "sixth@example.org"));
    assert_eq!(limited.status, 429, "{}", limited.body);
    // Every page: the policy that forbids script, and no script.
    for path in [
        "/",
        "/subscribe",
        "/unsubscribe",
        "/stances/us_military_action/mx_gov",
        "/nope",
    ] {
        let page = get(site.port, path);
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert!(!page.body.contains("<script"), "{path}");
    }
}

#[test]
fn pages_show_stances_timelines_and_hostile_titles_as_text() {
    let site = Site::start(&["control@example.org"], false);
    site.publish(&[("a", &REJECT_A), ("b", &REJECT_B), ("e", &SCRIPTED)]);
    site.mail_for("control@example.org", 1);
    let home = wait_for(
        "the front page to show the stance",
        Duration::from_secs(20),
        || {
            let page = get(site.port, "/");
            page.body.contains("badge s-oppose").then_some(page)
        },
    );
    assert_eq!(home.status, 200);
    assert!(
        home.body.contains("<table class=\"stances\">"),
        "{}",
        home.body
    );
    assert!(
        home.body.contains("<svg class=\"timeline\""),
        "{}",
        home.body
    );
    assert!(
        home.body
            .contains("Mexico rejects any US military operation"),
        "the evidence sentence: {}",
        home.body
    );
    assert!(home.body.contains("Recent relevant stories"));
    assert!(
        home.body
            .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;&lt;img src=x"),
        "the hostile title, as text: {}",
        home.body
    );
    assert!(
        !home.body.contains("<script") && !home.body.contains("<img"),
        "{}",
        home.body
    );
    assert!(!home.body.contains("javascript:"), "only http(s) links");
    let page = get(site.port, "/stances/us_military_action/mx_gov");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("established"), "{}", page.body);
    assert!(
        page.body.contains("&lt;script&gt;alert(1)"),
        "the hostile story is evidence, shown as text: {}",
        page.body
    );
    assert!(!page.body.contains("<script") && !page.body.contains("<img"));
    // Self-service off: no form, no subscribing; unsubscribing still works.
    assert_eq!(get(site.port, "/subscribe").status, 404);
    assert_eq!(
        post_form(site.port, "/subscribe", &[], &[("email", "x@example.org")]).status,
        404
    );
    assert!(
        !home.body.contains("href=\"/subscribe\""),
        "no link to a form that is off"
    );
    let now = chrono::Utc::now().timestamp();
    let link = site
        .key()
        .sign(Purpose::Unsubscribe, "control@example.org", now + 1, 3600)
        .unwrap();
    assert_eq!(
        post_form(
            site.port,
            &format!("/unsubscribe?token={link}"),
            &[],
            &[("List-Unsubscribe", "One-Click")]
        )
        .status,
        200
    );
}
