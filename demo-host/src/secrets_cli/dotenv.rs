//! A `.env` file as elizaOS and the `dotenv` libraries write it, for
//! `demo-host secrets import`.
//!
//! One `KEY=value` per line, optionally `export KEY=value`; blank lines and
//! `#` comments are skipped. Values may be:
//!
//! - unquoted: up to the end of the line or a ` #` comment, trimmed;
//! - single-quoted (`'…'`) or backquoted: taken literally, may span lines;
//! - double-quoted (`"…"`): `\n`, `\r`, `\t`, `\"`, `\\` and `\$` are
//!   escapes, other backslashes are kept; may span lines.
//!
//! After a closing quote only spaces and a comment may follow. Errors name
//! the line and what is wrong, never any content of the file (it holds
//! secrets). Values are kept in zeroizing strings.

use zeroize::Zeroizing;

/// One `KEY=value` entry.
pub(crate) struct Entry {
    /// The name, as written.
    pub(crate) key: String,
    /// The value, unquoted and unescaped.
    pub(crate) value: Zeroizing<String>,
    /// The 1-based line the entry starts on.
    pub(crate) line: usize,
}

/// A line that is not a `.env` entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct DotEnvError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong; never any content of the file.
    pub reason: &'static str,
}

/// Parses `text` into its entries, in file order.
pub(crate) fn parse(text: &str) -> Result<Vec<Entry>, DotEnvError> {
    let mut entries = Vec::new();
    let mut rest = text;
    let mut line = 1usize;
    while !rest.is_empty() {
        let start_line = line;
        let (current, after) = split_line(rest);
        let trimmed = current.trim_start();
        if trimmed.trim().is_empty() || trimmed.starts_with('#') {
            rest = after;
            line += 1;
            continue;
        }
        let err = |reason| DotEnvError {
            line: start_line,
            reason,
        };
        let body = trimmed
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(trimmed);
        let (key, value_start) = body
            .split_once('=')
            .ok_or_else(|| err("expected KEY=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(err("the name before `=` is empty"));
        }
        if key.chars().any(char::is_whitespace) {
            return Err(err("the name contains a space"));
        }
        let value_start = value_start.trim_start_matches([' ', '\t']);
        // Offset of the value in `rest` (it ends where the line ends), so
        // quoted values can run past the line.
        let offset = current.len() - value_start.len();
        let from_value = &rest[offset..];
        let (value, consumed, lines) = match from_value.chars().next() {
            Some(q @ ('"' | '\'' | '`')) => quoted(from_value, q).ok_or_else(|| {
                err("a quoted value is not closed, or text follows its closing quote")
            })?,
            _ => {
                let (raw, _) = split_line(from_value);
                let raw = match raw.find(" #").or_else(|| raw.find("\t#")) {
                    Some(at) => &raw[..at],
                    None => raw,
                };
                let len = split_line(from_value).0.len();
                (Zeroizing::new(raw.trim().to_owned()), len, 0)
            }
        };
        entries.push(Entry {
            key: key.to_owned(),
            value,
            line: start_line,
        });
        let after_value = &from_value[consumed..];
        let (_, next) = split_line(after_value);
        rest = next;
        line += 1 + lines;
    }
    Ok(entries)
}

/// The line at the start of `text` (without its `\n` or `\r\n`) and the
/// text after it.
fn split_line(text: &str) -> (&str, &str) {
    match text.find('\n') {
        Some(at) => (
            text[..at].strip_suffix('\r').unwrap_or(&text[..at]),
            &text[at + 1..],
        ),
        None => (text, ""),
    }
}

/// A value opening with the quote `q` at the start of `text`: the value,
/// the bytes consumed up to the end of its line (closing quote, spaces, a
/// comment), and how many line breaks it spans. `None` when unclosed or
/// followed by other text.
fn quoted(text: &str, q: char) -> Option<(Zeroizing<String>, usize, usize)> {
    let mut value = Zeroizing::new(String::with_capacity(text.len()));
    let mut lines = 0usize;
    let mut chars = text.char_indices().skip(1);
    let end = loop {
        let (at, c) = chars.next()?;
        match c {
            c if c == q => break at + c.len_utf8(),
            '\\' if q == '"' => {
                let (_, escaped) = chars.next()?;
                match escaped {
                    'n' => value.push('\n'),
                    'r' => value.push('\r'),
                    't' => value.push('\t'),
                    '"' | '\\' | '$' => value.push(escaped),
                    '\n' => {
                        lines += 1;
                        value.push('\\');
                        value.push('\n');
                    }
                    other => {
                        value.push('\\');
                        value.push(other);
                    }
                }
            }
            '\n' => {
                lines += 1;
                value.push('\n');
            }
            c => value.push(c),
        }
    };
    let (tail, _) = split_line(&text[end..]);
    let tail_trimmed = tail.trim_start();
    if !tail_trimmed.is_empty() && !tail_trimmed.starts_with('#') {
        return None;
    }
    Some((value, end + tail.len(), lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(text: &str) -> Result<Vec<(String, String, usize)>, DotEnvError> {
        Ok(parse(text)?
            .into_iter()
            .map(|e| (e.key, e.value.to_string(), e.line))
            .collect())
    }

    #[test]
    fn the_usual_forms() -> Result<(), DotEnvError> {
        let text = "# elizaOS settings\r\n\
                    OPENAI_API_KEY=sk-plain-value\r\n\
                    export ANTHROPIC_API_KEY = sk-ant-spaced   # trailing note\n\
                    \n\
                    SINGLE='literal \\n $HOME'\n\
                    DOUBLE=\"line one\\nline \\\"two\\\" \\\\ \\$x\"  # note\n\
                    MULTI=\"first\n\
                    second\"\n\
                    EMPTY=\n\
                    HASH=abc#not-a-comment\n\
                    BACK=`back quoted`\n";
        assert_eq!(
            pairs(text)?,
            vec![
                ("OPENAI_API_KEY".into(), "sk-plain-value".into(), 2),
                ("ANTHROPIC_API_KEY".into(), "sk-ant-spaced".into(), 3),
                ("SINGLE".into(), "literal \\n $HOME".into(), 5),
                ("DOUBLE".into(), "line one\nline \"two\" \\ $x".into(), 6),
                ("MULTI".into(), "first\nsecond".into(), 7),
                ("EMPTY".into(), String::new(), 9),
                ("HASH".into(), "abc#not-a-comment".into(), 10),
                ("BACK".into(), "back quoted".into(), 11),
            ]
        );
        Ok(())
    }

    #[test]
    fn errors_name_the_line_and_never_the_content() {
        for (text, line) in [
            ("A=1\nno equals sign here-secret\n", 2),
            ("=value-secret\n", 1),
            ("A B=secret\n", 1),
            ("A=\"unclosed-secret\n", 1),
            ("A='x' trailing-secret\n", 1),
        ] {
            let err = pairs(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    proptest! {
        /// Any value written double-quoted with the escapes a writer uses
        /// reads back as it was.
        #[test]
        fn double_quoted_values_round_trip(key in "[A-Z_][A-Z0-9_]{0,20}", value in "\\PC*") {
            let mut quoted = String::from("\"");
            for c in value.chars() {
                match c {
                    '"' => quoted.push_str("\\\""),
                    '\\' => quoted.push_str("\\\\"),
                    '\n' => quoted.push_str("\\n"),
                    '\r' => quoted.push_str("\\r"),
                    '\t' => quoted.push_str("\\t"),
                    '$' => quoted.push_str("\\$"),
                    c => quoted.push(c),
                }
            }
            quoted.push('"');
            let text = format!("# head\n{key}={quoted}\nNEXT=1\n");
            let got = pairs(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, vec![(key, value, 2), ("NEXT".to_owned(), "1".to_owned(), 3)]);
        }
    }
}
