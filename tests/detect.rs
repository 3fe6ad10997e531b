//! Detection rules, in English and Spanish, on examples written for these tests:
//! relevance, attribution, negation and modality, and the traps (the wrong subject,
//! "does not rule out", other countries' stories with the same words).

use vigia::config::Config;
use vigia::detect::{ArticleText, Classification, Detector, Stance};

fn detector() -> Detector {
    let config = Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/vigia.toml"
    )))
    .expect("the shipped config loads");
    Detector::new(&config.topics).expect("the shipped rules compile")
}

fn classify(lang: &str, title: &str, summary: &str) -> Classification {
    detector().classify(&ArticleText {
        title,
        summary,
        content: "",
        lang: Some(lang),
    })
}

fn relevant(c: &Classification) -> bool {
    c.topics.iter().any(|t| t.id == "us-mx-security")
}

/// The most confident stance for a pair, as eval reads it.
fn stance(c: &Classification, issue: &str, actor: &str) -> Option<Stance> {
    c.stances
        .iter()
        .filter(|s| s.issue == issue && s.actor == actor)
        .max_by(|a, b| a.confidence.total_cmp(&b.confidence))
        .map(|s| s.stance)
}

const MIL: &str = "us_military_action";
const COOP: &str = "security_cooperation";

/// The shipped config's detector with its learned reader, as `vigia classify` uses it.
fn learned() -> Detector {
    let config = Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/vigia.toml"
    )))
    .expect("the shipped config loads");
    let (detector, notes) = vigia::detect::load(&config.topics, &config.examples, &mut || {
        Ok(Default::default())
    })
    .expect("the shipped reader loads");
    assert!(notes.is_empty(), "the shipped model is fresh: {notes:?}");
    assert!(detector.has_model("us-mx-security"));
    detector
}

/// Sentences written for the detection issue (in no training or test set), read by
/// the shipped reader. "Trump vows to hit cartel camps in Mexico 'very soon'" is the
/// seventh; this model reads no stance in it (see the issue's note).
#[test]
fn the_learned_reader_reads_sentences_the_rules_missed() {
    let detector = learned();
    let cases = [
        ("en", "Mexico will let US drones fly surveillance missions over cartel territory, Sheinbaum says", MIL, "mx_gov", Stance::Support),
        ("en", "Mexico hands 29 cartel figures to US prosecutors", COOP, "mx_gov", Stance::Support),
        ("en", "Mexico's security chief meets FBI director in Washington to deepen intelligence ties", COOP, "mx_gov", Stance::Support),
        ("es", "Trump advierte que atacará a los cárteles dentro de México si es necesario", MIL, "us_gov", Stance::Support),
        ("es", "México frena el intercambio de información de inteligencia con Washington", COOP, "mx_gov", Stance::Oppose),
        ("es", "El Pentágono descarta una operación terrestre en territorio mexicano", MIL, "us_gov", Stance::Oppose),
    ];
    for (lang, title, issue, actor, want) in cases {
        let c = detector.classify(&ArticleText {
            title,
            summary: "",
            content: "",
            lang: Some(lang),
        });
        assert!(relevant(&c), "{title}: {c:?}");
        assert_eq!(stance(&c, issue, actor), Some(want), "{title}: {c:?}");
        assert!(c.stances.iter().all(|s| s.evidence == title), "{c:?}");
    }
}

/// A turn is what a subscriber must not miss: Mexico accepting US military action is
/// rare in the examples, and the reader must not read it as the usual refusal.
#[test]
fn the_learned_reader_sees_a_turn_against_the_usual_stance() {
    let detector = learned();
    for (lang, title) in [
        (
            "en",
            "Mexico agrees to let US special forces strike fentanyl labs on its soil",
        ),
        (
            "es",
            "México acepta que tropas de EU ataquen a los cárteles en su territorio",
        ),
    ] {
        let c = detector.classify(&ArticleText {
            title,
            summary: "",
            content: "",
            lang: Some(lang),
        });
        assert_eq!(
            stance(&c, MIL, "mx_gov"),
            Some(Stance::Support),
            "{title}: {c:?}"
        );
    }
    let c = detector.classify(&ArticleText {
        title: "Mexico rejects any US military operation against cartels on its territory",
        summary: "",
        content: "",
        lang: Some("en"),
    });
    assert_eq!(stance(&c, MIL, "mx_gov"), Some(Stance::Oppose), "{c:?}");
}

#[test]
fn english_refusal_of_us_troops_is_mexican_opposition() {
    let c = classify(
        "en",
        "Mexico will not let American soldiers operate on its territory, minister says",
        "The foreign minister said the government would never accept foreign troops on Mexican soil.",
    );
    assert!(relevant(&c));
    assert_eq!(stance(&c, MIL, "mx_gov"), Some(Stance::Oppose), "{c:#?}");
    assert_eq!(
        stance(&c, MIL, "us_gov"),
        None,
        "the US is the object, not the subject: {c:#?}"
    );
}

#[test]
fn spanish_without_accents_reads_the_same() {
    let c = classify(
        "es",
        "El gobierno de Mexico no permitira tropas estadounidenses en territorio nacional",
        "La presidenta dijo que la soberania no se negocia.",
    );
    assert!(relevant(&c));
    assert!(
        c.topics[0]
            .matched
            .iter()
            .any(|m| m.to_lowercase().contains("sober")),
        "{:?}",
        c.topics
    );
    assert_eq!(stance(&c, MIL, "mx_gov"), Some(Stance::Oppose), "{c:#?}");
}

#[test]
fn a_headline_speaker_owns_the_cue_after_the_colon() {
    let c = classify("es", "Sheinbaum: no habrá tropas extranjeras en México", "");
    assert_eq!(stance(&c, MIL, "mx_gov"), Some(Stance::Oppose), "{c:#?}");
}

#[test]
fn washington_threatening_strikes_is_us_support() {
    let c = classify(
        "en",
        "Washington threatens strikes on cartel leaders inside Mexico",
        "A White House official said the president was prepared to use force.",
    );
    assert_eq!(stance(&c, MIL, "us_gov"), Some(Stance::Support), "{c:#?}");
    let c = classify(
        "es",
        "La Casa Blanca amenaza con atacar a los cárteles en territorio mexicano",
        "",
    );
    assert_eq!(stance(&c, MIL, "us_gov"), Some(Stance::Support), "{c:#?}");
}

#[test]
fn weighing_an_action_is_neutral_not_support() {
    let c = classify(
        "en",
        "Pentagon weighs sending special forces against cartels in Mexico",
        "",
    );
    assert_eq!(stance(&c, MIL, "us_gov"), Some(Stance::Neutral), "{c:#?}");
}

#[test]
fn trap_us_rejecting_a_mexican_request_is_not_mexican_opposition() {
    let c = classify(
        "en",
        "US rejects Mexico's request to share files on an arms smuggling case",
        "The Justice Department turned down the request from Mexico's attorney general.",
    );
    assert!(relevant(&c), "{c:#?}");
    // The refusal is read, and it is the US's.
    assert_eq!(stance(&c, COOP, "us_gov"), Some(Stance::Oppose), "{c:#?}");
    assert_ne!(stance(&c, MIL, "mx_gov"), Some(Stance::Oppose), "{c:#?}");
    assert_ne!(stance(&c, COOP, "mx_gov"), Some(Stance::Oppose), "{c:#?}");
}

/// "Does not rule out" negates a refusal: what is left is neutral, in both languages.
#[test]
fn trap_not_ruling_out_help_is_not_opposition() {
    for (lang, title) in [
        (
            "en",
            "Mexico does not rule out US help to trace smuggled weapons",
        ),
        (
            "es",
            "México no descarta pedir ayuda a Estados Unidos para rastrear armas",
        ),
    ] {
        let c = classify(lang, title, "");
        assert!(relevant(&c), "{title}: {c:#?}");
        assert_eq!(
            stance(&c, COOP, "mx_gov"),
            Some(Stance::Neutral),
            "{title}: {c:#?}"
        );
        assert_ne!(
            stance(&c, MIL, "mx_gov"),
            Some(Stance::Oppose),
            "{title}: {c:#?}"
        );
    }
}

/// Each case that must not match beside a near twin that must: a detector that
/// matches nothing fails the twins, one that matches everything fails the traps.
fn relevance_pairs(pairs: &[[(&str, &str, &str); 2]]) {
    for [(lang, title, summary), (twin_lang, twin, twin_summary)] in pairs {
        let c = classify(lang, title, summary);
        assert!(!relevant(&c), "not relevant: {title}: {c:#?}");
        let c = classify(twin_lang, twin, twin_summary);
        assert!(relevant(&c), "relevant: {twin}: {c:#?}");
    }
}

#[test]
fn trap_other_countries_stories_are_not_relevant() {
    relevance_pairs(&[
        [
            (
                "en",
                "Colombia condemns US strikes on boats as a breach of its sovereignty",
                "Bogotá recalled its ambassador from Washington.",
            ),
            (
                "en",
                "Mexico condemns US strikes on boats as a breach of its sovereignty",
                "Mexico City recalled its ambassador from Washington.",
            ),
        ],
        [
            (
                "es",
                "Venezuela rechaza la intervención militar de Estados Unidos y defiende su soberanía",
                "Caracas denunció el despliegue de buques estadounidenses.",
            ),
            (
                "es",
                "México rechaza la intervención militar de Estados Unidos y defiende su soberanía",
                "El gobierno denunció el despliegue de buques estadounidenses.",
            ),
        ],
        [
            (
                "en",
                "Honduras extradites two alleged traffickers to the United States",
                "The men face drug charges in Miami.",
            ),
            (
                "en",
                "Mexico extradites two alleged traffickers to the United States",
                "The men face drug charges in Miami.",
            ),
        ],
    ]);
}

#[test]
fn trap_mexican_news_without_a_us_security_angle_is_not_relevant() {
    relevance_pairs(&[
        [
            (
                "en",
                "Mexican army clashes with gunmen in Zacatecas",
                "Soldiers returned fire; the defence ministry said no troops died.",
            ),
            (
                "en",
                "US drone strike hits cartel gunmen in Zacatecas",
                "Soldiers returned fire; the defence ministry said no troops died.",
            ),
        ],
        [
            (
                "en",
                "US and Mexico settle a dispute over avocado inspections",
                "Trucks resumed crossing after new plant-health checks.",
            ),
            (
                "en",
                "US and Mexico settle a dispute over fentanyl inspections",
                "Trucks resumed crossing after new border security checks.",
            ),
        ],
        [
            (
                "es",
                "México vence a Estados Unidos en amistoso de fútbol",
                "El equipo nacional ganó dos a uno en Texas.",
            ),
            (
                "es",
                "México vence a Estados Unidos en la lucha contra el tráfico de armas",
                "El equipo nacional ganó dos a uno en Texas.",
            ),
        ],
        [
            // "us" is not "US": a term in capitals matches only capitals.
            (
                "en",
                "Cartels told us they fear nothing, a resident of the town said",
                "Violence has displaced hundreds of families.",
            ),
            (
                "en",
                "Cartels told US agents they fear nothing, a resident of the town said",
                "Violence has displaced hundreds of families.",
            ),
        ],
    ]);
}

#[test]
fn extraditions_and_suspensions_are_cooperation() {
    let c = classify(
        "en",
        "Mexico extradites a cartel accountant to the United States",
        "",
    );
    assert_eq!(stance(&c, COOP, "mx_gov"), Some(Stance::Support), "{c:#?}");
    let c = classify(
        "en",
        "Mexico suspends intelligence sharing with US agencies after a leak",
        "",
    );
    assert_eq!(stance(&c, COOP, "mx_gov"), Some(Stance::Oppose), "{c:#?}");
    let c = classify(
        "es",
        "Estados Unidos suspende la ayuda en seguridad a México",
        "",
    );
    assert_eq!(stance(&c, COOP, "us_gov"), Some(Stance::Oppose), "{c:#?}");
}

#[test]
fn two_subjects_joined_by_and_both_take_the_stance() {
    let c = classify(
        "en",
        "Mexico and the United States agree to share intelligence on fentanyl",
        "",
    );
    assert_eq!(stance(&c, COOP, "mx_gov"), Some(Stance::Support), "{c:#?}");
    assert_eq!(stance(&c, COOP, "us_gov"), Some(Stance::Support), "{c:#?}");
}

#[test]
fn every_stance_names_a_sentence_of_the_article() {
    let title = "Sheinbaum rejects US military action against cartels";
    let summary = "The president said on Monday that Mexico will cooperate on intelligence. She spoke in Mexico City.";
    let c = classify("en", title, summary);
    assert!(!c.stances.is_empty());
    for s in &c.stances {
        assert!(
            s.evidence == title || summary.contains(&s.evidence),
            "evidence is a sentence: {:?}",
            s.evidence
        );
        assert!((0.0..=1.0).contains(&s.confidence));
    }
}

#[test]
fn a_new_topic_needs_only_config() {
    let text = r#"
[[topic]]
id = "water"
require = ["rivers"]
require_any = ["treaty", "drought"]
exclude = ["sport"]
[topic.groups.sport]
terms = ["regatta"]
[topic.groups.drought]
terms = ["drought", "sequía"]
[topic.groups.rivers]
terms = ["Rio Grande", "río Bravo", "Colorado River"]
[topic.groups.treaty]
terms = ["treaty", "tratado", "deliveries", "entregas de agua"]
"#;
    let config = Config::parse(std::path::Path::new("water.toml"), text).expect("a valid topic");
    let detector = Detector::new(&config.topics).unwrap();
    let hit = detector.classify(&ArticleText {
        title: "Tensions over Rio Grande deliveries under the 1944 treaty",
        ..Default::default()
    });
    assert_eq!(hit.topics.len(), 1);
    assert_eq!(hit.topics[0].id, "water");
    let accents = detector.classify(&ArticleText {
        title: "La sequia seca el rio Bravo",
        ..Default::default()
    });
    assert_eq!(
        accents.topics.len(),
        1,
        "any of treaty or drought, accents optional"
    );
    for title in [
        "Mexico and the US sign a security agreement",
        "Rio Grande regatta draws crowds despite drought",
        "The Rio Grande at dawn",
    ] {
        let miss = detector.classify(&ArticleText {
            title,
            ..Default::default()
        });
        assert!(miss.topics.is_empty(), "{title}");
    }
}

mod pipeline {
    //! Detection inside the pipeline, through the real binary: each ingested article
    //! that a topic finds relevant gets a classification event and its stances (one
    //! that none does leaves only its discovery); a rules change is applied to
    //! stored history by `vigia replay --reclassify` without refetching.

    use crate::util::{count_kind, events, rss, shipped_topics, vigia_ok, Dir, FeedServer};

    fn write_config(dir: &Dir, url: &str, topics: &str) {
        dir.write(
            "vigia.toml",
            &format!(
                "[daemon]\ndatabase = \"vigia.db\"\n\n[mail]\ntransport = \"file\"\ndir = \"outbox\"\n\n[[feed]]\nid = \"wire\"\nurl = \"{url}\"\nlang = \"en\"\n\n{topics}"
            ),
        );
    }

    #[test]
    fn ingested_articles_are_classified_and_reclassified_from_the_log() {
        let dir = Dir::new();
        let server = FeedServer::start();
        server.feed(
            "wire.xml",
            rss(
                "Wire",
                &[
                    (
                        "1",
                        "Mexico rejects US military strikes against cartels on its soil",
                        "The president said Mexico would not accept foreign troops.",
                    ),
                    (
                        "2",
                        "City council approves a new park",
                        "The park opens next spring.",
                    ),
                ],
            ),
            "application/rss+xml",
        );
        write_config(&dir, &server.url("wire.xml"), &shipped_topics());
        vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
        let first = events(&dir);
        assert_eq!(count_kind(&first, "ArticleDiscovered"), 2);
        assert_eq!(
            count_kind(&first, "ArticleClassified"),
            1,
            "a reading for the relevant article only"
        );
        let observed: Vec<_> = first
            .iter()
            .filter(|e| e["kind"] == "StanceObserved")
            .collect();
        assert!(
            observed
                .iter()
                .any(|e| e["payload"]["actor"] == "mx_gov" && e["payload"]["stance"] == "oppose"),
            "{observed:?}"
        );
        let rules_before = first
            .iter()
            .find(|e| e["kind"] == "ArticleClassified")
            .unwrap()["payload"]["rules_hash"]
            .clone();

        // Reclassifying under the same rules records nothing new.
        vigia_ok(&["--config", "vigia.toml", "replay", "--reclassify"], &dir);
        assert_eq!(count_kind(&events(&dir), "ArticleClassified"), 1);

        // A new topic that matches the park story; history is read again, not refetched.
        let requests = server.stats(|s| s.requests);
        let parks = "\n[[topic]]\nid = \"parks\"\nrequire = [\"parks\"]\n[topic.groups.parks]\nterms = [\"park\", \"parks\"]\n";
        write_config(
            &dir,
            &server.url("wire.xml"),
            &format!("{}{parks}", shipped_topics()),
        );
        let out = vigia_ok(&["--config", "vigia.toml", "replay", "--reclassify"], &dir);
        assert!(out.contains("2 new readings"), "{out}");
        assert_eq!(server.stats(|s| s.requests), requests, "no refetch");
        let after = events(&dir);
        assert_eq!(
            count_kind(&after, "ArticleClassified"),
            3,
            "earlier classifications stay in the log"
        );
        let park = after
            .iter()
            .rfind(|e| e["kind"] == "ArticleClassified")
            .unwrap();
        assert_ne!(park["payload"]["rules_hash"], rules_before);
        let topics: Vec<&str> = after
            .iter()
            .filter(|e| {
                e["kind"] == "ArticleClassified" && e["payload"]["rules_hash"] != rules_before
            })
            .flat_map(|e| {
                e["payload"]["topics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["id"].as_str().unwrap())
            })
            .collect();
        assert!(
            topics.contains(&"parks") && topics.contains(&"us-mx-security"),
            "{topics:?}"
        );
        // The projection holds the latest reading only.
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        let park_rows: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM article_topics WHERE topic = 'parks'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(park_rows, 1);
        drop(conn);

        // Rules under which the Mexico story is no longer relevant: its earlier
        // relevant reading is replaced by one that says so; the park story keeps its topic.
        write_config(&dir, &server.url("wire.xml"), parks);
        let out = vigia_ok(&["--config", "vigia.toml", "replay", "--reclassify"], &dir);
        assert!(out.contains("2 new readings"), "{out}");
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        let mexico: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM article_topics WHERE topic = 'us-mx-security'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(mexico, 0, "the stale relevant reading is gone");
    }
}
