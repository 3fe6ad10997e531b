//! `vigia classify` and `vigia eval`: the detector from the command line.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::UsageError;
use crate::config::Config;
use crate::detect::{ArticleText, Detector};

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

pub(super) fn detector(config: &Config) -> Result<Detector> {
    Ok(Detector::new(&config.topics)?)
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
    let topic = match topic {
        Some(t) if config.topics.iter().any(|c| c.id == t) => t.to_string(),
        Some(t) => {
            return Err(UsageError(format!(
                "unknown topic {t:?}; the config defines {:?}",
                detector.topic_ids()
            ))
            .into())
        }
        None => config
            .topics
            .first()
            .map(|t| t.id.clone())
            .ok_or_else(|| UsageError("the config defines no topic to score".into()))?,
    };
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
        writeln!(out, "\nmisses:")?;
        for m in &report.misses {
            writeln!(
                out,
                "{} {:<40} expected {:<8} got {:<8} {}",
                m.id, m.what, m.expected, m.got, m.title
            )?;
        }
    }
    Ok(())
}
