//! Result lines, in the format the harness checks:
//! `ok NAME` / `FAILED NAME: reason`, then `guest: N passed, M failed` and `guest: done`.

use core::fmt::{self, Write};

use crate::console::println;
use crate::shared::SharedU64;
use crate::smccc;

/// Why a scenario failed: formatted text, truncated to a fixed size (no heap).
pub struct Reason {
    text: [u8; 200],
    len: usize,
}

impl Reason {
    pub fn new(args: fmt::Arguments) -> Self {
        let mut reason = Self { text: [0; 200], len: 0 };
        // Reason::write_str never fails (it truncates).
        let _ = reason.write_fmt(args);
        reason
    }
}

impl Reason {
    /// The text (UTF-8, possibly cut inside a character by truncation).
    pub fn as_bytes(&self) -> &[u8] {
        self.text.get(..self.len).unwrap_or_default()
    }

    /// A reason from bytes another CPU produced with [`Reason::as_bytes`]; invalid UTF-8 is
    /// cut at the first bad byte.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let text = match core::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                core::str::from_utf8(bytes.get(..error.valid_up_to()).unwrap_or_default())
                    .unwrap_or_default()
            }
        };
        Self::new(format_args!("{text}"))
    }
}

impl Write for Reason {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            // One line per result: newlines in a reason would break the format.
            let byte = if byte == b'\n' || byte == b'\r' { b' ' } else { byte };
            if let Some(slot) = self.text.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.as_bytes();
        match core::str::from_utf8(bytes) {
            Ok(text) => f.write_str(text),
            // Truncation may have split a character: print the valid prefix.
            Err(error) => f.write_str(
                core::str::from_utf8(bytes.get(..error.valid_up_to()).unwrap_or_default())
                    .unwrap_or_default(),
            ),
        }
    }
}

/// What a scenario returns.
pub type Outcome = Result<(), Reason>;

/// Returns `Err(Reason)` with a formatted message from the enclosing scenario.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::report::Reason::new(format_args!($($arg)*)))
    };
}
pub(crate) use fail;

// Counted by the primary CPU only (or by the one CPU reporting a fatal error).
static PASSED: SharedU64 = SharedU64::new(0);
static FAILED: SharedU64 = SharedU64::new(0);

/// Prints one scenario's result line and counts it.
pub fn record(name: &str, outcome: Outcome) {
    match outcome {
        Ok(()) => {
            PASSED.store(PASSED.load() + 1);
            println!("ok {name}");
        }
        Err(reason) => {
            FAILED.store(FAILED.load() + 1);
            println!("FAILED {name}: {reason}");
        }
    }
}

/// Prints the final two lines.
pub fn finish() {
    println!("guest: {} passed, {} failed", PASSED.load(), FAILED.load());
    println!("guest: done");
}

/// Reports a failure that ends the run (panic, unexpected exception), then powers off.
pub fn fatal(name: &str, args: fmt::Arguments) -> ! {
    record(name, Err(Reason::new(args)));
    finish();
    smccc::system_off()
}
