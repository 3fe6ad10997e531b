//! A small HTTP/1.1 client for loopback tests, so that a test controls every header it
//! sends (Origin, Cookie, Sec-Fetch-Site) and sees every header it gets back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where a request goes: a port on 127.0.0.1 (the pages), or a whole address (the
/// operators' endpoints, which tests serve on another loopback address).
pub trait Target {
    fn addr(&self) -> SocketAddr;
}

impl Target for u16 {
    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], *self).into()
    }
}

impl Target for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body without its footer (which names the minute the page was made), for
    /// comparing two answers byte for byte.
    pub fn body_without_footer(&self) -> String {
        match (self.body.find("<footer>"), self.body.find("</footer>")) {
            (Some(a), Some(b)) => format!("{}{}", &self.body[..a], &self.body[b..]),
            _ => self.body.clone(),
        }
    }

    /// The value of a hidden input or other `name="..." value="..."` pair.
    pub fn input_value(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].to_string())
    }

    /// A cookie the response sets: its `name=value` part.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next())
            .find(|pair| pair.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }
}

/// One request on a fresh connection. `path` may carry a query string.
pub fn request(
    to: impl Target,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let addr = to.addr();
    let s = TcpStream::connect(addr).expect("connect to the daemon");
    request_on(s, addr, method, path, headers, body)
}

/// A connection to the daemon on loopback from another loopback address (all of
/// 127.0.0.0/8 is this machine), so that a test can be several clients at once.
pub fn connect_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let source: std::net::SocketAddr = format!("{source}:0").parse().expect("an IPv4 address");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&source.into())?;
    let target: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect_timeout(&target.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// One request from `source` (a loopback address) on a fresh connection.
pub fn request_from(
    source: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let s = connect_from(source, port).expect("connect to the daemon");
    request_on(s, port.addr(), method, path, headers, body)
}

fn request_on(
    mut s: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body.
    let _ = s.write_all(body);
    let raw = String::from_utf8_lossy(&read_response(&mut s)).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Reads one response: up to the end of its Content-Length body where it has one
/// (some servers keep the connection open whatever the request asked), else to EOF.
fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length {
                if raw.len() >= end + 4 + length {
                    raw.truncate(end + 4 + length);
                    return raw;
                }
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

pub fn get(to: impl Target, path: &str) -> Reply {
    request(to, "GET", path, &[], b"")
}

/// A form POST with these extra headers.
pub fn post_form(
    to: impl Target,
    path: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> Reply {
    let body = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    request(to, "POST", path, &all, body.as_bytes())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
