//! An article's classification: per topic, the rules' reading (a topic without a
//! learned reader), or the learned reader's with the rules' where the model must not or
//! cannot decide (a headline's turn against its prior, stances too rare to learn); then
//! one observation per (topic, issue, actor, stance), the most confident.

use super::analyse::{RulesView, Sentence};
use super::learned::{PairReading, Reading};
use super::rules::TopicRules;
use super::{cues, AttachedModel, Classification, Detector, Stance, StanceObservation, TopicMatch};

/// How sure the rules must be of a headline's support to stand over the learned
/// reader: subject, cue and issue in one clause of the headline.
const TURN_CONFIDENCE: f64 = 0.95;

impl Detector {
    pub fn classify(&self, article: &super::ArticleText<'_>) -> Classification {
        let has_title = !article.title.trim().is_empty();
        let sentences = self.analyse(article);
        let mut result = Classification::default();
        for t in 0..self.topics.len() {
            let view = self.rules_view(t, &sentences, has_title, self.models[t].is_some());
            match &self.models[t] {
                None => self.read_by_rules(t, &sentences, view, &mut result),
                Some(attached) => {
                    self.read_by_model(t, attached, &sentences, &view, has_title, &mut result)
                }
            }
        }
        dedupe(&mut result.stances);
        result
    }

    /// A topic the rules read alone: relevance and stances as they found them.
    fn read_by_rules(
        &self,
        t: usize,
        sentences: &[Sentence<'_, '_>],
        view: RulesView,
        result: &mut Classification,
    ) {
        if !view.relevant {
            return;
        }
        let rules = &self.topics[t].rules;
        result.topics.push(TopicMatch {
            id: rules.id.clone(),
            score: (view.score * 1000.0).round() / 1000.0,
            matched: view.matched.into_values().collect(),
        });
        for (n, (observations, _)) in view.readings.iter().enumerate() {
            result.stances.extend(
                observations
                    .iter()
                    .map(|o| observation(rules, sentences, n, o)),
            );
        }
    }

    /// A topic with a learned reader: the model decides relevance and reads each pair;
    /// a headline's turn and the stances the model leaves to the rules are the rules'.
    fn read_by_model(
        &self,
        t: usize,
        attached: &AttachedModel,
        sentences: &[Sentence<'_, '_>],
        view: &RulesView,
        has_title: bool,
        result: &mut Classification,
    ) {
        let features = self.features(t, sentences, view, has_title);
        let reading = attached.model.read(&features);
        if !reading.relevant {
            return;
        }
        let rules = &self.topics[t].rules;
        result.topics.push(TopicMatch {
            id: rules.id.clone(),
            score: (reading.relevance * 1000.0).round() / 1000.0,
            matched: view.matched.values().cloned().collect(),
        });
        let mut read_pairs = Vec::new();
        for o in turns(view, &reading, attached, has_title) {
            if !read_pairs.contains(&(o.issue, o.actor)) {
                read_pairs.push((o.issue, o.actor));
                result.stances.push(observation(rules, sentences, 0, o));
            }
        }
        for pair in &reading.stances {
            let Some(Some((issue, actor))) = attached.pairs.get(pair.head) else {
                continue;
            };
            if read_pairs.contains(&(*issue, *actor)) {
                continue;
            }
            read_pairs.push((*issue, *actor));
            let read = model_observation(rules, sentences, view, pair, (*issue, *actor));
            result.stances.push(read);
        }
        // Stances the model has too few examples to learn are the rules' to read,
        // where the model read nothing for that pair.
        for (n, (observations, _)) in view.readings.iter().enumerate() {
            for o in observations {
                if attached.leaves_to_rules(o) && !read_pairs.contains(&(o.issue, o.actor)) {
                    result.stances.push(observation(rules, sentences, n, o));
                }
            }
        }
    }
}

impl AttachedModel {
    /// Whether the model leaves a rules reading's pair and stance to the rules: it has
    /// no head for the pair, or too few examples of the stance.
    fn leaves_to_rules(&self, o: &cues::Observation) -> bool {
        let head = self
            .pairs
            .iter()
            .position(|p| *p == Some((o.issue, o.actor)));
        head.is_none_or(|h| self.model.heads[h].rules_only.contains(&o.stance))
    }
}

/// A headline whose rules read a clear support where the model reads none or
/// oppose: the model's prior ("Mexico always refuses") is what a turn looks like to
/// it, and a turn is what a subscriber must not miss.
fn turns<'v>(
    view: &'v RulesView,
    reading: &Reading,
    attached: &AttachedModel,
    has_title: bool,
) -> Vec<&'v cues::Observation> {
    match view.readings.first() {
        Some((obs, _)) if has_title => obs
            .iter()
            .filter(|o| o.stance == Stance::Support && o.confidence >= TURN_CONFIDENCE)
            .filter(|o| {
                !reading.stances.iter().any(|p| {
                    p.stance == Stance::Support
                        && attached.pairs.get(p.head) == Some(&Some((o.issue, o.actor)))
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A rules reading of sentence `n`, with the sentence as evidence.
fn observation(
    rules: &TopicRules,
    sentences: &[Sentence<'_, '_>],
    n: usize,
    obs: &cues::Observation,
) -> StanceObservation {
    StanceObservation {
        topic: rules.id.clone(),
        issue: rules.issues[obs.issue].id.clone(),
        actor: rules.actors[obs.actor].id.clone(),
        stance: obs.stance,
        confidence: obs.confidence,
        evidence: sentences[n].text.to_string(),
        cues: obs.cues.clone(),
    }
}

/// The model's reading of a pair, with its evidence sentence and, when the rules read
/// the same there, their cues.
fn model_observation(
    rules: &TopicRules,
    sentences: &[Sentence<'_, '_>],
    view: &RulesView,
    pair: &PairReading,
    (issue, actor): (usize, usize),
) -> StanceObservation {
    let cues = view
        .readings
        .get(pair.sentence)
        .and_then(|(obs, _)| {
            obs.iter()
                .find(|o| o.issue == issue && o.actor == actor && o.stance == pair.stance)
        })
        .map(|o| o.cues.clone())
        .unwrap_or_default();
    StanceObservation {
        topic: rules.id.clone(),
        issue: rules.issues[issue].id.clone(),
        actor: rules.actors[actor].id.clone(),
        stance: pair.stance,
        confidence: (pair.confidence * 100.0).round() / 100.0,
        evidence: sentences
            .get(pair.sentence)
            .map(|s| s.text.to_string())
            .unwrap_or_default(),
        cues,
    }
}

/// One observation per (topic, issue, actor, stance): the most confident.
fn dedupe(stances: &mut Vec<StanceObservation>) {
    stances.sort_by(|a, b| {
        (&a.topic, &a.issue, &a.actor, a.stance)
            .cmp(&(&b.topic, &b.issue, &b.actor, b.stance))
            .then(b.confidence.total_cmp(&a.confidence))
    });
    stances.dedup_by(|b, a| {
        a.topic == b.topic && a.issue == b.issue && a.actor == b.actor && a.stance == b.stance
    });
    stances.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
}
