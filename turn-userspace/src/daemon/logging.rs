//! Log output on stderr: human-readable lines (coloured only when stderr is a terminal and
//! `NO_COLOR` is unset) or one JSON object per line for log shippers (`log.format`).
//! `RUST_LOG`, when set, wins over `log.level`.

use std::io::IsTerminal as _;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::daemon::config::LogFormat;

/// Changes the level of the installed logger (a reload of `log.level`).
#[derive(Clone)]
pub struct LevelHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    /// RUST_LOG was set at start: it keeps winning over `log.level`.
    from_environment: bool,
}

impl LevelHandle {
    /// Applies `level` (validated with the configuration), unless RUST_LOG rules.
    pub fn set(&self, level: &str) -> anyhow::Result<()> {
        if self.from_environment {
            tracing::info!("log.level: RUST_LOG is set and keeps deciding the log level");
            return Ok(());
        }
        let filter = EnvFilter::try_new(level)
            .map_err(|error| anyhow::anyhow!("log level {level:?}: {error}"))?;
        self.handle
            .reload(filter)
            .map_err(|error| anyhow::anyhow!("changing the log level: {error}"))
    }
}

/// Installs the process-wide logger. `level` was validated with the configuration; a
/// `RUST_LOG` that does not parse falls back to it.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<LevelHandle> {
    let from_environment = EnvFilter::try_from_default_env().is_ok();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let (logger, handle) = subscriber(filter, format, ansi, std::io::stderr);
    logger
        .try_init()
        .map_err(|error| anyhow::anyhow!("installing the logger: {error}"))?;
    Ok(LevelHandle {
        handle,
        from_environment,
    })
}

/// The logger writing to `writer`: text (with colours if `ansi`) or JSON lines, and the
/// handle that changes its filter.
fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> (
    Box<dyn Subscriber + Send + Sync>,
    reload::Handle<EnvFilter, Registry>,
)
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    let logger: Box<dyn Subscriber + Send + Sync> = match format {
        LogFormat::Text => Box::new(registry.with(lines.with_ansi(ansi).with_target(false))),
        LogFormat::Json => Box::new(
            registry.with(
                lines
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ),
        ),
    };
    (logger, handle)
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
        let (logger, _) = subscriber(EnvFilter::new("info"), format, ansi, captured.clone());
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

    #[test]
    fn a_reload_changes_the_level_of_the_installed_logger() {
        let captured = Captured::default();
        let (logger, handle) = subscriber(
            EnvFilter::new("info"),
            LogFormat::Text,
            false,
            captured.clone(),
        );
        let level = LevelHandle {
            handle,
            from_environment: false,
        };
        tracing::subscriber::with_default(logger, || {
            tracing::debug!("before the reload");
            level.set("debug").expect("valid level");
            tracing::debug!("after the reload");
            assert!(level.set("[").is_err());
        });
        let bytes = captured
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let text = String::from_utf8(bytes).expect("utf-8 log");
        assert!(!text.contains("before the reload"), "{text}");
        assert!(text.contains("after the reload"), "{text}");
    }
}
