//! tracing set-up, once per process: text for people, JSON for log pipelines.
//!
//! Both formats carry the fields of the spans a line was logged in, so one message's
//! lines can be joined across processes: `http_request` (`method`, `route`, `status`,
//! and `message_id`, `bot_id` for one message or `messages` for a batch) and, per
//! message of a batch, `message` (`message_id`, `bot_id`) in the ingest API;
//! `message` (`message_id`, `bot_id`, `partition`, `offset`) in the worker. All at
//! debug: a span every request or message would pay for at info, so the lines logged
//! at info or above name their messages themselves (a record that cannot be decoded
//! has its `partition` and `offset` at info). Text puts
//! them before the line (`message{message_id=... bot_id=...}: ...`); JSON as `span`
//! (the innermost) and `spans` (all, outermost first).

use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// `RUST_LOG`, when set, wins over the configured level so one run can be debugged
/// without editing config.
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: escape codes in a log file or a
    // collector's stream are noise, and writing them costs every span's fields.
    let colours = std::io::stderr().is_terminal();
    // `try_init` also forwards the `log` records of librdkafka's wrapper. A second call
    // (tests) keeps the first subscriber.
    drop(subscriber(settings.format, filter, std::io::stderr, colours).try_init());
}

/// The subscriber of [`init_logging`], writing to `writer`, so tests check the format
/// the service logs in.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    colours: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// Log lines captured in memory, in the service's formats.
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Arc, Mutex};

    use tracing::subscriber::DefaultGuard;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::EnvFilter;

    use crate::config::LogFormat;

    /// Everything logged on this thread while its guard lives.
    #[derive(Clone, Default)]
    pub(crate) struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

    impl CapturedLogs {
        /// Installs the service's subscriber, with the filter `level`, on this thread only.
        pub(crate) fn start(format: LogFormat, level: &str) -> (CapturedLogs, DefaultGuard) {
            let logs = CapturedLogs::default();
            let subscriber = super::subscriber(format, EnvFilter::new(level), logs.clone(), false);
            (logs, tracing::subscriber::set_default(subscriber))
        }

        /// The lines so far.
        pub(crate) fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl std::io::Write for CapturedLogs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for CapturedLogs {
        type Writer = CapturedLogs;

        fn make_writer(&'w self) -> CapturedLogs {
            self.clone()
        }
    }
}
