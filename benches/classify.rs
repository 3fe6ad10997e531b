//! Detection throughput: headline-plus-lead articles through `Detector::classify`
//! (topics and stances) on one core, with the shipped rules alone and with the shipped
//! topic's learned reader; and the time `vigia train` takes to train that reader.
//! Run: cargo bench --bench classify

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigia::config::Config;
use vigia::detect::{ArticleText, Detector};

/// Articles written for the benchmark: a mix of on-topic and off-topic, two languages.
fn articles() -> Vec<(String, String, &'static str)> {
    let subjects = [
        "Mexico",
        "The White House",
        "Sheinbaum",
        "The Pentagon",
        "La cancillería",
        "El gobierno de Estados Unidos",
        "The city council",
        "Brazil",
    ];
    let verbs = [
        "rejects", "welcomes", "weighs", "rechaza", "suspends", "acepta", "approves", "condemns",
    ];
    let objects = [
        "US military strikes on cartel labs",
        "a joint plan to trace smuggled rifles",
        "la intervención militar en territorio mexicano",
        "the extradition of a cartel financier",
        "a new budget for public parks",
        "sanctions on its supreme court",
    ];
    let leads = [
        "Officials said on Tuesday that the decision followed weeks of talks, while critics warned it would not stop the violence.",
        "La presidenta afirmó en su conferencia matutina que la soberanía no se negocia y que la cooperación seguirá sin subordinación.",
        "The measure, announced after a phone call between the two leaders, covers intelligence sharing and border inspections.",
        "The council voted eight to three; the park will open next spring with new lighting and paths.",
    ];
    let mut out = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        for (j, v) in verbs.iter().enumerate() {
            for (k, o) in objects.iter().enumerate() {
                let lead = leads[(i + j + k) % leads.len()];
                let lang = if v.ends_with('a') || s.starts_with("El") || s.starts_with("La") {
                    "es"
                } else {
                    "en"
                };
                out.push((format!("{s} {v} {o}"), lead.to_string(), lang));
            }
        }
    }
    out
}

fn shipped_config() -> Config {
    Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/vigia.toml"
    )))
    .unwrap()
}

fn classify(c: &mut Criterion) {
    let config = shipped_config();
    let rules_only = Detector::new(&config.topics).unwrap();
    let (learned, _) = vigia::detect::load(&config.topics, &config.examples, &mut || {
        Ok(Default::default())
    })
    .unwrap();
    // The synthetic mix, and the shipped examples: real articles' facts as outlets
    // phrase them, in both languages, a third of them off-topic.
    let mut articles = articles();
    for set in config.examples.values() {
        for e in &set.items {
            let lang = if e.lang.as_deref() == Some("es") {
                "es"
            } else {
                "en"
            };
            articles.push((e.title.clone(), e.summary.clone(), lang));
        }
    }
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(articles.len() as u64));
    for (name, detector) in [("rules", &rules_only), ("learned", &learned)] {
        group.bench_function(
            format!("{name}: {} headline+lead articles", articles.len()),
            |b| {
                b.iter(|| {
                    let mut stances = 0;
                    for (title, summary, lang) in &articles {
                        let r = detector.classify(&ArticleText {
                            title,
                            summary,
                            content: "",
                            lang: Some(lang),
                        });
                        stances += r.stances.len();
                    }
                    stances
                })
            },
        );
    }
    group.finish();
}

/// Training the shipped topic's reader from its examples, as `vigia train` does.
fn train(c: &mut Criterion) {
    let config = shipped_config();
    let rules_detector = Detector::new(&config.topics).unwrap();
    let mut group = c.benchmark_group("train");
    group.sample_size(10);
    for rules in &config.topics {
        let Some(set) = config.examples.get(&rules.id) else {
            continue;
        };
        group.bench_function(format!("{}: {} examples", rules.id, set.items.len()), |b| {
            b.iter(|| {
                vigia::detect::train_topic(
                    &rules_detector,
                    rules,
                    set,
                    &[],
                    &vigia::detect::learned::TrainOptions::default(),
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, classify, train);
criterion_main!(benches);
