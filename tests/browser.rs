//! A real browser against the daemon's pages: headless Chromium, driven through
//! chromedriver's WebDriver protocol, opens `/`, sees the stance table and its
//! timeline styled by the site's own stylesheet (the CSP lets nothing else in), fills
//! in the subscribe form, submits it and sees the confirmation notice. Screenshots go
//! to target/screenshots/. Built with `--features browser`; .ci/run installs Debian's
//! chromium and chromium-driver and runs it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::digest::{REJECT_A, REJECT_B, TURN_A, TURN_B, TURN_COPY};
use crate::util::http::{get, request};
use crate::web::{Site, AGAIN_C};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one Chromium session; both end when dropped.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        for exe in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(exe).exists(),
                "{exe} is missing: apt-get install chromium chromium-driver (.ci/run does)"
            );
        }
        // Port 0: chromedriver picks one and says which ("ChromeDriver was started
        // successfully on port 36015."), so no other process can take it first.
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().expect("a piped stdout");
        let (said, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            // Read to the end, so that chromedriver never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    if let Ok(port) = rest.trim_end_matches('.').trim().parse::<u16>() {
                        let _ = said.send(port);
                    }
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(20))
            .expect("chromedriver says which port it listens on");
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(port, "/status").status != 200 {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    /// One WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let reply = request(
            self.port,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        let value: Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", reply.body));
        assert_eq!(reply.status, 200, "{method} {path}: {value}");
        value["value"].clone()
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no {css} on the page: {found}"))
            .to_string()
    }

    fn count(&self, css: &str) -> usize {
        self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map_or(0, Vec::len)
    }

    fn text(&self, element: &str) -> String {
        self.command("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn css(&self, element: &str, property: &str) -> String {
        self.command("GET", &format!("/element/{element}/css/{property}"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn type_into(&self, element: &str, text: &str) {
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, element: &str) {
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Runs a script in the page and returns its value.
    fn script(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.command("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = request(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn a_browser_sees_the_stances_and_subscribes() {
    let site = Site::start(&["control@example.org"], true);
    // A history: opposition established, then turned to support.
    site.publish(&[("a", &REJECT_A), ("b", &REJECT_B)]);
    site.mail_for("control@example.org", 1);
    site.publish(&[
        ("a", &TURN_A),
        ("c", &TURN_COPY),
        ("b", &TURN_B),
        ("d", &AGAIN_C),
    ]);
    let digests = site.mail_for("control@example.org", 2);

    let browser = Browser::start();
    a_mail_client_shows_the_digest(&browser, &digests[1].raw);
    let base = format!("http://127.0.0.1:{}", site.port);
    browser.open(&format!("{base}/"));
    let table = browser.find("table.stances");
    let table_text = browser.text(&table);
    assert!(table_text.contains("Mexico's government"), "{table_text}");
    assert!(table_text.contains("supports"), "{table_text}");
    assert!(
        browser.count("svg.timeline rect.seg") >= 2,
        "the timeline has both stances"
    );
    // The stylesheet applied (a CSP that blocked it would leave the badge unstyled).
    let badge = browser.find("span.badge.s-support");
    assert_eq!(
        browser.css(&badge, "background-color"),
        "rgba(46, 125, 50, 1)"
    );
    let shot = browser.screenshot("home.png");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real picture"
    );

    browser.open(&format!("{base}/stances/us_military_action/mx_gov"));
    assert!(browser.count("ol.history > li") >= 2);
    browser.screenshot("stance.png");

    browser.open(&format!("{base}/subscribe"));
    let email = browser.find("#email");
    browser.type_into(&email, "browser@example.org");
    browser.screenshot("subscribe.png");
    browser.click(&browser.find("#subscribe-button"));
    let notice = browser.find("#notice");
    let said = browser.text(&notice);
    assert!(said.contains("Check your inbox"), "{said}\n{}", site.log());
    browser.screenshot("subscribed.png");
    // The browser's post passed the cross-site checks and the request was recorded.
    let mail = site.mail_for("browser@example.org", 1);
    assert_eq!(
        mail[0].header("Subject").as_deref(),
        Some("Confirm your vigia subscription")
    );
}

/// The base64 body of the message part with this Content-ID.
fn inline_part(raw: &str, cid: &str) -> Option<Vec<u8>> {
    let section = raw.split(&format!("Content-ID: <{cid}>")).nth(1)?;
    let body = section.split_once("\r\n\r\n")?.1;
    let encoded: String = body
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
}

/// Opens a digest's HTML part as a mail client shows it (its `cid:` pictures taken
/// from the message's own parts), checks that the change and its timeline picture are
/// there, and keeps a screenshot and the message itself (target/screenshots/digest.png
/// and digest.eml, which .ci/run scores with SpamAssassin).
fn a_mail_client_shows_the_digest(browser: &Browser, raw: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("digest.eml"), raw).unwrap();
    let mut html = crate::digest::part(raw, "text/html");
    let cids: Vec<String> = html
        .split("src=\"cid:")
        .skip(1)
        .filter_map(|r| r.split('"').next().map(str::to_string))
        .collect();
    assert!(
        !cids.is_empty(),
        "the digest shows its timeline picture:\n{html}"
    );
    for cid in &cids {
        let png = inline_part(raw, cid).unwrap_or_else(|| panic!("no part for cid:{cid}"));
        assert!(png.starts_with(b"\x89PNG"), "cid:{cid} is a PNG");
        let data = base64::engine::general_purpose::STANDARD.encode(&png);
        html = html.replace(
            &format!("cid:{cid}"),
            &format!("data:image/png;base64,{data}"),
        );
    }
    let page = dir.join("digest.html");
    std::fs::write(&page, &html).unwrap();
    browser.open(&format!("file://{}", page.display()));
    let lead = browser.text(&browser.find("h2"));
    assert!(
        lead.contains("Mexico's government now supports US military action"),
        "{lead}"
    );
    let drawn = browser
        .script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0);");
    assert_eq!(
        drawn
            .as_array()
            .map(|a| a.iter().all(|v| v == &Value::Bool(true))),
        Some(true),
        "every picture is drawn: {drawn}"
    );
    let shot = browser.screenshot("digest.png");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real picture"
    );
}
