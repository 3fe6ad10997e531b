//! Mail templates (minijinja): a plain-text and an HTML part for digests and for
//! confirmation mails, built in or replaced by an operator's own (`[mail] templates =
//! "dir"` with digest.txt, digest.html, confirm.txt, confirm.html).
//! The HTML template auto-escapes everything it is given, so text from feeds can never
//! become markup; links were already limited to http(s) when the draft was made.

use std::path::Path;

use minijinja::{AutoEscape, Environment};

use super::{ConfirmationDraft, Draft};

const TEXT: &str = include_str!("../../templates/digest.txt");
const HTML: &str = include_str!("../../templates/digest.html");
const CONFIRM_TEXT: &str = include_str!("../../templates/confirm.txt");
const CONFIRM_HTML: &str = include_str!("../../templates/confirm.html");

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read the template {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
}

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name in `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Templates, RenderError> {
        let env = template_environment(
            dir,
            &[
                ("digest.txt", TEXT),
                ("digest.html", HTML),
                ("confirm.txt", CONFIRM_TEXT),
                ("confirm.html", CONFIRM_HTML),
            ],
        )?;
        Ok(Templates { env })
    }

    /// (text, html)
    pub fn render(&self, draft: &Draft) -> Result<(String, String), RenderError> {
        self.render_pair("digest", draft)
    }

    /// The confirmation mail's (text, html).
    pub fn render_confirmation(
        &self,
        draft: &ConfirmationDraft,
    ) -> Result<(String, String), RenderError> {
        self.render_pair("confirm", draft)
    }

    fn render_pair(
        &self,
        name: &str,
        context: &impl serde::Serialize,
    ) -> Result<(String, String), RenderError> {
        let text = self
            .env
            .get_template(&format!("{name}.txt"))?
            .render(context)?;
        let html = self
            .env
            .get_template(&format!("{name}.html"))?
            .render(context)?;
        Ok((text, html))
    }
}

/// A minijinja environment holding these built-in templates, each replaced by the
/// file of the same name in `dir`; `.html` templates escape everything they are given.
pub fn template_environment(
    dir: Option<&Path>,
    builtins: &[(&str, &str)],
) -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_keep_trailing_newline(true);
    for (name, builtin) in builtins {
        let source = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
            Some(path) => std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
                path: path.display().to_string(),
                source,
            })?,
            None => builtin.to_string(),
        };
        env.add_template_owned(name.to_string(), source)?;
    }
    Ok(env)
}
