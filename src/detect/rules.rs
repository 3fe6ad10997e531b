//! The topic rules as the config spells them (serde types), and their validation.
//! `crate::detect` compiles them into one automaton; the config module only checks
//! that they are well formed. The shipped `config/vigia.toml` teaches the format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A watch topic: term groups that decide relevance, and the actors, issues and cues
/// that read stances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRules {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Share of the groups' weight (0..1) an article must reach, on top of `require`.
    #[serde(default)]
    pub threshold: f64,
    /// Named term groups: `[topic.groups.NAME]`.
    #[serde(default)]
    pub groups: BTreeMap<String, TermGroup>,
    /// Groups that must all match.
    #[serde(default)]
    pub require: Vec<String>,
    /// Groups of which at least one must match.
    #[serde(default)]
    pub require_any: Vec<String>,
    /// Groups of which none may match.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub actors: Vec<ActorRules>,
    /// Who may be the subject of a cue without being an actor (legislators, governors,
    /// cartels): a cue they carry gives no stance.
    #[serde(default)]
    pub non_actors: Vec<String>,
    /// Names for all actors at once ("both governments", "ambos gobiernos").
    #[serde(default)]
    pub joint_actors: Vec<String>,
    #[serde(default)]
    pub issues: Vec<IssueRules>,
    #[serde(default)]
    pub cues: CueRules,
    /// Labelled examples that train the topic's learned reader (JSON Lines, relative to
    /// the config file; resolved when the config is read). Without them the rules read
    /// the topic alone.
    #[serde(default, skip_serializing)]
    pub examples: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermGroup {
    pub terms: Vec<String>,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorRules {
    pub id: String,
    /// How digests and pages name the actor ("Mexico's government").
    #[serde(default)]
    pub label: Option<String>,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRules {
    pub id: String,
    /// How digests and pages name the issue ("US military action").
    #[serde(default)]
    pub label: Option<String>,
    /// Words that name the issue.
    pub terms: Vec<String>,
    /// Cues that belong to this issue alone (an act that is the issue, such as
    /// "extradites" for cooperation), by stance.
    #[serde(default)]
    pub support: Vec<String>,
    #[serde(default)]
    pub oppose: Vec<String>,
    #[serde(default)]
    pub neutral: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CueRules {
    #[serde(default)]
    pub support: Vec<String>,
    #[serde(default)]
    pub oppose: Vec<String>,
    #[serde(default)]
    pub neutral: Vec<String>,
    /// Words that turn a following cue around ("will not allow", "no permitirá").
    #[serde(default)]
    pub negation: Vec<String>,
    /// Verbs of saying: "X said", "dijo X" make X the speaker of the sentence.
    #[serde(default)]
    pub reporting: Vec<String>,
    /// Words that end a clause ("but", "pero"): a cue's actor is looked for within it.
    #[serde(default)]
    pub clause_breaks: Vec<String>,
    /// Words after which a name is an object, not a subject ("in Mexico", "a Washington").
    #[serde(default)]
    pub prepositions: Vec<String>,
    /// Words that join two subjects ("and", "y"): "Mexico and the US agree" is both.
    #[serde(default)]
    pub conjunctions: Vec<String>,
}

impl TopicRules {
    /// The actor's label, else its id.
    pub fn actor_label(&self, id: &str) -> String {
        self.actors
            .iter()
            .find(|a| a.id == id)
            .and_then(|a| a.label.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// The issue's label, else its id.
    pub fn issue_label(&self, id: &str) -> String {
        self.issues
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.label.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// Problems that serde cannot see: groups named in require/exclude that do not
    /// exist, empty terms, a threshold outside 0..1, duplicate ids.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(0.0..=1.0).contains(&self.threshold) {
            out.push(format!(
                "topic {}: threshold must be between 0 and 1",
                self.id
            ));
        }
        for name in self
            .require
            .iter()
            .chain(&self.require_any)
            .chain(&self.exclude)
        {
            if !self.groups.contains_key(name) {
                out.push(format!(
                    "topic {}: group `{name}` is named in require, require_any or exclude but not defined",
                    self.id
                ));
            }
        }
        let mut terms: Vec<(&str, &String)> = Vec::new();
        for (name, g) in &self.groups {
            terms.extend(g.terms.iter().map(|t| (name.as_str(), t)));
        }
        for a in &self.actors {
            terms.extend(a.aliases.iter().map(|t| (a.id.as_str(), t)));
        }
        for i in &self.issues {
            for t in i
                .terms
                .iter()
                .chain(&i.support)
                .chain(&i.oppose)
                .chain(&i.neutral)
            {
                terms.push((i.id.as_str(), t));
            }
        }
        for (owner, term) in terms {
            let (_, body) = split_lang(term);
            if crate::detect::text::tokens(body.trim_end_matches('*')).is_empty() {
                out.push(format!(
                    "topic {}: `{owner}` has an empty term {term:?}",
                    self.id
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for id in self
            .actors
            .iter()
            .map(|a| &a.id)
            .chain(self.issues.iter().map(|i| &i.id))
        {
            if !seen.insert(id) {
                out.push(format!(
                    "topic {}: actor or issue id `{id}` is defined twice",
                    self.id
                ));
            }
        }
        out
    }
}

/// "es:EU" → (Some("es"), "EU"); "cartel*" → (None, "cartel*").
pub fn split_lang(term: &str) -> (Option<&str>, &str) {
    match term.split_once(':') {
        Some((lang, rest)) if lang.len() == 2 && lang.chars().all(|c| c.is_ascii_lowercase()) => {
            (Some(lang), rest)
        }
        _ => (None, term),
    }
}
