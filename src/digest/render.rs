//! Digest templates (minijinja): a plain-text and an HTML part, built in or replaced by
//! an operator's own (`[mail] templates = "dir"` with digest.txt and digest.html).
//! The HTML template auto-escapes everything it is given, so text from feeds can never
//! become markup; links were already limited to http(s) when the draft was made.

use std::path::Path;

use minijinja::{AutoEscape, Environment};

use super::Draft;

const TEXT: &str = include_str!("../../templates/digest.txt");
const HTML: &str = include_str!("../../templates/digest.html");

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read the digest template {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("digest template: {0}")]
    Template(#[from] minijinja::Error),
}

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name in `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Templates, RenderError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_keep_trailing_newline(true);
        for (name, builtin) in [("digest.txt", TEXT), ("digest.html", HTML)] {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => {
                    std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                None => builtin.to_string(),
            };
            env.add_template_owned(name.to_string(), source)?;
        }
        Ok(Templates { env })
    }

    /// (text, html)
    pub fn render(&self, draft: &Draft) -> Result<(String, String), RenderError> {
        let text = self.env.get_template("digest.txt")?.render(draft)?;
        let html = self.env.get_template("digest.html")?.render(draft)?;
        Ok((text, html))
    }
}
