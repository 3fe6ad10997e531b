//! A topic's labelled examples: the articles the learned reader is trained on.
//!
//! One JSON object a line, in `vigia eval`'s labelled format plus `url` (where the
//! facts come from), an optional `story` (the real-world event: cross-validation keeps
//! a story's items in one fold) and an optional `note`. Every problem is reported as
//! `file:line:col` against the topic's rules (unknown issue, actor or stance), so
//! `vigia check` can name them all at once.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::rules::TopicRules;
use super::Stance;

/// A labelled article.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub id: String,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub story: Option<String>,
    pub relevant: bool,
    /// issue → actor → stance (None: the article says nothing of that actor on it).
    #[serde(default)]
    pub issues: BTreeMap<String, BTreeMap<String, Option<Stance>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Example {
    /// What keeps copies of one story together: the story, else the URL, else the id.
    pub fn story_key(&self) -> &str {
        self.story
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .or(self.url.as_deref().filter(|u| !u.trim().is_empty()))
            .unwrap_or(&self.id)
    }

    /// The labelled stance for a pair; `None` when unlabelled or labelled null.
    pub fn label(&self, issue: &str, actor: &str) -> Option<Stance> {
        self.issues
            .get(issue)
            .and_then(|a| a.get(actor))
            .copied()
            .flatten()
    }
}

/// A topic's examples as read from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleSet {
    pub items: Vec<Example>,
    /// SHA-256 of the file's bytes: a trained model names it.
    pub hash: String,
}

/// One problem in an examples file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ExampleProblem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExamplesError {
    #[error("cannot read the examples file {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ExampleProblem>),
}

/// Reads and checks a topic's examples file.
pub fn load(path: &Path, rules: &TopicRules) -> Result<ExampleSet, ExamplesError> {
    let bytes = std::fs::read(path).map_err(|source| ExamplesError::Unreadable {
        path: path.display().to_string(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let items = parse(&text, rules).map_err(ExamplesError::Invalid)?;
    Ok(ExampleSet {
        items,
        hash: hex::encode(Sha256::digest(&bytes)),
    })
}

/// Parses examples text; every problem is returned, each with its line.
pub fn parse(text: &str, rules: &TopicRules) -> Result<Vec<Example>, Vec<ExampleProblem>> {
    let mut problems = Vec::new();
    let mut items = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut problem = |col: usize, message: String| {
            problems.push(ExampleProblem {
                line: line_no,
                col,
                message,
            })
        };
        let Some(example) = parse_line(line, rules, &mut problem) else {
            continue;
        };
        if !ids.insert(example.id.clone()) {
            problem(1, format!("duplicate example id `{}`", example.id));
            continue;
        }
        items.push(example);
    }
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(problems)
    }
}

/// One line's example, or None with its problems told to `problem` (column, message).
fn parse_line(
    line: &str,
    rules: &TopicRules,
    problem: &mut impl FnMut(usize, String),
) -> Option<Example> {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            problem(e.column().max(1), format!("not JSON: {e}"));
            return None;
        }
    };
    // Labels are checked against the topic before typing, so that an unknown
    // stance is named as such rather than as a serde variant error.
    if let Some(issues) = value.get("issues").and_then(|v| v.as_object()) {
        if !labels_known(issues, rules, problem) {
            return None;
        }
    }
    let example: Example = match serde_json::from_value(value) {
        Ok(e) => e,
        Err(e) => {
            problem(1, format!("not a labelled example: {e}"));
            return None;
        }
    };
    if example.title.trim().is_empty() && example.summary.trim().is_empty() {
        problem(
            1,
            format!("example `{}` has no title or summary", example.id),
        );
        return None;
    }
    if !example.relevant
        && example
            .issues
            .values()
            .flat_map(|a| a.values())
            .any(Option::is_some)
    {
        problem(
            1,
            format!(
                "example `{}` is not relevant but carries a stance",
                example.id
            ),
        );
        return None;
    }
    Some(example)
}

/// Whether every label names an issue and actor of the topic and a stance; each one
/// that does not is told to `problem`.
fn labels_known(
    issues: &serde_json::Map<String, serde_json::Value>,
    rules: &TopicRules,
    problem: &mut impl FnMut(usize, String),
) -> bool {
    let mut known = true;
    for (issue, actors) in issues {
        if !rules.issues.iter().any(|i| &i.id == issue) {
            problem(
                1,
                format!("unknown issue `{issue}` for topic `{}`", rules.id),
            );
            known = false;
            continue;
        }
        let Some(actors) = actors.as_object() else {
            problem(1, format!("issue `{issue}` must map actors to stances"));
            known = false;
            continue;
        };
        for (actor, stance) in actors {
            if !rules.actors.iter().any(|a| &a.id == actor) {
                problem(
                    1,
                    format!("unknown actor `{actor}` for topic `{}`", rules.id),
                );
                known = false;
            }
            match stance {
                serde_json::Value::Null => {}
                serde_json::Value::String(s)
                    if matches!(s.as_str(), "support" | "oppose" | "neutral") => {}
                other => {
                    problem(
                        1,
                        format!(
                            "{issue}.{actor}: {other} is not a stance (support, oppose, neutral or null)"
                        ),
                    );
                    known = false;
                }
            }
        }
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> TopicRules {
        toml::from_str(
            r#"
            id = "t"
            [[actors]]
            id = "mx_gov"
            aliases = ["Mexico"]
            [[issues]]
            id = "us_military_action"
            terms = ["troops"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn reads_labels_and_keeps_stories_together() {
        let text = r#"{"id":"a","title":"Mexico rejects troops","relevant":true,"story":"s1","issues":{"us_military_action":{"mx_gov":"oppose"}}}
{"id":"b","title":"Other","relevant":false,"url":"https://e.org/x"}
"#;
        let items = parse(text, &rules()).unwrap();
        assert_eq!(
            items[0].label("us_military_action", "mx_gov"),
            Some(Stance::Oppose)
        );
        assert_eq!(items[0].story_key(), "s1");
        assert_eq!(items[1].story_key(), "https://e.org/x");
    }

    #[test]
    fn names_every_bad_line() {
        let text = "{\"id\":\"a\",\"title\":\"x\",\"relevant\":true,\"issues\":{\"us_military_action\":{\"eu_gov\":\"oppose\"}}}\n\
                    not json\n\
                    {\"id\":\"c\",\"title\":\"x\",\"relevant\":true,\"issues\":{\"trade\":{}}}\n\
                    {\"id\":\"d\",\"title\":\"x\",\"relevant\":true,\"issues\":{\"us_military_action\":{\"mx_gov\":\"maybe\"}}}\n\
                    {\"id\":\"e\",\"title\":\"x\",\"relevant\":false,\"issues\":{\"us_military_action\":{\"mx_gov\":\"oppose\"}}}\n";
        let problems = parse(text, &rules()).unwrap_err();
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5], "{problems:?}");
        assert!(problems[0].message.contains("unknown actor `eu_gov`"));
        assert!(problems[2].message.contains("unknown issue `trade`"));
        assert!(problems[3].message.contains("\"maybe\" is not a stance"));
        assert!(problems[4]
            .message
            .contains("not relevant but carries a stance"));
    }
}
