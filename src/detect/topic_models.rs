//! Learned readers bound to their topics: the model file beside each topic's examples
//! (`examples/x.jsonl` → `examples/x.model.json`), used when it was trained on the
//! same examples and rules, else trained afresh when the detector is built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::examples::{Example, ExampleSet};
use super::learned::{self, Featurised, Model, TrainError, TrainOptions};
use super::rules::TopicRules;
use super::{ArticleText, CompileError, Detector};

/// Where a topic's model lives: beside its examples file.
pub fn model_path(examples: &Path) -> PathBuf {
    let name = examples
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".jsonl")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name);
    examples.with_file_name(format!("{stem}.model.json"))
}

/// What the model depends on besides its examples: the topic's rules (the features
/// come from them), the training options and the feature format.
pub fn rules_hash(rules: &TopicRules, options: &TrainOptions) -> String {
    let mut h = Sha256::new();
    h.update(learned::FORMAT.to_le_bytes());
    h.update(serde_json::to_string(rules).unwrap_or_default().as_bytes());
    h.update(
        serde_json::to_string(options)
            .unwrap_or_default()
            .as_bytes(),
    );
    hex::encode(&h.finalize()[..16])
}

fn corrections_hash(corrections: &[Example]) -> String {
    let mut h = Sha256::new();
    for c in corrections {
        h.update(serde_json::to_string(c).unwrap_or_default().as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..16])
}

/// How a topic is read.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicModelStatus {
    /// No examples: the rules alone.
    RulesOnly,
    /// The model file matches the examples and rules.
    Fresh { path: PathBuf, corrections: usize },
    /// No usable model file: it is trained when the detector is built.
    Stale { path: PathBuf, why: String },
}

/// Whether the topic's model file can be used as it is.
pub fn status(rules: &TopicRules, examples: Option<&ExampleSet>) -> TopicModelStatus {
    inspect(rules, examples).0
}

/// The topic's status, and its model when the file is fresh (read once, for `load`).
fn inspect(rules: &TopicRules, examples: Option<&ExampleSet>) -> (TopicModelStatus, Option<Model>) {
    let (Some(path), Some(set)) = (rules.examples.as_deref(), examples) else {
        return (TopicModelStatus::RulesOnly, None);
    };
    let path = model_path(path);
    let model = read_model(&path).and_then(|m| match why_stale(&m, rules, set) {
        Some(why) => Err(why),
        None => Ok(m),
    });
    match model {
        Err(why) => (TopicModelStatus::Stale { path, why }, None),
        Ok(model) => (
            TopicModelStatus::Fresh {
                path,
                corrections: model.corrections,
            },
            Some(model),
        ),
    }
}

fn read_model(path: &Path) -> Result<Model, String> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no model file yet".to_string(),
        _ => format!("cannot read it: {e}"),
    })?;
    Model::from_json(&text).map_err(|e| e.to_string())
}

fn why_stale(model: &Model, rules: &TopicRules, set: &ExampleSet) -> Option<String> {
    if model.topic != rules.id {
        Some(format!("it was trained for topic `{}`", model.topic))
    } else if model.examples_hash != set.hash {
        Some("the examples changed since it was trained".into())
    } else if model.rules_hash != rules_hash(rules, &model.options) {
        Some("the topic's rules changed since it was trained".into())
    } else {
        None
    }
}

/// Warnings for (issue, actor, stance) classes with too few examples to learn: the
/// rules read them alone.
pub fn thin_classes(rules: &TopicRules, set: &ExampleSet) -> Vec<String> {
    let minimum = TrainOptions::default().min_class_examples;
    let mut out = Vec::new();
    for issue in &rules.issues {
        for actor in &rules.actors {
            for stance in [
                super::Stance::Support,
                super::Stance::Oppose,
                super::Stance::Neutral,
            ] {
                let n = set
                    .items
                    .iter()
                    .filter(|e| e.relevant && e.label(&issue.id, &actor.id) == Some(stance))
                    .count();
                if n < minimum {
                    out.push(format!(
                        "topic `{}`: {}.{} {} has {n} example{} (fewer than {minimum}): the rules read it alone",
                        rules.id,
                        issue.id,
                        actor.id,
                        stance.as_str(),
                        if n == 1 { "" } else { "s" }
                    ));
                }
            }
        }
    }
    out
}

/// Trains a topic's model on its examples and the operators' corrections.
pub fn train_topic(
    rules_detector: &Detector,
    rules: &TopicRules,
    set: &ExampleSet,
    corrections: &[Example],
    options: &TrainOptions,
) -> Result<Model, TrainError> {
    let items: Vec<&Example> = set.items.iter().chain(corrections).collect();
    let featurised = featurise(rules_detector, &rules.id, &items);
    let issues: Vec<String> = rules.issues.iter().map(|i| i.id.clone()).collect();
    let actors: Vec<String> = rules.actors.iter().map(|a| a.id.clone()).collect();
    let refs: Vec<&Featurised<'_>> = featurised.iter().collect();
    let mut model = learned::train(&rules.id, &issues, &actors, &refs, options)?;
    model.examples_hash = set.hash.clone();
    model.rules_hash = rules_hash(rules, options);
    model.corrections = corrections.len();
    model.corrections_hash = corrections_hash(corrections);
    Ok(model)
}

/// Each example's features, as the rules-only detector finds them.
pub fn featurise<'e>(
    rules_detector: &Detector,
    topic: &str,
    items: &[&'e Example],
) -> Vec<Featurised<'e>> {
    items
        .iter()
        .map(|e| Featurised {
            example: e,
            sentences: rules_detector.features_of(
                topic,
                &ArticleText {
                    title: &e.title,
                    summary: &e.summary,
                    content: "",
                    lang: e.lang.as_deref(),
                },
            ),
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("cannot read the operators' corrections: {0}")]
    Corrections(#[source] BoxedError),
    #[error("topic `{topic}`: {source}")]
    Train {
        topic: String,
        #[source]
        source: TrainError,
    },
}

/// The operators' corrections by topic, asked for only when a model must be trained.
pub type Corrections<'a> = dyn FnMut() -> Result<BTreeMap<String, Vec<Example>>, BoxedError> + 'a;
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// The detector for a config: the rules of every topic, and the learned reader of
/// each topic that has examples (its model file when fresh, else trained now, on the
/// examples and the topic's corrections). Returns what it had to do, for the log.
pub fn load(
    topics: &[TopicRules],
    examples: &BTreeMap<String, std::sync::Arc<ExampleSet>>,
    corrections: &mut Corrections<'_>,
) -> Result<(Detector, Vec<String>), LoadError> {
    let mut detector = Detector::new(topics)?;
    let mut rules_detector: Option<Detector> = None;
    let mut corrected: Option<BTreeMap<String, Vec<Example>>> = None;
    let mut notes = Vec::new();
    for rules in topics {
        let set = examples.get(&rules.id).map(|s| s.as_ref());
        match inspect(rules, set) {
            (TopicModelStatus::RulesOnly, _) => {}
            (TopicModelStatus::Fresh { .. }, Some(model)) => detector.attach(model)?,
            (TopicModelStatus::Fresh { .. }, None) => {}
            (TopicModelStatus::Stale { path, why }, _) => {
                let Some(set) = set else { continue };
                let started = Instant::now();
                if corrected.is_none() {
                    corrected = Some(corrections().map_err(LoadError::Corrections)?);
                }
                let mine = corrected
                    .as_ref()
                    .and_then(|c| c.get(&rules.id))
                    .map_or(&[][..], Vec::as_slice);
                if rules_detector.is_none() {
                    rules_detector = Some(Detector::new(topics)?);
                }
                let Some(features_from) = rules_detector.as_ref() else {
                    continue;
                };
                let model = train_topic(features_from, rules, set, mine, &TrainOptions::default())
                    .map_err(|source| LoadError::Train {
                        topic: rules.id.clone(),
                        source,
                    })?;
                notes.push(format!(
                    "topic `{}`: {} ({why}): trained on {} examples in {:.1}s; `vigia train` saves it",
                    rules.id,
                    path.display(),
                    model.trained_on,
                    started.elapsed().as_secs_f64()
                ));
                detector.attach(model)?;
            }
        }
    }
    Ok((detector, notes))
}
