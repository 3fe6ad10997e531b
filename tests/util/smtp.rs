//! A real SMTP server on 127.0.0.1 for tests: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
//! QUIT. It keeps every accepted message; it can refuse every session (421, a
//! transient outage), reject some recipients for good (550), take its time over DATA
//! (to widen the window for crash tests), and keep a message but hang up before
//! saying so (what a crash between acceptance and its record looks like to the
//! sender). Stops when dropped.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub rcpts: Vec<String>,
    pub raw: String,
}

impl Received {
    /// A header's value, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start());
                    continue;
                }
                return value;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_string());
                }
            }
        }
        value
    }

    pub fn message_id(&self) -> String {
        self.header("Message-ID").unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    messages: Vec<Received>,
    refuse: bool,
    reject: HashSet<String>,
    data_delay: Duration,
    /// Messages still to keep without answering 250.
    hang_up_after_data: usize,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let st = st.clone();
                        thread::spawn(move || {
                            let _ = session(stream, &st);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        SmtpSink { addr, state, stop }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn refuse(&self, on: bool) {
        self.state.lock().unwrap().refuse = on;
    }

    pub fn reject(&self, address: &str) {
        self.state
            .lock()
            .unwrap()
            .reject
            .insert(address.to_lowercase());
    }

    /// Keeps the next `n` messages but closes the connection instead of answering.
    pub fn hang_up_after_data(&self, n: usize) {
        self.state.lock().unwrap().hang_up_after_data = n;
    }

    pub fn data_delay(&self, delay: Duration) {
        self.state.lock().unwrap().data_delay = delay;
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn to(&self, address: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.rcpts.iter().any(|r| r == address))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn session(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    if state.lock().unwrap().refuse {
        stream.write_all(b"421 sink refusing for this test\r\n")?;
        return Ok(());
    }
    stream.write_all(b"220 sink ESMTP\r\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let verb = cmd.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => "250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8".into(),
            "HELO" => "250 sink".into(),
            "MAIL" => {
                rcpts.clear();
                "250 ok".into()
            }
            "RCPT" => {
                let addr = cmd
                    .split_once(':')
                    .map(|(_, a)| {
                        a.trim()
                            .trim_start_matches('<')
                            .split('>')
                            .next()
                            .unwrap_or("")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                if state.lock().unwrap().reject.contains(&addr) {
                    "550 no such mailbox here".into()
                } else {
                    rcpts.push(addr);
                    "250 ok".into()
                }
            }
            "DATA" if rcpts.is_empty() => "554 no valid recipients".into(),
            "DATA" => {
                stream.write_all(b"354 go on\r\n")?;
                let mut raw = String::new();
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l)? == 0 || l == ".\r\n" || l == ".\n" {
                        break;
                    }
                    raw.push_str(
                        l.strip_prefix('.')
                            .filter(|_| l.starts_with(".."))
                            .unwrap_or(&l),
                    );
                }
                let delay = state.lock().unwrap().data_delay;
                thread::sleep(delay);
                let mut st = state.lock().unwrap();
                st.messages.push(Received {
                    rcpts: rcpts.clone(),
                    raw,
                });
                if st.hang_up_after_data > 0 {
                    st.hang_up_after_data -= 1;
                    return Ok(());
                }
                "250 queued".into()
            }
            "RSET" => {
                rcpts.clear();
                "250 ok".into()
            }
            "NOOP" => "250 ok".into(),
            "QUIT" => {
                stream.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => "502 not implemented".into(),
        };
        stream.write_all(format!("{reply}\r\n").as_bytes())?;
    }
}
