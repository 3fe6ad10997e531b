//! Scoring the detector against labelled articles, exactly as the SPEC defines
//! `vigia eval`: relevance precision/recall/F1 for one topic; per issue and actor,
//! stance accuracy, coverage and macro-F1 over support/oppose/neutral, where a pair's
//! prediction is the most confident stance classify gives for it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::detect::{ArticleText, Classification, Detector, Stance};

const CLASSES: [Stance; 3] = [Stance::Support, Stance::Oppose, Stance::Neutral];

/// One labelled article; fields beyond these are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Labelled {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub lang: Option<String>,
    pub relevant: bool,
    #[serde(default)]
    pub issues: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    pub labelled: u32,
    pub predicted: u32,
    pub correct: u32,
    /// Stances predicted for a pair that a relevant item's label leaves null: not part
    /// of the SPEC's figures, but what would reach a digest without cause.
    pub spurious: u32,
    /// Per class: (true positives, predicted, gold).
    #[serde(skip)]
    pub per_class: [(u32, u32, u32); 3],
}

impl Counts {
    fn add(&mut self, gold: Stance, guess: Option<Stance>) {
        let g = class_index(gold);
        self.labelled += 1;
        self.per_class[g].2 += 1;
        if let Some(guess) = guess {
            self.predicted += 1;
            self.per_class[class_index(guess)].1 += 1;
            if guess == gold {
                self.correct += 1;
                self.per_class[g].0 += 1;
            }
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.labelled += other.labelled;
        self.predicted += other.predicted;
        self.correct += other.correct;
        self.spurious += other.spurious;
        for i in 0..3 {
            self.per_class[i].0 += other.per_class[i].0;
            self.per_class[i].1 += other.per_class[i].1;
            self.per_class[i].2 += other.per_class[i].2;
        }
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.predicted)
    }

    pub fn coverage(&self) -> f64 {
        ratio(self.predicted, self.labelled)
    }

    /// Mean F1 over the three classes; a labelled pair without a prediction counts as
    /// a miss for its class.
    pub fn macro_f1(&self) -> f64 {
        self.class_f1().iter().sum::<f64>() / 3.0
    }

    /// F1 of support, oppose and neutral.
    pub fn class_f1(&self) -> [f64; 3] {
        self.per_class.map(|(tp, pred, gold)| {
            let p = ratio(tp, pred);
            let r = ratio(tp, gold);
            if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            }
        })
    }
}

fn class_index(s: Stance) -> usize {
    CLASSES.iter().position(|c| *c == s).unwrap_or(0)
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 {
        0.0
    } else {
        f64::from(a) / f64::from(b)
    }
}

/// A wrong answer, for --verbose.
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub id: String,
    pub what: String,
    pub expected: String,
    pub got: String,
    pub title: String,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub items: u32,
    pub tp: u32,
    pub fp: u32,
    pub fn_: u32,
    pub pairs: BTreeMap<(String, String), Counts>,
    pub misses: Vec<Miss>,
}

impl Report {
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }

    pub fn overall(&self) -> Counts {
        let mut all = Counts::default();
        for c in self.pairs.values() {
            all.merge(c);
        }
        all
    }

    pub fn to_json(&self) -> Value {
        let all = self.overall();
        let round = |x: f64| (x * 10000.0).round() / 10000.0;
        let pairs: Vec<Value> = self
            .pairs
            .iter()
            .map(|((issue, actor), c)| {
                serde_json::json!({
                    "issue": issue, "actor": actor, "labelled": c.labelled, "predicted": c.predicted,
                    "correct": c.correct, "accuracy": round(c.accuracy()), "coverage": round(c.coverage()),
                    "macro_f1": round(c.macro_f1()), "spurious": c.spurious,
                })
            })
            .collect();
        serde_json::json!({
            "items": self.items,
            "relevance": {"precision": round(self.precision()), "recall": round(self.recall()), "f1": round(self.f1()),
                          "tp": self.tp, "fp": self.fp, "fn": self.fn_},
            "stance": {"accuracy": round(all.accuracy()), "coverage": round(all.coverage()), "macro_f1": round(all.macro_f1()),
                       "labelled": all.labelled, "predicted": all.predicted, "correct": all.correct,
                       "spurious": all.spurious},
            "pairs": pairs,
        })
    }
}

/// The most confident stance per (issue, actor) in one classification.
pub fn predictions(
    classification: &Classification,
    topic: &str,
) -> HashMap<(String, String), Stance> {
    let mut best: HashMap<(String, String), (f64, Stance)> = HashMap::new();
    for s in classification.stances.iter().filter(|s| s.topic == topic) {
        let key = (s.issue.clone(), s.actor.clone());
        match best.get(&key) {
            Some((c, _)) if *c >= s.confidence => {}
            _ => {
                best.insert(key, (s.confidence, s.stance));
            }
        }
    }
    best.into_iter().map(|(k, (_, s))| (k, s)).collect()
}

/// A label's stance; anything else (a typo, "none") labels nothing.
fn parse_stance(s: &str) -> Option<Stance> {
    crate::events::from_name(s).ok()
}

pub fn score(detector: &Detector, items: &[Labelled], topic: &str) -> Report {
    let classified: Vec<(&Labelled, Classification)> = items
        .iter()
        .map(|item| {
            let c = detector.classify(&ArticleText {
                title: &item.title,
                summary: &item.summary,
                content: &item.content,
                lang: item.lang.as_deref(),
            });
            (item, c)
        })
        .collect();
    score_classified(&classified, topic)
}

/// Scores classifications already made (by one detector, or by cross-validation's
/// per-fold detectors).
pub fn score_classified(classified: &[(&Labelled, Classification)], topic: &str) -> Report {
    let mut report = Report::default();
    for (item, classification) in classified {
        report.items += 1;
        let relevant = classification.topics.iter().any(|t| t.id == topic);
        match (relevant, item.relevant) {
            (true, true) => report.tp += 1,
            (true, false) => report.fp += 1,
            (false, true) => report.fn_ += 1,
            (false, false) => {}
        }
        if relevant != item.relevant {
            report.misses.push(Miss {
                id: item.id.clone(),
                what: "relevance".into(),
                expected: item.relevant.to_string(),
                got: relevant.to_string(),
                title: item.title.clone(),
            });
        }
        let predicted = predictions(classification, topic);
        for (issue, actors) in &item.issues {
            for (actor, gold) in actors {
                let Some(gold) = gold.as_deref().and_then(parse_stance) else {
                    continue;
                };
                let guess = predicted.get(&(issue.clone(), actor.clone())).copied();
                report
                    .pairs
                    .entry((issue.clone(), actor.clone()))
                    .or_default()
                    .add(gold, guess);
                if guess != Some(gold) {
                    report.misses.push(Miss {
                        id: item.id.clone(),
                        what: format!("{issue}.{actor}"),
                        expected: gold.as_str().into(),
                        got: guess
                            .map(|g| g.as_str().to_string())
                            .unwrap_or_else(|| "none".into()),
                        title: item.title.clone(),
                    });
                }
            }
        }
        // Stances predicted where the label says nothing are not scored (SPEC), but
        // are worth seeing when tuning.
        for ((issue, actor), guess) in &predicted {
            let labelled = item
                .issues
                .get(issue)
                .and_then(|a| a.get(actor))
                .and_then(|g| g.as_deref())
                .is_some();
            if !labelled && item.relevant {
                report
                    .pairs
                    .entry((issue.clone(), actor.clone()))
                    .or_default()
                    .spurious += 1;
                report.misses.push(Miss {
                    id: item.id.clone(),
                    what: format!("{issue}.{actor} (unlabelled)"),
                    expected: "null".into(),
                    got: guess.as_str().into(),
                    title: item.title.clone(),
                });
            }
        }
    }
    report
}
