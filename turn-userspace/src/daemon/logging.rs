//! Log output on stderr: human-readable lines (coloured only when stderr is a terminal and
//! `NO_COLOR` is unset) or one JSON object per line for log shippers (`log.format`).
//! `RUST_LOG`, when set, wins over `log.level`.

use std::io::IsTerminal as _;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::daemon::config::LogFormat;

/// Installs the process-wide logger. `level` was validated with the configuration; a
/// `RUST_LOG` that does not parse falls back to it.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    subscriber(filter, format, ansi, std::io::stderr)
        .try_init()
        .map_err(|error| anyhow::anyhow!("installing the logger: {error}"))
}

/// The logger writing to `writer`: text (with colours if `ansi`) or JSON lines.
fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).with_target(false).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    /// Collects what the logger writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'writer> MakeWriter<'writer> for Captured {
        type Writer = Captured;

        fn make_writer(&'writer self) -> Captured {
            self.clone()
        }
    }

    /// What one warning looks like in `format`.
    fn logged(format: LogFormat, ansi: bool) -> String {
        let captured = Captured::default();
        let logger = subscriber(EnvFilter::new("info"), format, ansi, captured.clone());
        tracing::subscriber::with_default(logger, || {
            tracing::debug!("filtered out");
            tracing::warn!(relay = "198.18.0.1:50000", "cannot bind relay socket");
        });
        let bytes = captured
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8(bytes).expect("utf-8 log")
    }

    #[test]
    fn text_has_no_colour_codes_unless_asked() {
        let plain = logged(LogFormat::Text, false);
        assert!(plain.contains("WARN"), "{plain}");
        assert!(plain.contains("cannot bind relay socket relay=\"198.18.0.1:50000\""));
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert!(!plain.contains("filtered out"));
        assert_eq!(plain.lines().count(), 1);
        assert!(logged(LogFormat::Text, true).contains('\u{1b}'));
    }

    #[test]
    fn json_is_one_object_per_line() {
        let json = logged(LogFormat::Json, false);
        assert_eq!(json.lines().count(), 1, "{json}");
        let event: serde_json::Value = serde_json::from_str(json.trim()).expect("a JSON object");
        assert_eq!(event["level"], "WARN");
        assert_eq!(event["message"], "cannot bind relay socket");
        assert_eq!(event["relay"], "198.18.0.1:50000");
        assert!(event["timestamp"].is_string(), "{event}");
        assert!(!json.contains('\u{1b}'));
    }
}
