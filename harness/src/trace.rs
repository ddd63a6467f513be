//! The canonical trace of a run.
//!
//! Every `tracing` event of a run becomes one line of text:
//!
//! ```text
//! [    12.345] kv-1 DEBUG faultline::server: response sent conn=3 bytes=24
//! ```
//!
//! simulated time in milliseconds (from turmoil), host, level, target,
//! message and fields in the order the call site declares them. The run's
//! *trace hash* is xxh3-64 over those lines (each followed by `\n`): a
//! named, portable algorithm, so the same seed prints the same hash on every
//! machine. A passing run keeps only the hash and the last lines of each
//! host; the whole trace is kept when asked for (`--trace FILE`, the
//! determinism check), and a failure report re-runs the seed to get it.
//!
//! What is recorded is fixed (DEBUG and above, turmoil's own at INFO) so the
//! hash never depends on the terminal's `RUST_LOG`-style filter, which only
//! chooses what is echoed to stderr.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;
use xxhash_rust::xxh3::Xxh3;

use crate::ctx;

/// Lines kept per host for failure reports.
pub const TAIL_LINES_PER_HOST: usize = 40;

/// What the trace keeps besides the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// The hash and the last lines of each host.
    Tails,
    /// Every line.
    Full,
    /// No line and no hash (the hash is 0): for a run whose trace nobody
    /// reads (the first of a PCT seed's two runs, which only counts steps).
    Off,
}

/// The sink a run's events go to.
pub(crate) struct TraceSink {
    hasher: Xxh3,
    line_count: u64,
    mode: TraceMode,
    all: Vec<String>,
    tails: BTreeMap<Arc<str>, VecDeque<String>>,
    echo: Option<Targets>,
    scratch: String,
}

impl TraceSink {
    pub(crate) fn new(mode: TraceMode, echo: Option<Targets>) -> TraceSink {
        TraceSink {
            hasher: Xxh3::new(),
            line_count: 0,
            mode,
            all: Vec::new(),
            tails: BTreeMap::new(),
            echo,
            scratch: String::with_capacity(256),
        }
    }

    fn record(&mut self, host: &Arc<str>, line: &str) {
        if self.mode == TraceMode::Off {
            return;
        }
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.line_count += 1;
        if self.mode == TraceMode::Full {
            self.all.push(line.to_string());
        }
        let tail = self.tails.entry(host.clone()).or_default();
        if tail.len() == TAIL_LINES_PER_HOST {
            let mut reused = tail.pop_front().expect("full");
            reused.clear();
            reused.push_str(line);
            tail.push_back(reused);
        } else {
            tail.push_back(line.to_string());
        }
    }

    /// Records a line that did not come from `tracing` (runner notes).
    pub(crate) fn note(&mut self, host: &str, line: String) {
        let host: Arc<str> = Arc::from(host);
        self.record(&host, &line);
    }

    pub(crate) fn finish(self) -> TraceRecord {
        TraceRecord {
            hash: self.hasher.digest(),
            line_count: self.line_count,
            lines: (self.mode == TraceMode::Full).then_some(self.all),
            tails: self
                .tails
                .into_iter()
                .map(|(host, lines)| (host.to_string(), lines.into_iter().collect()))
                .collect(),
        }
    }
}

/// What a finished run's trace left behind.
#[derive(Clone, Debug, Default)]
pub struct TraceRecord {
    /// xxh3-64 over every line, each followed by `\n`: the run's trace hash.
    pub hash: u64,
    /// How many lines the trace had, kept or not.
    pub line_count: u64,
    /// Every line, when the run kept them.
    pub lines: Option<Vec<String>>,
    /// The last lines of each host.
    pub tails: BTreeMap<String, Vec<String>>,
}

impl TraceRecord {
    /// The hash as 16 hex digits, as verdict lines print it.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// The first line where two traces differ: (line number, left, right).
pub fn first_difference(a: &[String], b: &[String]) -> Option<(usize, String, String)> {
    let n = a.len().max(b.len());
    (0..n).find_map(|i| {
        let left = a.get(i).cloned().unwrap_or_else(|| "<end of trace>".into());
        let right = b.get(i).cloned().unwrap_or_else(|| "<end of trace>".into());
        (left != right).then_some((i + 1, left, right))
    })
}

/// The filter of what enters the trace (and its hash).
pub fn record_filter() -> Targets {
    Targets::new()
        .with_default(Level::DEBUG)
        .with_target("turmoil", Level::INFO)
}

/// Host name stored on turmoil's `node` spans.
struct HostName(Arc<str>);

/// The `tracing` layer that feeds the current run's trace (and its hash) and
/// tracks which host turmoil is running (from its `node{name=...}` span).
pub struct HarnessLayer {
    record: Targets,
    echo: Option<Targets>,
}

impl HarnessLayer {
    /// A layer that records what [`record_filter`] enables and echoes to stderr
    /// what `echo` enables (nothing when `None`).
    pub fn new(echo: Option<Targets>) -> HarnessLayer {
        HarnessLayer {
            record: record_filter(),
            echo,
        }
    }

    fn wants(&self, meta: &Metadata<'_>) -> bool {
        if meta.is_span() {
            return is_host_span(meta);
        }
        self.record.would_enable(meta.target(), meta.level())
            || self
                .echo
                .as_ref()
                .is_some_and(|e| e.would_enable(meta.target(), meta.level()))
    }
}

fn is_host_span(meta: &Metadata<'_>) -> bool {
    meta.name() == "node" && meta.target().starts_with("turmoil")
}

impl<S> Layer<S> for HarnessLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if self.wants(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !is_host_span(attrs.metadata()) {
            return;
        }
        struct NameVisitor(Option<String>);
        impl Visit for NameVisitor {
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "name" {
                    self.0 = Some(value.to_string());
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "name" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut visitor = NameVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(name), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(HostName(name.into()));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(HostName(name)) = span.extensions().get::<HostName>() {
                let name = name.clone();
                ctx::with(|run| run.set_host(Some(name)));
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if span.extensions().get::<HostName>().is_some() {
                ctx::with(|run| run.set_host(None));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // Without an echo filter, `enabled` let only recorded events through.
        let record = self.echo.is_none() || self.record.would_enable(meta.target(), meta.level());
        ctx::with(|run| {
            let host = run.host().unwrap_or_else(|| Arc::from("-"));
            let mut sink = run.part::<TraceSink>().borrow_mut();
            let echo = sink
                .echo
                .as_ref()
                .is_some_and(|e| e.would_enable(meta.target(), meta.level()));
            if (!record || sink.mode == TraceMode::Off) && !echo {
                return;
            }
            let mut line = std::mem::take(&mut sink.scratch);
            line.clear();
            let now = run.now();
            // `[{ms:>6}.{us:03}] host LEVEL target:` without the formatter.
            let mut number = itoa::Buffer::new();
            let ms = number.format(now.as_millis());
            line.push('[');
            for _ in ms.len()..6 {
                line.push(' ');
            }
            line.push_str(ms);
            line.push('.');
            let us = now.subsec_micros() % 1000;
            line.push(char::from(b'0' + (us / 100) as u8));
            line.push(char::from(b'0' + (us / 10 % 10) as u8));
            line.push(char::from(b'0' + (us % 10) as u8));
            line.push_str("] ");
            line.push_str(&host);
            line.push(' ');
            line.push_str(meta.level().as_str());
            line.push(' ');
            line.push_str(meta.target());
            line.push(':');
            event.record(&mut LineVisitor { line: &mut line });
            if record {
                sink.record(&host, &line);
            }
            if echo {
                eprintln!("{line}");
            }
            sink.scratch = line;
        });
    }
}

struct LineVisitor<'a> {
    line: &'a mut String,
}

impl LineVisitor<'_> {
    /// ` name=` (or just ` ` for the message).
    fn name(&mut self, field: &Field) {
        self.line.push(' ');
        if field.name() != "message" {
            self.line.push_str(field.name());
            self.line.push('=');
        }
    }
}

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.name(field);
        self.line.push_str(value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.line, " {value:?}");
        } else {
            let _ = write!(self.line, " {}={:?}", field.name(), value);
        }
    }
}
