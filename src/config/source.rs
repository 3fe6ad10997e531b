//! Where a config problem is: byte spans turned into `file:line:col`, and the checks
//! that need the document's shape rather than its values (unknown keys, sections of the
//! wrong type). Every problem is collected, so `vigia check` can report them all at once.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Collects diagnostics against one source text.
pub struct Diagnostics<'a> {
    file: String,
    text: &'a str,
    pub list: Vec<Diagnostic>,
    /// Whether a secret that is named but not available (an unset environment
    /// variable) is an error: it is for the daemon and `vigia check`, not for
    /// commands that only read the database (`subscribers list`, `feeds`, ...).
    pub secrets: Secrets,
}

/// Whether the config's secrets must be available when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Required,
    NotNeeded,
}

impl<'a> Diagnostics<'a> {
    pub fn new(file: String, text: &'a str) -> Self {
        Diagnostics {
            file,
            text,
            list: Vec::new(),
            secrets: Secrets::Required,
        }
    }

    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.list.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        });
    }

    /// Deserializes a section; a type error becomes a diagnostic and `None`.
    pub fn section<T: DeserializeOwned>(
        &mut self,
        value: Spanned<DeValue<'_>>,
        what: &str,
    ) -> Option<T> {
        let span = value.span();
        match T::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(t) => Some(t),
            Err(e) => {
                let at = e.span().unwrap_or(span);
                self.at(at, format!("{what}: {}", e.message().trim()));
                None
            }
        }
    }

    /// Reports keys that the section does not have, and removes them so that the rest
    /// of the section can still be read.
    pub fn unknown_keys(&mut self, table: &mut DeTable<'_>, allowed: &[&str], section: &str) {
        let unknown: Vec<(String, Range<usize>)> = table
            .iter()
            .filter(|(k, _)| !allowed.contains(&&**k.get_ref()))
            .map(|(k, _)| (k.get_ref().to_string(), k.span()))
            .collect();
        for (key, span) in unknown {
            self.at(
                span,
                format!(
                    "unknown key `{key}` in {section}; expected one of: {}",
                    allowed.join(", ")
                ),
            );
            table.remove(key.as_str());
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nñb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 8), (2, 2));
    }
}
