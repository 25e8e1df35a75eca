//! The redaction rule for secret values shown by `GET /api/secrets`.
//!
//! - unset (empty): `""`;
//! - fewer than 16 characters: `********` (fixed width, so not even the
//!   length is revealed);
//! - 16 to 23 characters: `****...` and the last 4 characters;
//! - 24 characters or more: the first 3 characters, `****...`, and the last 4
//!   (the documented `sk-****...wxyz` style).
//!
//! At most 7 characters of the secret are ever shown, and never more than
//! 30% of it. Counting is in characters, not bytes, so multi-byte values are
//! safe. A shown character that is a control, format or whitespace character
//! is replaced by `*`, so the output is always printable on one line.

/// The mask for short secrets.
const SHORT_MASK: &str = "********";
/// Values shorter than this (in characters) are fully masked.
const MIN_TAIL_LEN: usize = 16;
/// Values at least this long (in characters) also show a 3-character prefix.
const MIN_PREFIX_LEN: usize = 24;

/// Redacts a secret value.
///
/// ```
/// use secrets_plugin::redact;
/// assert_eq!(redact(""), "");
/// assert_eq!(redact("hunter2"), "********");
/// assert_eq!(redact("0123456789abcdefwxyz"), "****...wxyz");
/// assert_eq!(redact("sk-proj-0123456789abcdefwxyz"), "sk-****...wxyz");
/// ```
pub fn redact(value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    let len = value.chars().count();
    if len < MIN_TAIL_LEN {
        return SHORT_MASK.to_owned();
    }
    let mut out = String::with_capacity(24);
    if len >= MIN_PREFIX_LEN {
        out.extend(value.chars().take(3).map(printable));
    }
    out.push_str("****...");
    out.extend(value.chars().skip(len - 4).map(printable));
    out
}

/// `c`, or `*` when it would not print as a visible character.
fn printable(c: char) -> char {
    if is_invisible(c) { '*' } else { c }
}

/// Whether `c` prints as nothing visible: a control, whitespace, or one of
/// the invisible characters of [`is_format`].
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_control() || c.is_whitespace() || is_format(c)
}

/// Invisible characters that could hide or reorder what a client displays:
/// formatting characters (Unicode category Cf: zero-width, bidirectional
/// controls, the byte order mark, tags), variation selectors, and the
/// fillers and blanks that render as empty space without being whitespace.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{2800}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_examples() {
        assert_eq!(redact("sk-abcdefghijklmnopqrstuvwxyz"), "sk-****...wxyz");
        assert_eq!(redact("a"), SHORT_MASK);
        assert_eq!(redact(&"x".repeat(15)), SHORT_MASK);
        assert_eq!(redact(&"x".repeat(16)), "****...xxxx");
        assert_eq!(redact(&"y".repeat(24)), "yyy****...yyyy");
    }

    #[test]
    fn multibyte_and_controls() {
        let v = "🔑🔑🔑ключ-секрет-значение-🙂🙂🙂🙂";
        assert_eq!(redact(v), "🔑🔑🔑****...🙂🙂🙂🙂");
        assert_eq!(
            redact("\u{1b}[3\n0123456789abcdefghij\t\r\0\u{202e}"),
            "*[3****...****"
        );
    }

    fn shown(value: &str, redacted: &str) -> usize {
        let _ = value;
        redacted.chars().count()
            - redacted.matches('*').count().min(redacted.chars().count())
            - if redacted.contains("...") { 3 } else { 0 }
    }

    proptest! {
        #[test]
        fn never_reveals_much_and_never_prints_controls(value in any::<String>()) {
            let r = redact(&value);
            let len = value.chars().count();
            prop_assert_eq!(r.is_empty(), value.is_empty());
            prop_assert!(!r.chars().any(|c| c.is_control() || is_format(c)));
            // Visible characters of the secret: at most 7 and at most 30%.
            let revealed = if len < MIN_TAIL_LEN { 0 } else if len < MIN_PREFIX_LEN { 4 } else { 7 };
            prop_assert!(revealed <= 7 && revealed * 10 <= len * 3);
            if len > 0 && len < MIN_TAIL_LEN {
                prop_assert_eq!(r.as_str(), SHORT_MASK);
            }
            if len >= MIN_TAIL_LEN {
                prop_assert!(r.chars().count() <= 14);
                let tail: Vec<char> = value.chars().skip(len - 4).map(printable).collect();
                prop_assert!(r.ends_with(&tail.into_iter().collect::<String>()));
            }
            prop_assert!(shown(&value, &r) <= 7);
        }

        #[test]
        fn short_values_of_any_script_are_fully_masked(value in "\\PC{1,15}") {
            prop_assert_eq!(redact(&value), SHORT_MASK);
        }
    }
}
