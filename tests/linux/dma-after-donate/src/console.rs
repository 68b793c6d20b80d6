//! `println!`-like output on stdout (what the scenario script captures) without libc or
//! allocation: each line is formatted into a stack buffer and written with one `write`.

use core::fmt;

/// Formats into a fixed buffer; text beyond it is cut.
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Self { buf: [0; 512], len: 0 }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes one formatted line to file descriptor `fd`.
pub fn print_line(fd: i32, args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = fmt::write(&mut line, args);
    let _ = fmt::Write::write_str(&mut line, "\n");
    crate::sys::write_raw(fd, line.bytes());
}

/// One line on stdout, prefixed `dma-after-donate: `.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::print_line(1, format_args!("dma-after-donate: {}", format_args!($($arg)*)))
    };
}
pub(crate) use say;
