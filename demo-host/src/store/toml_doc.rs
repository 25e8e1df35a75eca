//! `toml_edit` helpers the config store edits its document with: set a
//! value and keep its decor (spacing, trailing comment), write strings as
//! single-line basic strings, find or create child tables, and turn a byte
//! offset into the line and column an error reports. Nothing here knows the
//! config file's schema.

use toml_edit::{InlineTable, Item, Table, TableLike, Value};

use crate::text::is_deceptive;

/// Sets `key` to `value`, keeping the old value's decor (spacing and trailing
/// comment) when the key exists; otherwise appends it. An unchanged value is
/// left as written (e.g. a user's `'literal'` quoting), so it causes no write.
pub(crate) fn set_value_keep_decor(table: &mut dyn TableLike, key: &str, mut value: Value) {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            let unchanged = (old.is_str() && old.as_str() == value.as_str())
                || (old.is_bool() && old.as_bool() == value.as_bool());
            if !unchanged {
                *value.decor_mut() = old.decor().clone();
                *old = value;
            }
        }
        _ => {
            table.insert(key, Item::Value(value));
        }
    }
}

/// `value` as a single-line TOML basic string. Escaped by hand because
/// toml_edit would pick literal or multi-line strings for some values; one
/// line per secret keeps the file easy to read and diff. Besides what TOML
/// requires, every character that displays deceptively (C1 controls,
/// bidirectional controls such as U+202E, the U+2028/U+2029 separators,
/// zero-width characters) is written as a `\uXXXX` escape, so the file
/// reads as what it holds in any editor or terminal.
pub(crate) fn basic_string(value: &str) -> Value {
    let mut repr = String::with_capacity(value.len() + 2);
    repr.push('"');
    for c in value.chars() {
        match c {
            '"' => repr.push_str("\\\""),
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\t' => repr.push_str("\\t"),
            '\r' => repr.push_str("\\r"),
            '\u{8}' => repr.push_str("\\b"),
            '\u{c}' => repr.push_str("\\f"),
            // The other characters TOML forbids raw in basic strings, and
            // those that would make the file lie about its content.
            // (All of them are in the Basic Multilingual Plane.)
            c if c < ' ' || c == '\u{7f}' || is_deceptive(c) => {
                repr.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => repr.push(c),
        }
    }
    repr.push('"');
    // Cannot fail for the escaping above; toml_edit's own encoding is a
    // correct (if less uniform) fallback.
    repr.parse::<Value>().unwrap_or_else(|_| Value::from(value))
}

/// The table-like child `key` of `parent`, created if missing (a standard
/// table, implicit if asked, or an inline table inside an inline table).
/// `None` if `parent` or the existing child is not a table.
pub(crate) fn child_table<'a>(
    parent: &'a mut Item,
    key: &str,
    implicit: bool,
) -> Option<&'a mut Item> {
    let child = match parent {
        Item::Table(table) => table.entry(key).or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(implicit);
            Item::Table(table)
        }),
        Item::Value(Value::InlineTable(table)) => TableLike::entry(table, key)
            .or_insert_with(|| Item::Value(Value::InlineTable(InlineTable::new()))),
        _ => return None,
    };
    child.is_table_like().then_some(child)
}

/// 1-based (line, column in characters) of byte `offset` in `text`; an
/// unknown offset is reported as 1:1.
pub(crate) fn error_position(text: &str, offset: Option<usize>) -> (usize, usize) {
    let Some(mut offset) = offset else {
        return (1, 1);
    };
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deceptive_characters_are_escaped_and_read_back_unchanged() {
        let value =
            "sk-\u{202e}fdp.exe\u{2028}[plugins]\u{2029}\u{85}\u{200b}\u{feff}é日\"\\\n\u{1}";
        let written = basic_string(value);
        let repr = written.to_string();
        for raw in [
            '\u{202e}', '\u{2028}', '\u{2029}', '\u{85}', '\u{200b}', '\u{feff}', '\n', '\u{1}',
        ] {
            assert!(!repr.contains(raw), "{raw:?} raw in {repr}");
        }
        assert!(
            repr.contains("\\u202E") && repr.contains("\\u2028") && repr.contains("é日"),
            "{repr}"
        );
        let doc: toml_edit::DocumentMut = format!("k = {repr}").parse().expect("valid TOML");
        assert_eq!(doc["k"].as_str(), Some(value));
    }
}
