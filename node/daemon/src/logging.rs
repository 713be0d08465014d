//! Logging: `tracing` everywhere; journald under systemd, human text on a terminal.
//!
//! Under systemd (stderr connected to the journal, `$JOURNAL_STREAM`) events go
//! to journald through `systemd-journal-logger`, with the level mapped to a
//! syslog priority and every structured field kept as a journal field
//! (`shard=...` becomes `SHARD=...`, so `journalctl SHARD=ab12...` works).
//!
//! Either way, the node's own warnings and errors are also kept in a small
//! ring ([`recent_problems`]) for the dashboard: an operator who opens the
//! page sees what went wrong lately, and what to do when the event said
//! (its `advice` field), without reading logs.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where log output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journald,
    Terminal,
}

/// Installs the global subscriber. `level` is a level or a filter of
/// `target=level` directives ([`parse_filter`]); `RUST_LOG` wins when set
/// and valid. `format` is `auto`, `journald` or `terminal`.
pub fn init(level: &str, format: &str) -> LogTarget {
    let from_env = std::env::var("RUST_LOG").ok().and_then(|f| {
        parse_filter(&f)
            .map_err(|e| eprintln!("RUST_LOG ignored: {e}"))
            .ok()
    });
    let filter = || {
        from_env
            .clone()
            .or_else(|| parse_filter(level).ok())
            .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
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
            .with(problems_layer())
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
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(problems_layer())
        .try_init();
    LogTarget::Terminal
}

/// A log filter: a bare level (`debug`) applies to cairn's crates, library
/// chatter staying at warn; else comma-separated `target=level` directives
/// and at most one bare default level (`warn,cairn_node=debug,iroh=info`).
/// Directives by target only, not by span or field: `Targets` rather than
/// `EnvFilter`, whose regex engine was a fifth of a megabyte of every binary.
pub fn parse_filter(level: &str) -> Result<Targets, String> {
    default_filter(level).parse::<Targets>().map_err(|e| {
        format!(
            "{level:?} is not a log filter ({e}): give a level (error, warn, info, debug, trace) or target=level directives, e.g. warn,cairn_node=debug"
        )
    })
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

/// Distinct problems kept; the same message again only counts up, so a
/// flood of one kind (a peer sending garbage) cannot push the others out.
const MAX_PROBLEMS: usize = 32;
/// Longest message or field text kept, in bytes.
const MAX_PROBLEM_TEXT: usize = 400;

static PROBLEMS: Mutex<VecDeque<cairn_api::Problem>> = Mutex::new(VecDeque::new());

/// The last distinct warnings and errors of cairn's own code, newest first.
pub fn recent_problems() -> Vec<cairn_api::Problem> {
    PROBLEMS
        .lock()
        .map(|p| p.iter().cloned().collect())
        .unwrap_or_default()
}

fn clipped(mut s: String) -> String {
    if s.len() > MAX_PROBLEM_TEXT {
        let mut end = MAX_PROBLEM_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Keeps warnings and errors in [`PROBLEMS`]; which ones (cairn's crates')
/// is its filter's choice, [`problems_layer`].
struct ProblemsLayer;

/// [`ProblemsLayer`] with its own filter. Unfiltered, a layer is interested
/// in every callsite, so every span and event of every library at every
/// level (the QUIC stack's per-packet trace spans) would be built and
/// dispatched although no layer keeps them: a tenth of a miner's CPU.
fn problems_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    ProblemsLayer.with_filter(Targets::new().with_target("cairn", tracing::Level::WARN))
}

impl<S: tracing::Subscriber> Layer<S> for ProblemsLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            _ => return,
        };
        let mut f = Fields::default();
        event.record(&mut f);
        let mut advice = String::new();
        let mut text = String::new();
        for (k, v) in &f.pairs {
            if k == "advice" {
                advice = v.clone();
            } else {
                let _ = write!(text, "{}{k}={v}", if text.is_empty() { "" } else { " " });
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let message = clipped(f.message);
        let Ok(mut ring) = PROBLEMS.lock() else {
            return;
        };
        let (count, first_ms) = match ring
            .iter()
            .position(|p| p.level == level && p.message == message)
        {
            Some(i) => ring
                .remove(i)
                .map(|p| (p.count + 1, p.first_ms))
                .unwrap_or((1, now)),
            None => (1, now),
        };
        ring.push_front(cairn_api::Problem {
            level: level.to_string(),
            message,
            fields: clipped(text),
            advice: clipped(advice),
            count,
            first_ms,
            last_ms: now,
        });
        ring.truncate(MAX_PROBLEMS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subscriber `init` installs on a terminal, writing nowhere.
    fn terminal_subscriber(level: &str) -> impl tracing::Subscriber {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(parse_filter(level).unwrap());
        tracing_subscriber::registry()
            .with(layer)
            .with(problems_layer())
    }

    #[test]
    fn library_spans_below_the_filter_are_not_built() {
        tracing::subscriber::with_default(terminal_subscriber("info"), || {
            assert!(
                !tracing::span_enabled!(target: "noq_proto::connection", tracing::Level::TRACE)
            );
            assert!(!tracing::enabled!(target: "iroh::socket", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "cairn_node::server", tracing::Level::DEBUG));
            assert!(tracing::enabled!(target: "cairn_node::server", tracing::Level::INFO));
            assert!(tracing::enabled!(target: "iroh::socket", tracing::Level::WARN));
        });
        tracing::subscriber::with_default(terminal_subscriber("warn,iroh=debug"), || {
            assert!(tracing::enabled!(target: "iroh::socket", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "cairn_node::server", tracing::Level::INFO));
        });
        tracing::subscriber::with_default(terminal_subscriber("debug"), || {
            assert!(tracing::enabled!(target: "cairn_node::server", tracing::Level::DEBUG));
            assert!(
                !tracing::span_enabled!(target: "noq_proto::connection", tracing::Level::TRACE)
            );
        });
    }

    #[test]
    fn a_bad_filter_is_refused_with_what_to_give() {
        for bad in ["loud", "cairn_node=loud", "warn,iroh=verbose"] {
            let e = parse_filter(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("target=level"), "{e}");
        }
        assert!(parse_filter("trace").is_ok());
    }

    // One test: the ring is process-wide.
    #[test]
    fn problems_are_kept_by_kind_newest_first_bounded_with_their_advice() {
        let subscriber = tracing_subscriber::registry().with(problems_layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(shard = "ab", advice = "check the disk", "read failed");
        });
        let p = recent_problems();
        assert_eq!(p[0].level, "error");
        assert_eq!(p[0].message, "read failed");
        assert_eq!(p[0].advice, "check the disk");
        assert_eq!(
            p[0].fields, "shard=ab",
            "advice is kept apart from the fields"
        );

        let subscriber = tracing_subscriber::registry().with(problems_layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(peer = "a", "registry lookup failed");
            tracing::warn!(peer = "b", "registry lookup failed");
            tracing::info!("not a problem");
            for i in 0..5 {
                tracing::warn!("kind {i}");
            }
            tracing::warn!(peer = "c", "registry lookup failed");
        });
        let p = recent_problems();
        assert_eq!(p[0].message, "registry lookup failed");
        assert_eq!(p[0].count, 3, "the same message counts up");
        assert_eq!(p[0].fields, "peer=c", "the last occurrence's fields");
        assert_eq!(p[1].message, "kind 4");
        assert!(p.iter().all(|p| p.message != "not a problem"));

        let subscriber = tracing_subscriber::registry().with(problems_layer());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..MAX_PROBLEMS {
                tracing::warn!("flood {i}");
            }
            tracing::warn!(detail = %"x".repeat(2000), "a long one");
        });
        let p = recent_problems();
        assert_eq!(p.len(), MAX_PROBLEMS, "bounded");
        assert_eq!(p[0].message, "a long one");
        assert!(p[0].fields.len() <= MAX_PROBLEM_TEXT + '…'.len_utf8());
        assert!(
            p.iter()
                .all(|p| p.message != "read failed" && p.message != "registry lookup failed"),
            "older kinds pushed out by newer ones"
        );
    }
}
