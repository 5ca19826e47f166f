//! Metrics both sides keep and expose in the Prometheus text format (version 0.0.4): a
//! request counter and a latency histogram per command, lock-free on the request path (an
//! array indexed by command code, relaxed atomics), and the text exposition of them and of
//! plain counters and gauges. Serving it over HTTP is [`serve`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Command;

/// Upper bounds of the latency buckets, in seconds (a LAN round trip to a slow disk).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Command codes are small (below 64; checked by a test against the command table).
const SLOTS: usize = 64;

#[derive(Debug, Default)]
struct PerCommand {
    count: AtomicU64,
    errors: AtomicU64,
    /// Of `count`: answered by the server on the connection's own task, without a worker.
    at_once: AtomicU64,
    /// Cumulative at render time; here each observation lands in one bucket (the last one
    /// past the final bound is +Inf).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// Which counter of a command's slot.
type Field = fn(&PerCommand) -> &AtomicU64;

/// Requests, errors and latency per command.
#[derive(Debug)]
pub struct CommandMetrics {
    slots: Box<[PerCommand]>,
}

impl Default for CommandMetrics {
    fn default() -> Self {
        CommandMetrics {
            slots: (0..SLOTS).map(|_| PerCommand::default()).collect(),
        }
    }
}

impl CommandMetrics {
    /// Counts one request of `cmd` that took `took`; `ok` false for an error reply.
    pub fn observe(&self, cmd: u16, took: Duration, ok: bool) {
        let Some(slot) = self.slots.get(cmd as usize) else {
            return;
        };
        slot.count.fetch_add(1, Ordering::Relaxed);
        if !ok {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        slot.sum_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts one request of `cmd` (also `observe`d) that needed no worker thread.
    pub fn observe_at_once(&self, cmd: u16) {
        if let Some(slot) = self.slots.get(cmd as usize) {
            slot.at_once.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests of every command so far.
    pub fn total(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }

    /// `PREFIX_requests_total`, `PREFIX_request_errors_total` and
    /// `PREFIX_request_duration_seconds` (histogram), labelled by command, for every
    /// command seen at least once.
    pub fn render(&self, prefix: &str, what: &str, out: &mut String) {
        let seen: Vec<(Command, &PerCommand)> = Command::ALL
            .iter()
            .filter_map(|c| Some((*c, self.slots.get(c.code() as usize)?)))
            .filter(|(_, s)| s.count.load(Ordering::Relaxed) > 0)
            .collect();
        let any_at_once = seen
            .iter()
            .any(|(_, s)| s.at_once.load(Ordering::Relaxed) > 0);
        let counters: [(&str, String, Field); 3] = [
            ("requests_total", format!("{what}, by command."), |s| {
                &s.count
            }),
            (
                "request_errors_total",
                format!("{what} answered with an error, by command."),
                |s| &s.errors,
            ),
            (
                "requests_without_worker_total",
                format!(
                    "{what} answered without a worker thread (nothing to wait for), by command."
                ),
                |s| &s.at_once,
            ),
        ];
        for (name, help, field) in counters {
            if name == "requests_without_worker_total" && !any_at_once {
                continue;
            }
            let _ = writeln!(
                out,
                "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} counter"
            );
            for (c, s) in &seen {
                let _ = writeln!(
                    out,
                    "{prefix}_{name}{{command=\"{c:?}\"}} {}",
                    field(s).load(Ordering::Relaxed)
                );
            }
        }
        let name = format!("{prefix}_request_duration_seconds");
        let _ = writeln!(
            out,
            "# HELP {name} Time from {what} to reply, by command.\n# TYPE {name} histogram"
        );
        for (c, s) in &seen {
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{command=\"{c:?}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += s.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
            let sum = s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "{name}_bucket{{command=\"{c:?}\",le=\"+Inf\"}} {cumulative}\n{name}_sum{{command=\"{c:?}\"}} {sum}\n{name}_count{{command=\"{c:?}\"}} {cumulative}"
            );
        }
    }
}

/// Appends one unlabelled sample with its HELP and TYPE lines (`kind`: counter or gauge).
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The most a scraper may send before its request line and headers end.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `GET /metrics` on `listener` with what `render` returns at each scrape; anything
/// else gets 404. Each connection has 2 s and 8 KiB to send its request; one answer, then
/// the connection closes; at most 64 are served at once (the rest wait to be accepted).
/// Runs until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let render = std::sync::Arc::new(render);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors, most likely: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut head = Vec::with_capacity(512);
            let read_head = async {
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            };
            let complete = tokio::time::timeout(Duration::from_secs(2), read_head)
                .await
                .unwrap_or(false);
            if !complete {
                return;
            }
            let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
            let mut words = line.split(|b| *b == b' ');
            let (method, path) = (words.next(), words.next());
            let reply = match (method, path) {
                (Some(b"GET"), Some(p)) if p == b"/metrics" || p.starts_with(b"/metrics?") => {
                    let body = render();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                _ => "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: close\r\n\r\nonly GET /metrics here".to_string(),
            };
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.write_all(reply.as_bytes()))
                    .await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_codes_fit_the_slots() {
        assert!(Command::ALL.iter().all(|c| (c.code() as usize) < SLOTS));
    }

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = CommandMetrics::default();
        m.observe(Command::Read.code(), Duration::from_micros(70), true);
        m.observe(Command::Read.code(), Duration::from_millis(3), false);
        m.observe(Command::Read.code(), Duration::from_secs(60), true);
        let mut out = String::new();
        m.render("fsxp_test", "Requests", &mut out);
        assert!(
            out.contains("fsxp_test_requests_total{command=\"Read\"} 3"),
            "{out}"
        );
        assert!(out.contains("fsxp_test_request_errors_total{command=\"Read\"} 1"));
        assert!(
            out.contains("_bucket{command=\"Read\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("_bucket{command=\"Read\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("_bucket{command=\"Read\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("_bucket{command=\"Read\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("_count{command=\"Read\"} 3\n"));
        assert!(!out.contains("\"Write\""), "unseen commands are left out");
        assert_eq!(m.total(), 3);
    }
}
