//! Writing to standard error and standard output without ever panicking.
//!
//! `eprintln!` panics when standard error is closed or full, and a panic in the
//! middle of `kpl put` loses records. Every message of the command goes through
//! [`say!`](crate::say) instead: a failed write is dropped and remembered, so the
//! run still settles its records and its exit code says that output was lost. The
//! log subscriber writes through [`LogWriter`], which does the same.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code when standard output's reader went away (128 + SIGPIPE), as Unix tools
/// killed by SIGPIPE report it.
pub(crate) const EXIT_BROKEN_PIPE: u8 = 141;

static STDERR_LOST: AtomicBool = AtomicBool::new(false);

/// Writes one message line to standard error; a failed write is dropped and
/// remembered ([`stderr_lost`]).
pub(crate) fn stderr_line(args: fmt::Arguments<'_>) {
    // One write of the whole line, so concurrent log lines do not interleave in it.
    let line = format!("{args}\n");
    write_stderr(line.as_bytes());
}

/// Writes bytes to standard error; a failed write is dropped and remembered.
pub(crate) fn write_stderr(bytes: &[u8]) {
    if STDERR_LOST.load(Ordering::Relaxed) {
        return;
    }
    let mut err = io::stderr().lock();
    if err.write_all(bytes).and_then(|()| err.flush()).is_err() {
        STDERR_LOST.store(true, Ordering::Relaxed);
    }
}

/// Whether a message or log line could not be written to standard error.
pub(crate) fn stderr_lost() -> bool {
    STDERR_LOST.load(Ordering::Relaxed)
}

/// A message line on standard error that never panics (see the module doc).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::stderr_line(format_args!($($arg)*))
    };
}

/// The log subscriber's writer: standard error, with failures dropped and
/// remembered instead of reported by a printing macro (which would panic inside a
/// runtime worker and stop delivery).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_stderr(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Whether an error chain holds a broken pipe (standard output's reader went away).
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            // serde_json keeps the io error inside, with its kind.
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_found_under_context() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing standard output");
        assert!(is_broken_pipe(&err));
        let other = anyhow::Error::new(io::Error::other("disk full")).context("writing");
        assert!(!is_broken_pipe(&other));
        let json = serde_json::Error::io(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&anyhow::Error::new(json).context("writing")));
    }
}
