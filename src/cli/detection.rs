//! `vigia classify` and `vigia eval`: the detector from the command line.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::UsageError;
use sha2::Digest;

use crate::config::Config;
use crate::detect::examples::Example;
use crate::detect::learned::TrainOptions;
use crate::detect::topic_models::{featurise, model_path};
use crate::detect::{train_topic, ArticleText, Detector};
use crate::store::SqliteStore;

#[derive(Debug, serde::Deserialize)]
struct ClassifyInput {
    id: serde_json::Value,
    title: String,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// The config's detector without a database: model files as they are, or a model
/// trained now on the examples alone when a file is stale.
pub(super) fn detector(config: &Config) -> Result<Detector> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let (detector, notes) = crate::detect::load(&config.topics, &config.examples, &mut || {
        Ok(Default::default())
    })?;
    for note in notes {
        tracing::warn!("{note}");
    }
    Ok(detector)
}

pub(super) fn classify(config: &Config) -> Result<()> {
    use std::io::BufRead;
    let detector = detector(config)?;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut bad = 0usize;
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let input: ClassifyInput = match serde_json::from_str(&line) {
            Ok(i) => i,
            Err(e) => {
                bad += 1;
                eprintln!("vigia: line {}: not an article ({e}); skipped", n + 1);
                continue;
            }
        };
        let result = detector.classify(&ArticleText {
            title: &input.title,
            summary: input.summary.as_deref().unwrap_or(""),
            content: input.content.as_deref().unwrap_or(""),
            lang: input.lang.as_deref(),
        });
        let line =
            serde_json::json!({"id": input.id, "topics": result.topics, "stances": result.stances});
        if writeln!(out, "{line}").is_err() {
            return Ok(());
        }
    }
    out.flush()?;
    if bad > 0 {
        anyhow::bail!(
            "{bad} input line{} could not be read (see above)",
            if bad == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

pub(super) fn eval(
    config: &Config,
    file: &Path,
    topic: Option<&str>,
    json: bool,
    verbose: bool,
) -> Result<()> {
    let detector = detector(config)?;
    let topic = topic_or_first(config, topic)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut items = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let item: crate::eval::Labelled = serde_json::from_str(line).map_err(|e| {
            UsageError(format!(
                "{}:{}: not a labelled article: {e}",
                file.display(),
                n + 1
            ))
        })?;
        items.push(item);
    }
    let report = crate::eval::score(&detector, &items, &topic);
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = report.to_json();
        if verbose {
            value["misses"] = serde_json::to_value(&report.misses)?;
        }
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let all = report.overall();
    writeln!(out, "{} items, topic {topic}", report.items)?;
    writeln!(
        out,
        "relevance  precision {:.3}  recall {:.3}  F1 {:.3}   (tp {}, fp {}, fn {})",
        report.precision(),
        report.recall(),
        report.f1(),
        report.tp,
        report.fp,
        report.fn_
    )?;
    writeln!(
        out,
        "stance     accuracy {:.3}  coverage {:.3}  macro-F1 {:.3}   ({} labelled, {} predicted, {} correct)",
        all.accuracy(),
        all.coverage(),
        all.macro_f1(),
        all.labelled,
        all.predicted,
        all.correct
    )?;
    writeln!(
        out,
        "\n{:<22} {:<8} {:>8} {:>9} {:>9} {:>9}",
        "ISSUE", "ACTOR", "LABELLED", "ACCURACY", "COVERAGE", "MACRO-F1"
    )?;
    for ((issue, actor), c) in &report.pairs {
        writeln!(
            out,
            "{issue:<22} {actor:<8} {:>8} {:>9.3} {:>9.3} {:>9.3}",
            c.labelled,
            c.accuracy(),
            c.coverage(),
            c.macro_f1()
        )?;
    }
    if verbose {
        print_misses(&mut out, &report)?;
    }
    Ok(())
}

pub(super) fn topic_or_first(config: &Config, topic: Option<&str>) -> Result<String> {
    match topic {
        Some(t) if config.topics.iter().any(|c| c.id == t) => Ok(t.to_string()),
        Some(t) => Err(UsageError(format!(
            "unknown topic {t:?}; the config defines {:?}",
            config.topics.iter().map(|c| &c.id).collect::<Vec<_>>()
        ))
        .into()),
        None => config
            .topics
            .first()
            .map(|t| t.id.clone())
            .ok_or_else(|| UsageError("the config defines no topic".into()).into()),
    }
}

/// The fold a story falls in: a hash of its key, so copies of one story stay together
/// and the split is the same on every run.
fn fold_of(story: &str, k: usize) -> usize {
    let digest = sha2::Sha256::digest(story.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(first) % k as u64) as usize
}

fn labelled(example: &Example) -> crate::eval::Labelled {
    crate::eval::Labelled {
        id: example.id.clone(),
        title: example.title.clone(),
        summary: example.summary.clone(),
        content: String::new(),
        lang: example.lang.clone(),
        relevant: example.relevant,
        issues: example
            .issues
            .iter()
            .map(|(issue, actors)| {
                (
                    issue.clone(),
                    actors
                        .iter()
                        .map(|(a, s)| (a.clone(), s.map(|s| s.as_str().to_string())))
                        .collect(),
                )
            })
            .collect(),
    }
}

/// `vigia eval --cv K`: each fold read by a model trained on the other folds.
pub(super) fn cross_validate(
    config: &Config,
    k: usize,
    topic: Option<&str>,
    json: bool,
    verbose: bool,
) -> Result<()> {
    if k < 2 {
        return Err(UsageError("--cv needs at least 2 folds".into()).into());
    }
    let topic = topic_or_first(config, topic)?;
    let Some(set) = config.examples.get(&topic) else {
        return Err(UsageError(format!(
            "topic `{topic}` has no examples file (`examples = \"...\"` in its [[topic]])"
        ))
        .into());
    };
    let Some(rules) = config.topics.iter().find(|t| t.id == topic) else {
        return Err(UsageError(format!("unknown topic {topic:?}")).into());
    };
    let started = std::time::Instant::now();
    let rules_detector = Detector::new(&config.topics)?;
    let items: Vec<&Example> = set.items.iter().collect();
    let featurised = featurise(&rules_detector, &topic, &items);
    let folds: Vec<usize> = items.iter().map(|e| fold_of(e.story_key(), k)).collect();
    let issues: Vec<String> = rules.issues.iter().map(|i| i.id.clone()).collect();
    let actors: Vec<String> = rules.actors.iter().map(|a| a.id.clone()).collect();
    let options = TrainOptions::default();
    let labels: Vec<crate::eval::Labelled> = items.iter().map(|e| labelled(e)).collect();
    // Folds train side by side, one thread per core.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(k);
    let results: Vec<Result<Vec<(usize, crate::detect::Classification)>>> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|worker| {
                    let (featurised, folds, items) = (&featurised, &folds, &items);
                    let (issues, actors, options, topic) = (&issues, &actors, &options, &topic);
                    scope.spawn(
                        move || -> Result<Vec<(usize, crate::detect::Classification)>> {
                            let mut out = Vec::new();
                            for fold in (worker..k).step_by(threads) {
                                let train: Vec<&crate::detect::learned::Featurised<'_>> =
                                    featurised
                                        .iter()
                                        .zip(folds)
                                        .filter(|(_, f)| **f != fold)
                                        .map(|(x, _)| x)
                                        .collect();
                                if train.len() == featurised.len() {
                                    continue; // an empty fold
                                }
                                let model = crate::detect::learned::train(
                                    topic, issues, actors, &train, options,
                                )?;
                                let mut detector = Detector::new(&config.topics)?;
                                detector.attach(model)?;
                                for (i, item) in
                                    items.iter().enumerate().filter(|(i, _)| folds[*i] == fold)
                                {
                                    out.push((
                                        i,
                                        detector.classify(&ArticleText {
                                            title: &item.title,
                                            summary: &item.summary,
                                            content: "",
                                            lang: item.lang.as_deref(),
                                        }),
                                    ));
                                }
                            }
                            Ok(out)
                        },
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a fold's training panicked")))
                })
                .collect()
        });
    let mut classified: Vec<Option<crate::detect::Classification>> = vec![None; items.len()];
    for result in results {
        for (i, c) in result? {
            classified[i] = Some(c);
        }
    }
    let pairs: Vec<(&crate::eval::Labelled, crate::detect::Classification)> = labels
        .iter()
        .zip(classified)
        .filter_map(|(l, c)| c.map(|c| (l, c)))
        .collect();
    let report = crate::eval::score_classified(&pairs, &topic);
    let by_lang = |lang: &str| {
        let subset: Vec<(&crate::eval::Labelled, crate::detect::Classification)> = pairs
            .iter()
            .filter(|(l, _)| l.lang.as_deref() == Some(lang))
            .map(|(l, c)| (*l, c.clone()))
            .collect();
        crate::eval::score_classified(&subset, &topic)
    };
    let (en, es) = (by_lang("en"), by_lang("es"));
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = report.to_json();
        value["folds"] = serde_json::json!(k);
        value["by_lang"] = serde_json::json!({"en": en.to_json(), "es": es.to_json()});
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{k}-fold cross-validation of topic {topic} on {} examples ({} stories), folds grouped by story ({:.1}s)",
        items.len(),
        items
            .iter()
            .map(|e| e.story_key())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        started.elapsed().as_secs_f64()
    )?;
    print_report(&mut out, "all", &report)?;
    print_report(&mut out, "en", &en)?;
    print_report(&mut out, "es", &es)?;
    print_pairs(&mut out, &report)?;
    if verbose {
        print_misses(&mut out, &report)?;
    }
    Ok(())
}

fn print_misses(out: &mut impl Write, report: &crate::eval::Report) -> Result<()> {
    writeln!(out, "\nmisses:")?;
    for m in &report.misses {
        writeln!(
            out,
            "{} {:<40} expected {:<8} got {:<8} {}",
            m.id, m.what, m.expected, m.got, m.title
        )?;
    }
    Ok(())
}

fn print_report(out: &mut impl Write, label: &str, report: &crate::eval::Report) -> Result<()> {
    let all = report.overall();
    writeln!(
        out,
        "{label:<4} {:>5} items  relevance P {:.3} R {:.3} F1 {:.3}  stance accuracy {:.3} coverage {:.3} macro-F1 {:.3}  (spurious {})",
        report.items,
        report.precision(),
        report.recall(),
        report.f1(),
        all.accuracy(),
        all.coverage(),
        all.macro_f1(),
        all.spurious
    )?;
    Ok(())
}

fn print_pairs(out: &mut impl Write, report: &crate::eval::Report) -> Result<()> {
    writeln!(
        out,
        "\n{:<22} {:<8} {:>8} {:>9} {:>9} {:>9} {:>9}   F1 support/oppose/neutral (labelled)",
        "ISSUE", "ACTOR", "LABELLED", "ACCURACY", "COVERAGE", "MACRO-F1", "SPURIOUS"
    )?;
    for ((issue, actor), c) in &report.pairs {
        let f1 = c.class_f1();
        writeln!(
            out,
            "{issue:<22} {actor:<8} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9}   {:.2} ({}) / {:.2} ({}) / {:.2} ({})",
            c.labelled,
            c.accuracy(),
            c.coverage(),
            c.macro_f1(),
            c.spurious,
            f1[0],
            c.per_class[0].2,
            f1[1],
            c.per_class[1].2,
            f1[2],
            c.per_class[2].2
        )?;
    }
    Ok(())
}

/// `vigia train`: each topic with examples (or the one asked for) trained and its
/// model file written beside its examples.
pub(super) fn train(
    config: &Config,
    store: Option<&SqliteStore>,
    topic: Option<&str>,
) -> Result<()> {
    let wanted = topic.map(|t| topic_or_first(config, Some(t))).transpose()?;
    let corrections = match store {
        Some(store) => crate::readings::corrected_examples(store)?,
        None => Default::default(),
    };
    let rules_detector = Detector::new(&config.topics)?;
    let mut trained = 0;
    for rules in &config.topics {
        if wanted.as_ref().is_some_and(|w| w != &rules.id) {
            continue;
        }
        let (Some(path), Some(set)) = (&rules.examples, config.examples.get(&rules.id)) else {
            if wanted.is_some() {
                return Err(UsageError(format!(
                    "topic `{}` has no examples file (`examples = \"...\"` in its [[topic]])",
                    rules.id
                ))
                .into());
            }
            continue;
        };
        let mine = corrections.get(&rules.id).map_or(&[][..], Vec::as_slice);
        let started = std::time::Instant::now();
        let model = train_topic(&rules_detector, rules, set, mine, &TrainOptions::default())?;
        let seconds = started.elapsed().as_secs_f64();
        let target = model_path(path);
        let text = model.to_json();
        let temporary = target.with_extension("json.tmp");
        std::fs::write(&temporary, &text)
            .and_then(|()| std::fs::rename(&temporary, &target))
            .with_context(|| format!("writing {}", target.display()))?;
        for warning in crate::detect::topic_models::thin_classes(rules, set) {
            eprintln!("vigia: warning: {warning}");
        }
        println!(
            "topic {}: trained on {} examples ({} corrections) in {seconds:.1}s: {} features, {} KB → {}",
            rules.id,
            model.trained_on,
            model.corrections,
            model.features.len(),
            text.len() / 1024,
            target.display()
        );
        trained += 1;
    }
    if trained == 0 {
        println!("no topic has examples: the rules read every topic");
    }
    Ok(())
}

/// `vigia readings`.
pub(super) fn print_readings(store: &SqliteStore, uncertain: bool, limit: usize) -> Result<()> {
    let readings = store.read(|c| crate::readings::list(c, uncertain, limit))?;
    let mut out = std::io::stdout().lock();
    for r in readings {
        let stances: Vec<String> = r
            .stances
            .iter()
            .map(|(issue, actor, stance, confidence, _)| {
                format!("{issue}.{actor}={stance} ({confidence:.2})")
            })
            .collect();
        let line = format!(
            "{}  {:.2}  {} ({:.2})  {}\n    {}",
            r.article_id,
            r.confidence,
            r.topic,
            r.score,
            if stances.is_empty() {
                "no stance".to_string()
            } else {
                stances.join(", ")
            },
            r.title
        );
        if writeln!(out, "{line}").is_err() {
            return Ok(());
        }
    }
    Ok(())
}
