//! The learned reader through the real binary: a topic's examples checked like the
//! config, `vigia train` and the model file it writes (fresh, reproducible, stale when
//! the examples change), cross-validation, and operators' corrections recorded as
//! events and taken into training. Examples are slices of the shipped examples file.

use crate::util::{events, rss, shipped_topics, vigia, vigia_ok, Dir, FeedServer};

const SHIPPED_EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/examples/us-mx-security.jsonl"
);

/// Every `step`-th shipped example, so both languages and every kind of story appear.
fn examples(step: usize) -> String {
    let text = std::fs::read_to_string(SHIPPED_EXAMPLES).unwrap();
    text.lines()
        .step_by(step)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A config whose topic is the shipped one, trained on `ex.jsonl` in the test's folder.
fn config(dir: &Dir, feed_url: Option<&str>) {
    let topics = shipped_topics();
    let start = topics.find("examples = \"").unwrap();
    let end = start + topics[start..].find('\n').unwrap();
    let topics = format!(
        "{}examples = \"ex.jsonl\"{}",
        &topics[..start],
        &topics[end..]
    );
    let feed = feed_url
        .map(|u| format!("[[feed]]\nid = \"wire\"\nurl = \"{u}\"\nlang = \"en\"\n\n"))
        .unwrap_or_default();
    dir.write(
        "vigia.toml",
        &format!(
            "[daemon]\ndatabase = \"vigia.db\"\n\n[mail]\ntransport = \"file\"\ndir = \"outbox\"\n\n{feed}{topics}"
        ),
    );
}

#[test]
fn a_bad_examples_line_is_named_by_file_and_line_and_nothing_runs() {
    let dir = Dir::new();
    config(&dir, None);
    let good = examples(40);
    let bad = format!(
        "{}{}\n{}\n",
        good.lines()
            .take(2)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
        r#"{"id":"x1","title":"t","relevant":true,"issues":{"us_military_action":{"mx_gov":"maybe"}}}"#,
        r#"{"id":"x2","title":"t","relevant":true,"issues":{"trade":{"eu_gov":"support"}}}"#
    );
    dir.write("ex.jsonl", &bad);
    let out = vigia(&["--config", "vigia.toml", "check"], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ex.jsonl:3:"), "{stderr}");
    assert!(stderr.contains("\"maybe\" is not a stance"), "{stderr}");
    assert!(stderr.contains("ex.jsonl:4:"), "{stderr}");
    assert!(stderr.contains("unknown issue `trade`"), "{stderr}");
    // The daemon refuses the same config: nothing is recorded.
    let out = vigia(&["--config", "vigia.toml", "run", "--once"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.join("vigia.db").exists());
}

#[test]
fn a_topic_copied_without_its_examples_is_read_by_its_rules_and_says_so() {
    let dir = Dir::new();
    config(&dir, None);
    let check = vigia_ok(&["--config", "vigia.toml", "check"], &dir);
    assert!(check.contains("rules only"), "{check}");
    assert!(
        check.contains("warning: topic `us-mx-security`: no examples file at"),
        "{check}"
    );
}

#[test]
fn train_writes_a_reproducible_model_that_goes_stale_when_its_examples_change() {
    let dir = Dir::new();
    config(&dir, None);
    dir.write("ex.jsonl", &examples(6));
    let trained = vigia_ok(&["--config", "vigia.toml", "train"], &dir);
    assert!(trained.contains("trained on"), "{trained}");
    let model =
        std::fs::read(dir.join("ex.model.json")).expect("the model file beside the examples");
    let check = vigia_ok(&["--config", "vigia.toml", "check"], &dir);
    assert!(
        check.contains("reader:      us-mx-security: learned"),
        "{check}"
    );
    assert!(
        !check.contains("not usable"),
        "a fresh model is used as it is: {check}"
    );

    vigia_ok(&["--config", "vigia.toml", "train"], &dir);
    assert_eq!(
        std::fs::read(dir.join("ex.model.json")).unwrap(),
        model,
        "the same examples and rules give the same model, byte for byte"
    );

    // One more example: the file no longer matches, so it is trained at load.
    let mut more = examples(6);
    more.push_str(
        &examples(7)
            .lines()
            .nth(1)
            .unwrap()
            .replace("\"id\": \"", "\"id\": \"extra-"),
    );
    more.push('\n');
    dir.write("ex.jsonl", &more);
    let check = vigia_ok(&["--config", "vigia.toml", "check"], &dir);
    assert!(check.contains("the examples changed"), "{check}");
    let out = std::process::Command::new(crate::util::VIGIA)
        .args(["--config", "vigia.toml", "classify"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(
                b"{\"id\":\"1\",\"lang\":\"en\",\"title\":\"Sheinbaum rejects US troops on Mexican soil\"}\n",
            )?;
            child.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("trained on"),
        "a stale model is retrained, and said so: {stderr}"
    );
    let line: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["topics"][0]["id"], "us-mx-security", "{line}");
}

#[test]
fn cross_validation_keeps_stories_together_and_reports_each_language() {
    let dir = Dir::new();
    config(&dir, None);
    dir.write("ex.jsonl", &examples(5));
    let text = vigia_ok(&["--config", "vigia.toml", "eval", "--cv", "3"], &dir);
    assert!(text.contains("3-fold cross-validation"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("en ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("es ")), "{text}");
    let json: serde_json::Value = serde_json::from_str(&vigia_ok(
        &["--config", "vigia.toml", "eval", "--cv", "3", "--json"],
        &dir,
    ))
    .unwrap();
    let items = json["items"].as_u64().unwrap();
    assert_eq!(
        items as usize,
        examples(5).lines().count(),
        "every example read once"
    );
    assert_eq!(
        json["by_lang"]["en"]["items"].as_u64().unwrap()
            + json["by_lang"]["es"]["items"].as_u64().unwrap(),
        items
    );
    // A reader learned from a fifth of the examples still finds the topic.
    assert!(
        json["relevance"]["recall"].as_f64().unwrap() > 0.8,
        "{json}"
    );
    let out = vigia(&["--config", "vigia.toml", "eval", "--cv", "1"], &dir);
    assert_eq!(out.status.code(), Some(2), "one fold is a usage error");
}

#[test]
fn corrections_are_recorded_on_the_article_and_taken_into_training() {
    let dir = Dir::new();
    let server = FeedServer::start();
    server.feed(
        "wire.xml",
        rss(
            "Wire",
            &[(
                "1",
                "Mexico weighs letting US drones fly over Sinaloa",
                "Officials said no decision had been taken.",
            )],
        ),
        "application/rss+xml",
    );
    config(&dir, Some(&server.url("wire.xml")));
    dir.write("ex.jsonl", &examples(6));
    vigia_ok(&["--config", "vigia.toml", "train"], &dir);
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let article = events(&dir)
        .into_iter()
        .find(|e| e["kind"] == "ArticleDiscovered")
        .map(|e| e["payload"]["article_id"].as_str().unwrap().to_string())
        .expect("the article was stored");
    let readings = vigia_ok(&["--config", "vigia.toml", "readings", "--uncertain"], &dir);
    assert!(readings.contains(&article), "{readings}");

    let correct = |article: &str, issue: &str| {
        vigia(
            &[
                "--config",
                "vigia.toml",
                "correct",
                article,
                "--issue",
                issue,
                "--actor",
                "mx_gov",
                "--stance",
                "neutral",
            ],
            &dir,
        )
    };
    let refused = correct("no-such-article", "us_military_action");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no stored article"));
    let refused = correct(&article, "trade");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no issue `trade`"));
    assert!(correct(&article, "us_military_action").status.success());
    let corrected: Vec<_> = events(&dir)
        .into_iter()
        .filter(|e| e["kind"] == "ReadingCorrected")
        .collect();
    assert_eq!(corrected.len(), 1, "only the valid correction is recorded");
    assert_eq!(corrected[0]["stream"], format!("article:{article}"));
    assert_eq!(corrected[0]["payload"]["stance"], "neutral");

    let trained = vigia_ok(&["--config", "vigia.toml", "train"], &dir);
    assert!(trained.contains("(1 corrections)"), "{trained}");
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ex.model.json")).unwrap()).unwrap();
    assert_eq!(model["corrections"], 1);
}
