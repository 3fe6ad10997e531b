//! Reading an article with a model: a sparse dot product of its sentences' features
//! with the kept weights, relevance first (an article off the topic stops there), then
//! each (issue, actor) head's likeliest stance and the sentence that carries it.

use super::features::is_knowledge;
use super::model::{Head, Model};
use crate::detect::Stance;

/// One (issue, actor) stance the model reads in an article.
#[derive(Debug, Clone, PartialEq)]
pub struct PairReading {
    /// Index into `Model::heads`.
    pub head: usize,
    pub stance: Stance,
    pub confidence: f64,
    /// The sentence that carries it.
    pub sentence: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Probability that the article is about the topic.
    pub relevance: f64,
    /// Whether that reaches the model's threshold.
    pub relevant: bool,
    pub stances: Vec<PairReading>,
}

/// An article's features that the model knows, as weight rows.
struct Found {
    /// Each row with the sentence it was found in, as often as it was found.
    rows: Vec<(u32, usize)>,
    /// Each row once: the article counts a feature once, as training did.
    distinct: Vec<u32>,
    /// The L2 norm training gave an article's row of that many features.
    norm: f64,
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn parse_class(name: &str) -> Option<Stance> {
    match name {
        "support" => Some(Stance::Support),
        "oppose" => Some(Stance::Oppose),
        "neutral" => Some(Stance::Neutral),
        _ => None,
    }
}

impl Model {
    /// Reads an article from its sentences' features (the first holds the article's
    /// own features too). Relevance is read first; an article off the topic costs
    /// nothing more.
    pub fn read(&self, sentences: &[Vec<u64>]) -> Reading {
        let found = self.found(sentences);
        let mut column = 0;
        let mut heads = Vec::with_capacity(self.heads.len());
        for head in &self.heads {
            heads.push(column);
            column += head.classes.len();
        }
        let relevance = self.relevance(&found, &heads);
        let mut reading = Reading {
            relevance,
            relevant: relevance >= self.options.relevance_threshold,
            stances: Vec::new(),
        };
        if !reading.relevant {
            return reading;
        }
        let article = self.sum_columns(&found, 0..self.width());
        for (h, head) in self
            .heads
            .iter()
            .enumerate()
            .filter(|(_, h)| h.issue.is_some())
        {
            let pair = self.read_pair(h, head, heads[h], &article, &found, sentences.len());
            reading.stances.extend(pair);
        }
        reading
    }

    fn found(&self, sentences: &[Vec<u64>]) -> Found {
        let mut rows: Vec<(u32, usize)> = Vec::with_capacity(sentences.iter().map(Vec::len).sum());
        for (s, feats) in sentences.iter().enumerate() {
            for f in feats {
                if let Some(&row) = self.index.get(f) {
                    rows.push((row, s));
                }
            }
        }
        let mut distinct: Vec<u32> = rows.iter().map(|(r, _)| *r).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let norm = if distinct.is_empty() {
            0.0
        } else {
            1.0 / (distinct.len() as f64).sqrt()
        };
        Found {
            rows,
            distinct,
            norm,
        }
    }

    /// What a feature weighs: the rules' knowledge by the training option, a word 1.
    fn scale(&self, row: u32) -> f64 {
        if self
            .features
            .get(row as usize)
            .is_some_and(|f| is_knowledge(*f))
        {
            self.options.knowledge_weight
        } else {
            1.0
        }
    }

    /// The article's weighted feature sums in the given weight columns.
    fn sum_columns(&self, found: &Found, columns: std::ops::Range<usize>) -> Vec<f64> {
        let mut sums = vec![0f64; columns.len()];
        for &row in &found.distinct {
            let w = self.weights_row(row);
            let x = self.scale(row);
            for (k, c) in columns.clone().enumerate() {
                sums[k] += f64::from(w[c]) * x;
            }
        }
        sums
    }

    /// The relevance head's probability of "yes" (0 without a relevance head).
    fn relevance(&self, found: &Found, heads: &[usize]) -> f64 {
        let mut relevance = 0.0;
        for (h, head) in self
            .heads
            .iter()
            .enumerate()
            .filter(|(_, h)| h.issue.is_none())
        {
            let sums = self.sum_columns(found, heads[h]..heads[h] + head.classes.len());
            let logits: Vec<f64> = sums
                .iter()
                .zip(&head.bias)
                .map(|(s, b)| f64::from(*b) + s * found.norm)
                .collect();
            relevance = softmax(&logits).get(1).copied().unwrap_or(0.0);
        }
        relevance
    }

    /// One pair head's likeliest stance, read when it reaches the threshold; `start` is
    /// the head's first column, `article` the article's sums in every column.
    fn read_pair(
        &self,
        h: usize,
        head: &Head,
        start: usize,
        article: &[f64],
        found: &Found,
        sentences: usize,
    ) -> Option<PairReading> {
        let k = head.classes.len();
        let logits: Vec<f64> = (0..k)
            .map(|c| f64::from(head.bias[c]) + article[start + c] * found.norm)
            .collect();
        let probs = softmax(&logits);
        // The likeliest stance, read when it reaches the threshold.
        let (best, p) = probs
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| head.classes[*i] != "none")
            .fold(
                (0, f64::MIN),
                |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
            );
        if p < self.options.stance_threshold {
            return None;
        }
        let stance = parse_class(&head.classes[best])?;
        Some(PairReading {
            head: h,
            stance,
            confidence: p,
            sentence: self.evidence(head, start, best, found, sentences),
        })
    }

    /// The evidence: the sentence whose features push hardest from "none" towards the
    /// stance read (column `best` of the head starting at `start`).
    fn evidence(
        &self,
        head: &Head,
        start: usize,
        best: usize,
        found: &Found,
        sentences: usize,
    ) -> usize {
        let none = head.classes.iter().position(|c| c == "none");
        let mut margins = vec![0f64; sentences.max(1)];
        for &(row, s) in &found.rows {
            let w = self.weights_row(row);
            margins[s] += (f64::from(w[start + best])
                - none.map_or(0.0, |n| f64::from(w[start + n])))
                * self.scale(row);
        }
        margins
            .iter()
            .enumerate()
            .fold(
                (0, f64::MIN),
                |acc, (i, m)| if *m > acc.1 { (i, *m) } else { acc },
            )
            .0
    }
}
