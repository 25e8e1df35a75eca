//! The field formatter of the human-readable log: every field value and
//! message goes through [`escape_controls`], so a plugin file named with a
//! newline and a forged log line, or with terminal escape codes, an id or a
//! header carrying them, or a plugin's own log message, prints as one
//! honest line. (The JSON log escapes them by itself.)

use std::fmt::{self, Write as _};

use tracing_subscriber::{
    field::MakeExt as _,
    fmt::{
        FormatFields,
        format::{Writer, debug_fn},
    },
};

use crate::text::escape_controls;

/// The field formatter for `tracing_subscriber::fmt().fmt_fields(..)`:
/// `message key=value ...`, as the default one, with control,
/// bidirectional and separator characters escaped.
pub fn log_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(write_field).delimited(" ")
}

fn write_field(
    writer: &mut Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn fmt::Debug,
) -> fmt::Result {
    let mut text = String::new();
    write!(text, "{value:?}")?;
    let text = escape_controls(&text);
    if field.name() == "message" {
        writer.write_str(&text)
    } else {
        write!(writer, "{}={text}", field.name())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// A log sink the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fields_and_messages_print_on_one_honest_line() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(super::log_fields())
            .with_writer(move || writer.clone())
            .finish();
        let forged = "evil.so\n2026-01-01T00:00:00Z  INFO demo_host: plugin loaded\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(file = %forged, plugin = "@a/b\u{202e}", "plugin skipped: {}", "x\ry");
        });
        let log =
            String::from_utf8_lossy(&sink.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            !log.contains('\u{1b}') && !log.contains('\r') && !log.contains('\u{202e}'),
            "{log}"
        );
        assert!(
            log.contains("plugin skipped: x\\ry file=evil.so\\n2026"),
            "{log}"
        );
        assert!(log.contains("\\u{1b}[2J"), "{log}");
        assert!(log.contains("plugin=\"@a/b\\u{202e}\""), "{log}");
    }
}
