//! Where fsmount's log goes: stderr in the foreground (colour only on a terminal); in the
//! background, `-o log_file=FILE` (appended), or else syslog (journald picks it up), so the
//! reconnect warnings and lost-write errors are seen after the terminal is gone.

use std::ffi::CString;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `foreground`: logs to stderr; else to `log_file` or
/// syslog.
pub fn init(foreground: bool, log_file: Option<&Path>) -> std::io::Result<()> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter());
    if foreground && protocol::stderr_is_journal() {
        builder
            .with_ansi(false)
            .without_time()
            .with_writer(std::io::stderr)
            .init();
        return Ok(());
    }
    if foreground {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
        return Ok(());
    }
    match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder.with_ansi(false).with_writer(Arc::new(file)).init();
        }
        None => {
            syslog::open();
            builder
                .with_ansi(false)
                .without_time()
                .with_writer(Syslog)
                .init();
        }
    }
    Ok(())
}

/// Writes each event as one syslog message, at the event's level.
struct Syslog;

/// One event's text, sent when dropped.
pub struct SyslogLine {
    priority: libc::c_int,
    text: Vec<u8>,
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            priority: libc::LOG_INFO,
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        let priority = match *meta.level() {
            Level::ERROR => libc::LOG_ERR,
            Level::WARN => libc::LOG_WARNING,
            Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        SyslogLine {
            priority,
            text: Vec::new(),
        }
    }
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text: Vec<u8> = self.text.iter().copied().filter(|b| *b != 0).collect();
        let text = String::from_utf8_lossy(&text);
        if let Ok(line) = CString::new(text.trim_end()) {
            syslog::send(self.priority, &line);
        }
    }
}

#[allow(unsafe_code)]
mod syslog {
    use std::ffi::CStr;

    /// Opens the connection to syslog as "fsmount[PID]", facility daemon.
    pub fn open() {
        // SAFETY: the ident is a static C string, as openlog requires (it keeps the pointer).
        unsafe { libc::openlog(c"fsmount".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }

    pub fn send(priority: libc::c_int, line: &CStr) {
        // SAFETY: "%s" with one NUL-terminated string argument.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), line.as_ptr()) };
    }
}
