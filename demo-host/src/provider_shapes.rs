//! Provider checks (SPEC §8): warnings, never refusals, when a value about
//! to be written has the shape of another provider's key (an `sk-ant-`
//! key sent as `OPENAI_API_KEY`) or not the shape declared for its key.
//!
//! The shapes are data: `demo-host/provider-shapes.json`, shipped inside
//! the binary, one row per provider of the default catalog, each citing
//! the provider's own documentation; the config file adds rows or replaces
//! a provider's row (same `provider` name) with `[[security.key_shapes]]`:
//!
//! ```toml
//! [[security.key_shapes]]
//! provider = "Acme"
//! keys = ["ACME_API_KEY"]
//! prefixes = ["acme_"]            # and/or pattern = "^acme_[a-z0-9]{32}$"
//! docs = "https://docs.acme.example/keys"
//! ```
//!
//! Warnings name providers and documentation, never any part of a value.
//! Providers change their prefixes, so a value that fits no shape is
//! written all the same.

use std::{path::Path, sync::Arc};

use regex::Regex;
use serde::Deserialize;

/// The shipped table.
pub(crate) const SHIPPED: &str = include_str!("../provider-shapes.json");

/// A table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShapeError {
    /// The JSON or TOML does not hold rows of the expected fields.
    #[error("the key shapes of {origin} are malformed: {message}")]
    Malformed {
        /// The shipped table or the config file.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A row's `pattern` is not a regular expression.
    #[error("the key shape of {provider} has an invalid pattern: {message}")]
    Pattern {
        /// The row's provider.
        provider: String,
        /// The regex error.
        message: String,
    },
}

/// One row as written.
#[derive(Debug, Clone, Deserialize)]
struct RowText {
    provider: String,
    keys: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    pattern: Option<String>,
    docs: String,
}

#[derive(Debug, Deserialize)]
struct TableText {
    shapes: Vec<RowText>,
}

/// One provider's shape.
#[derive(Debug, Clone)]
struct Row {
    provider: String,
    keys: Vec<String>,
    prefixes: Vec<String>,
    pattern: Option<Regex>,
    docs: String,
}

impl Row {
    fn compile(text: RowText) -> Result<Self, ShapeError> {
        let pattern = match &text.pattern {
            Some(p) => Some(Regex::new(p).map_err(|e| ShapeError::Pattern {
                provider: text.provider.clone(),
                message: e.to_string(),
            })?),
            None => None,
        };
        Ok(Self {
            provider: text.provider,
            keys: text.keys,
            prefixes: text.prefixes,
            pattern,
            docs: text.docs,
        })
    }

    /// How specifically `value` has this row's shape: the length of the
    /// longest prefix it starts with, or (for a pattern) its whole length.
    fn fit(&self, value: &str) -> Option<usize> {
        let prefix = self
            .prefixes
            .iter()
            .filter(|p| value.starts_with(p.as_str()))
            .map(String::len)
            .max();
        let pattern = self
            .pattern
            .as_ref()
            .filter(|re| re.is_match(value))
            .map(|_| value.len());
        prefix.max(pattern)
    }

    fn has_shape(&self) -> bool {
        !self.prefixes.is_empty() || self.pattern.is_some()
    }
}

/// The provider shapes in force.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shapes {
    rows: Vec<Row>,
}

impl Shapes {
    /// The shipped table.
    pub(crate) fn shipped() -> Result<Self, ShapeError> {
        let table: TableText =
            serde_json::from_str(SHIPPED).map_err(|e| ShapeError::Malformed {
                origin: "the shipped table".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            rows: table
                .shapes
                .into_iter()
                .map(Row::compile)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The shipped table extended by the `[[security.key_shapes]]` rows of
    /// the config text `config` (a row replaces the shipped row of the same
    /// provider).
    pub(crate) fn with_config(mut self, config: &str) -> Result<Self, ShapeError> {
        let malformed = |message: String| ShapeError::Malformed {
            origin: "the config file".into(),
            message,
        };
        let doc: toml_edit::DocumentMut = config
            .parse()
            .map_err(|e: toml_edit::TomlError| malformed(e.message().to_owned()))?;
        let Some(rows) = doc
            .get("security")
            .and_then(|s| s.get("key_shapes"))
            .map(|rows| {
                rows.as_array_of_tables()
                    .ok_or_else(|| malformed("`security.key_shapes` is not [[rows]]".into()))
            })
            .transpose()?
        else {
            return Ok(self);
        };
        for table in rows.iter() {
            let text = |field: &str| table.get(field).and_then(|v| v.as_str()).map(str::to_owned);
            let list = |field: &str| -> Vec<String> {
                table
                    .get(field)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (Some(provider), Some(docs)) = (text("provider"), text("docs")) else {
                return Err(malformed(
                    "a `[[security.key_shapes]]` row needs `provider` and `docs` strings".into(),
                ));
            };
            let row = Row::compile(RowText {
                provider,
                keys: list("keys"),
                prefixes: list("prefixes"),
                pattern: text("pattern"),
                docs,
            })?;
            self.rows.retain(|r| r.provider != row.provider);
            self.rows.push(row);
        }
        Ok(self)
    }

    /// The warning for writing `value` as `key`, if any.
    pub(crate) fn warning(&self, key: &str, value: &str) -> Option<String> {
        let own: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.keys.iter().any(|k| k == key) && r.has_shape())
            .collect();
        let best = self
            .rows
            .iter()
            .filter_map(|r| Some((r.fit(value)?, r)))
            .max_by_key(|(fit, _)| *fit)
            .map(|(_, r)| r);
        let own_fit = own.iter().filter_map(|r| r.fit(value)).max();
        match best {
            // Another provider's shape fits better than any of the key's own.
            Some(other)
                if !own.iter().any(|r| r.provider == other.provider)
                    && other.fit(value) > own_fit =>
            {
                let expected = own
                    .first()
                    .map(|r| format!(", not of {} {} key", article(&r.provider), r.provider))
                    .unwrap_or_default();
                Some(format!(
                    "the value has the shape of {} {} key{expected}: check that it belongs in \
                     `{key}` ({}). It was saved anyway.",
                    article(&other.provider),
                    other.provider,
                    other.docs
                ))
            }
            _ => match own.first() {
                Some(row) if own_fit.is_none() => Some(format!(
                    "the value does not have the shape of {} {} key ({}). It was saved anyway: \
                     providers change their formats.",
                    article(&row.provider),
                    row.provider,
                    row.docs
                )),
                _ => None,
            },
        }
    }
}

/// `a` or `an` before `word`.
fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// The shapes of this process, set at start-up.
static INSTALLED: std::sync::RwLock<Option<Arc<Shapes>>> = std::sync::RwLock::new(None);

/// Sets up the shapes of the host whose config file is `config`: the
/// shipped table, extended by the config file. A malformed extension is
/// logged and left out (a warning table must never stop the host).
pub(crate) fn install_for(config: &Path) {
    let shipped = match Shapes::shipped() {
        Ok(shapes) => shapes,
        Err(e) => {
            tracing::error!(error = %e, "no provider checks");
            Shapes::default()
        }
    };
    let text = std::fs::read_to_string(config).unwrap_or_default();
    // A config that is not TOML at all is the config loader's to report
    // (it stops start-up naming the line); only a bad shape row is ours.
    if text.parse::<toml_edit::DocumentMut>().is_err() {
        *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(shipped));
        return;
    }
    let shapes = match shipped.clone().with_config(&text) {
        Ok(shapes) => shapes,
        Err(e) => {
            tracing::warn!(error = %e, "the config's key shapes are left out");
            shipped
        }
    };
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(shapes));
}

/// The shapes in force (the shipped table before start-up set them up).
pub(crate) fn current() -> Arc<Shapes> {
    if let Some(shapes) = INSTALLED.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Arc::clone(shapes);
    }
    Arc::new(Shapes::shipped().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One well-shaped example per row of the shipped table (made up,
    /// never real keys).
    fn example(provider: &str) -> Option<String> {
        let tail = "Q7xw2Rk9Lm4Zp8Tb3Vn6Yc1Hd5Jf0Gs";
        Some(match provider {
            "Anthropic" => format!("sk-ant-api03-{tail}"),
            "OpenAI" => format!("sk-proj-{tail}"),
            "OpenRouter" => format!("sk-or-v1-{tail}"),
            "Groq" => format!("gsk_{tail}"),
            "Google AI" => format!("AIzaSy{tail}"),
            "GitHub" => format!("ghp_{tail}"),
            "Slack (bot token)" => format!("xoxb-1234-5678-{tail}"),
            "Slack (app-level token)" => format!("xapp-1-A0123-{tail}"),
            "Telegram" => format!("123456789:AA{tail}"),
            "Discord" => format!("MTA5ODc2NTQzMjE5ODc2NTQz.GhIjKl.{tail}"),
            _ => return None,
        })
    }

    #[test]
    fn every_shipped_row_cites_documentation_and_has_a_shape() -> Result<(), ShapeError> {
        let shapes = Shapes::shipped()?;
        assert!(shapes.rows.len() >= 10);
        for row in &shapes.rows {
            assert!(row.docs.starts_with("https://"), "{}", row.provider);
            assert!(row.has_shape(), "{}", row.provider);
            assert!(
                example(&row.provider).is_some(),
                "no example for {}",
                row.provider
            );
        }
        Ok(())
    }

    #[test]
    fn each_row_accepts_its_own_shape_and_is_told_from_every_other() -> Result<(), ShapeError> {
        let shapes = Shapes::shipped()?;
        for row in &shapes.rows {
            let own = example(&row.provider).unwrap_or_default();
            for key in &row.keys {
                assert_eq!(shapes.warning(key, &own), None, "{key} with its own shape");
            }
            for other in shapes.rows.iter().filter(|o| o.provider != row.provider) {
                let value = example(&other.provider).unwrap_or_default();
                for key in &row.keys {
                    let warning = shapes.warning(key, &value);
                    assert!(
                        warning.is_some(),
                        "{} value as {key} gave no warning",
                        other.provider
                    );
                    let text = warning.unwrap_or_default();
                    for piece in value.as_bytes().windows(8) {
                        let piece = String::from_utf8_lossy(piece);
                        assert!(!text.contains(piece.as_ref()), "{text} quotes the value");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_named_mix_ups_are_named() -> Result<(), ShapeError> {
        let shapes = Shapes::shipped()?;
        let anthropic_as_openai = shapes
            .warning("OPENAI_API_KEY", "sk-ant-api03-abcdefghijklmnop")
            .unwrap_or_default();
        assert!(
            anthropic_as_openai.contains("Anthropic"),
            "{anthropic_as_openai}"
        );
        let openai_as_anthropic = shapes
            .warning("ANTHROPIC_API_KEY", "sk-proj-abcdefghijklmnop")
            .unwrap_or_default();
        assert!(
            openai_as_anthropic.contains("OpenAI"),
            "{openai_as_anthropic}"
        );
        let github_as_slack = shapes
            .warning("SLACK_BOT_TOKEN", "ghp_abcdefghijklmnopqrstuvwxyz")
            .unwrap_or_default();
        assert!(github_as_slack.contains("GitHub"), "{github_as_slack}");
        // A key no row declares, with no known shape: nothing to say.
        assert_eq!(shapes.warning("SOME_OTHER_KEY", "whatever-value-1"), None);
        // A declared key whose value fits no shape at all.
        let odd = shapes
            .warning("GROQ_API_KEY", "not-a-groq-key-at-all")
            .unwrap_or_default();
        assert!(
            odd.contains("does not have the shape of a Groq key"),
            "{odd}"
        );
        Ok(())
    }

    #[test]
    fn the_config_adds_and_replaces_rows() -> Result<(), ShapeError> {
        let shapes = Shapes::shipped()?.with_config(
            r#"
[security]
encrypt_env = true

[[security.key_shapes]]
provider = "Acme"
keys = ["ACME_API_KEY"]
prefixes = ["acme_"]
docs = "https://docs.acme.example/keys"

[[security.key_shapes]]
provider = "Groq"
keys = ["GROQ_API_KEY"]
prefixes = ["gsk2_"]
docs = "https://console.groq.com/docs/quickstart"
"#,
        )?;
        assert!(shapes.warning("ACME_API_KEY", "acme_0123456789").is_none());
        assert!(shapes.warning("ACME_API_KEY", "gsk2_0123456789").is_some());
        assert!(shapes.warning("GROQ_API_KEY", "gsk2_0123456789").is_none());
        assert!(shapes.warning("GROQ_API_KEY", "gsk_0123456789").is_some());
        assert!(
            Shapes::shipped()?
                .with_config("[[security.key_shapes]]\nprovider = 1")
                .is_err()
        );
        Ok(())
    }
}
