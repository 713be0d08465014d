//! Logging: `tracing` everywhere; journald under systemd, human text on a terminal.
//!
//! Under systemd (stderr connected to the journal, `$JOURNAL_STREAM`) events go
//! to journald through `systemd-journal-logger`, with the level mapped to a
//! syslog priority and every structured field kept as a journal field
//! (`shard=...` becomes `SHARD=...`, so `journalctl SHARD=ab12...` works).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where log output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journald,
    Terminal,
}

/// Installs the global subscriber. `level` is a level or a tracing filter;
/// `RUST_LOG` wins when set. `format` is `auto`, `journald` or `terminal`.
pub fn init(level: &str, format: &str) -> LogTarget {
    let filter = || {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .or_else(|| EnvFilter::try_new(default_filter(level)).ok())
            .unwrap_or_else(|| EnvFilter::new("info"))
    };
    let want_journal = match format {
        "journald" => true,
        "terminal" => false,
        _ => systemd_journal_logger::connected_to_journal(),
    };
    if want_journal && let Ok(journal) = systemd_journal_logger::JournalLog::new() {
        let layer = JournaldLayer { journal }.with_filter(filter());
        if tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .is_ok()
        {
            return LogTarget::Journald;
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter(filter());
    let _ = tracing_subscriber::registry().with(layer).try_init();
    LogTarget::Terminal
}

/// A bare level applies to cairn's crates; library chatter stays at warn.
fn default_filter(level: &str) -> String {
    if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        format!("warn,cairn_node={level},cairn_validator={level},cairn={level}")
    }
}

struct JournaldLayer {
    journal: systemd_journal_logger::JournalLog,
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.pairs
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.pairs
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for JournaldLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *meta.level() {
            tracing::Level::ERROR => log::Level::Error,
            tracing::Level::WARN => log::Level::Warn,
            tracing::Level::INFO => log::Level::Info,
            tracing::Level::DEBUG => log::Level::Debug,
            tracing::Level::TRACE => log::Level::Trace,
        };
        // The message text also carries the fields, for `journalctl` without -o verbose.
        let mut text = fields.message.clone();
        for (k, v) in &fields.pairs {
            let _ = write!(text, " {k}={v}");
        }
        let kvs: Vec<(&str, &str)> = fields
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&kvs)
                .args(format_args!("{text}"))
                .build(),
        );
    }
}
