//! `tracing` to Python's `logging`: the level and message of each event, under a
//! logger named `kpl_rs.` and the event's target (`kpl_rs.kpl_producer.driver`).
//!
//! Events are handed over a channel to one thread that takes the GIL to log them:
//! the pipeline never waits for the GIL (a thread holding it may be waiting for the
//! pipeline). Only events at or above the level Python's `kpl_rs` logger has
//! (told by [`set_log_level`]) are formatted at all.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock, PoisonError};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Python's level numbers: 10 debug, 20 info, 30 warning, 40 error (5 for trace).
static MIN_LEVEL: AtomicU8 = AtomicU8::new(30);

/// Tells which events reach Python: those whose level number is at least `level`
/// (Python's `logging` numbers; `kpl_rs` calls it with its logger's effective level).
#[pyfunction]
pub(crate) fn set_log_level(level: u8) {
    MIN_LEVEL.store(level, Ordering::Relaxed);
}

fn python_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// One event, as it goes to the logging thread.
struct Line {
    level: u8,
    target: String,
    message: String,
}

/// The subscriber: no spans kept, events formatted and sent.
struct ToPython {
    lines: Mutex<Sender<Line>>,
    next_span: AtomicU64,
}

/// The message, then `key=value` for each other field.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl Subscriber for ToPython {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        python_level(metadata.level()) >= MIN_LEVEL.load(Ordering::Relaxed)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = Text::default();
        event.record(&mut text);
        text.message.push_str(&text.fields);
        let line = Line {
            level: python_level(event.metadata().level()),
            target: event.metadata().target().replace("::", "."),
            message: text.message,
        };
        let _ = self
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(line);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Makes the bridge the process's `tracing` subscriber (once; if another one was set
/// first, that one stays).
pub(crate) fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let (tx, rx) = channel::<Line>();
        let subscriber = ToPython {
            lines: Mutex::new(tx),
            next_span: AtomicU64::new(1),
        };
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("kpl_rs-logs".into())
            .spawn(move || {
                for line in rx {
                    Python::attach(|py| {
                        let logged = py.import("logging").and_then(|logging| {
                            logging
                                .call_method1("getLogger", (format!("kpl_rs.{}", line.target),))?
                                .call_method1("log", (line.level, line.message))
                        });
                        // A logging handler that raises is logging's own business.
                        if let Err(e) = logged {
                            e.print(py);
                        }
                    });
                }
            });
        // Without the thread, the lines are dropped with the channel's receiver.
        drop(spawned);
    });
}
