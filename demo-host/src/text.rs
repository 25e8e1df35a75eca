//! Characters that change how text displays without showing themselves:
//! controls (C0, DEL, C1: newlines that forge a log line, the escape that
//! starts a terminal sequence), bidirectional controls (U+202E turns the
//! rest of a line around), line and paragraph separators, and zero-width
//! and other invisible format characters. Logs and the config file write
//! them escaped, so what a person reads is what the bytes say.

use std::borrow::Cow;

/// Whether `c` must not reach a log line or the config file raw.
pub(crate) fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// `text` with every control character (C0, DEL, C1), bidirectional control,
/// line or paragraph separator and zero-width or other invisible format
/// character written as an escape (`\n`, `\r`, `\t`, otherwise `\u{..}`);
/// borrowed when there is none.
///
/// ```
/// use demo_host::escape_controls;
/// assert_eq!(escape_controls("plain.so"), "plain.so");
/// assert_eq!(escape_controls("a\nINFO forged\u{1b}[31m\u{202e}"), "a\\nINFO forged\\u{1b}[31m\\u{202e}");
/// ```
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_deceptive) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_deceptive(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_separators_are_deceptive_and_text_is_not() {
        for c in [
            '\n', '\u{1b}', '\u{7f}', '\u{85}', '\u{202e}', '\u{2066}', '\u{2028}', '\u{2029}',
            '\u{200b}', '\u{feff}',
        ] {
            assert!(is_deceptive(c), "{c:?}");
        }
        for c in ['a', 'é', '日', ' ', '@', '/', '\u{1F600}'] {
            assert!(!is_deceptive(c), "{c:?}");
        }
    }

    #[test]
    fn escaping_keeps_one_line() {
        let forged = "lib.so\n2026-01-01T00:00:00Z  INFO demo_host: plugin loaded";
        let escaped = escape_controls(forged);
        assert!(!escaped.contains('\n'));
        assert!(matches!(escape_controls("ok"), Cow::Borrowed("ok")));
    }
}
