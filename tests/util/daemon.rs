//! The real daemon (`vigia run`) as a child process whose stderr a thread reads line
//! by line: the log is kept for the test to search, and the addresses the daemon says
//! it bound (`serving the web pages addr=…`, `serving /healthz and /metrics addr=…`)
//! are noted, so that configs can ask for port 0 and no test races another process
//! for a port. Everything here waits for what it needs, with a deadline; nothing
//! sleeps in the hope that something is ready. The daemon is stopped when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Dir, VIGIA};

/// How long a daemon may take to say that it listens (it may load a learned model).
const STARTUP: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Seen {
    log: String,
    pages: Option<SocketAddr>,
    ops: Option<SocketAddr>,
    /// stderr reached its end: the daemon exited (or closed it).
    ended: bool,
}

type Shared = Arc<(Mutex<Seen>, Condvar)>;

pub struct Daemon {
    child: Option<Child>,
    seen: Shared,
}

impl Daemon {
    /// Starts `vigia --config vigia.toml run` in `dir`.
    pub fn start(dir: &Dir) -> Daemon {
        Daemon::start_with(dir, &["--config", "vigia.toml", "run"])
    }

    pub fn start_with(dir: &Dir, args: &[&str]) -> Daemon {
        let mut child = Command::new(VIGIA)
            .args(args)
            .current_dir(dir.path())
            .env_remove("VIGIA_CONFIG")
            // Plain text: tracing colours its output even when it is not a terminal.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting vigia run");
        let stderr = child.stderr.take().expect("a piped stderr");
        let seen: Shared = Arc::default();
        let shared = seen.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                let n = lines.read_until(b'\n', &mut raw).unwrap_or(0);
                let (lock, changed) = &*shared;
                let mut seen = lock.lock().unwrap();
                if n == 0 {
                    seen.ended = true;
                    changed.notify_all();
                    return;
                }
                let line = strip_ansi(&String::from_utf8_lossy(&raw));
                if let Some(addr) = bound(&line, "serving the web pages") {
                    seen.pages = Some(addr);
                }
                if let Some(addr) = bound(&line, "serving /healthz and /metrics") {
                    seen.ops = Some(addr);
                }
                seen.log.push_str(&line);
                changed.notify_all();
            }
        });
        Daemon {
            child: Some(child),
            seen,
        }
    }

    /// The address the public pages are served on, once the daemon has said so.
    pub fn pages(&self) -> SocketAddr {
        self.wait_until("the web pages' address", STARTUP, |s| s.pages)
    }

    /// The address of /healthz and /metrics, once the daemon has said so.
    pub fn ops(&self) -> SocketAddr {
        self.wait_until("the operators' address", STARTUP, |s| s.ops)
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        self.seen.0.lock().unwrap().log.clone()
    }

    /// Waits until the log holds `text`; panics with the log after `timeout`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        self.wait_until(&format!("{text:?} in the log"), timeout, |s| {
            s.log.contains(text).then_some(())
        })
    }

    /// Waits for `found` to give a value; woken by each line the daemon logs. Fails at
    /// once if the daemon's stderr ends first (it exited), with its log.
    fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&Seen) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.seen;
        let mut seen = lock.lock().unwrap();
        loop {
            if let Some(t) = found(&seen) {
                return t;
            }
            let now = Instant::now();
            if seen.ended || now >= deadline {
                let why = if seen.ended {
                    "the daemon's stderr ended"
                } else {
                    "timed out"
                };
                panic!("{why} waiting for {what}; its log:\n{}", seen.log);
            }
            seen = changed.wait_timeout(seen, deadline - now).unwrap().0;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// SIGTERM, then waits (at most 15 s) for the exit: its status and how long it took.
    pub fn stop(mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("the daemon runs");
        let asked = Instant::now();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        match wait_exit(&mut child, Duration::from_secs(15)) {
            Some(status) => (status, asked.elapsed()),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not stop within 15 s of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Waits for the child to exit, checking every 20 ms until `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address in a log line such as `… serving the web pages addr=127.0.0.1:40123`.
fn bound(line: &str, message: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(message)? + message.len()..];
    let value = rest
        .split_whitespace()
        .find_map(|f| f.strip_prefix("addr="))?;
    value.parse().ok()
}

/// The text without ANSI escape sequences (in case colours come through anyway).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn the_bound_address_is_read_from_a_coloured_or_plain_line() {
    let coloured = "\u{1b}[2m2026-12-02T08:57:27Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mvigia::daemon\u{1b}[0m\u{1b}[2m:\u{1b}[0m serving the web pages \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:45461\n";
    assert_eq!(
        bound(&strip_ansi(coloured), "serving the web pages"),
        Some("127.0.0.1:45461".parse().unwrap())
    );
    let plain = "2026-12-02T08:57:35Z  INFO vigia::service: serving /healthz and /metrics addr=127.0.0.2:46247\n";
    assert_eq!(
        bound(plain, "serving /healthz and /metrics"),
        Some("127.0.0.2:46247".parse().unwrap())
    );
    assert_eq!(bound(plain, "serving the web pages"), None);
}
