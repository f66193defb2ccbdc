//! Capturing what a component logs, for tests that assert on log lines (a
//! fault is logged, a secret never is).

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// A `tracing` writer that collects everything written, from every thread,
/// into one shared buffer: pass a clone to
/// `tracing_subscriber::fmt().with_writer(...)` and read it with
/// [`Captured::text`].
#[derive(Clone, Debug, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// How many times `what` was written so far.
    pub fn count(&self, what: &str) -> usize {
        self.text().matches(what).count()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
