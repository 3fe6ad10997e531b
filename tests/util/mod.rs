//! Test helpers: a temporary folder per test, config writing, runs of the real
//! binary with everything printed on failure, and a loopback feed server.

#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod http;
pub mod server;
pub mod smtp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use daemon::Daemon;
pub use server::{FeedServer, Route};

pub const VIGIA: &str = env!("CARGO_BIN_EXE_vigia");

/// A fresh folder for one test, removed when the test passes.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::Builder::new()
                .prefix("vigia-test-")
                .tempdir()
                .expect("a temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A config with these feeds, file mail, and the shipped topics.
    pub fn config(&self, feeds: &[(&str, String)], extra: &str) -> PathBuf {
        let mut text = String::from(
            "[daemon]\ndatabase = \"vigia.db\"\nschedule = \"*/15 * * * *\"\n\n[mail]\ntransport = \"file\"\ndir = \"outbox\"\nfrom = \"vigia <vigia@example.org>\"\n\n",
        );
        for (id, url) in feeds {
            text.push_str(&format!("[[feed]]\nid = \"{id}\"\nurl = \"{url}\"\n\n"));
        }
        text.push_str(extra);
        text.push_str("\n[[topic]]\nid = \"us-mx-security\"\nname = \"US–Mexico security\"\n");
        self.write("vigia.toml", &text)
    }

    pub fn db(&self) -> PathBuf {
        self.join("vigia.db")
    }
}

/// The shipped config's topics (from its first `[[topic]]` on), with the examples
/// file named by its absolute path so the text works from any folder.
pub fn shipped_topics() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/config/vigia.toml")).unwrap();
    text[text.find("[[topic]]").unwrap()..].replace(
        "examples = \"examples/",
        &format!("examples = \"{root}/config/examples/"),
    )
}

/// A port on 127.0.0.1 that refuses connections for as long as the socket returned
/// is kept: bound (so no other process can take the port) but not listening, so a
/// connection to it is answered with a reset.
pub fn refused_port() -> (socket2::Socket, u16) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any.into()).expect("bind loopback");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("the bound address")
        .port();
    (socket, port)
}

/// Runs the real binary; the output comes back whatever the status.
pub fn vigia(args: &[&str], dir: &Dir) -> Output {
    let out = Command::new(VIGIA)
        .args(args)
        .current_dir(dir.path())
        .env_remove("VIGIA_CONFIG")
        .output()
        .expect("running vigia");
    out
}

/// Runs the binary and fails the test, with everything useful, unless it exits 0.
pub fn vigia_ok(args: &[&str], dir: &Dir) -> String {
    let out = vigia(args, dir);
    if !out.status.success() {
        panic!("{}", explain(args, dir, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn explain(args: &[&str], dir: &Dir, out: &Output) -> String {
    let listing: Vec<String> = std::fs::read_dir(dir.path())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    format!(
        "vigia {:?}\nin {} (holds {:?})\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
        args,
        dir.path().display(),
        listing,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The events `vigia events` prints, parsed.
pub fn events(dir: &Dir) -> Vec<serde_json::Value> {
    vigia_ok(&["--config", "vigia.toml", "events"], dir)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line of `vigia events` is JSON"))
        .collect()
}

pub fn count_kind(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

/// An RSS 2.0 document with these (guid, title, description) items.
pub fn rss(title: &str, items: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel><title>{title}</title><link>http://example.org/</link><description>d</description>"
    );
    for (guid, t, d) in items {
        s.push_str(&format!(
            "<item><guid isPermaLink=\"false\">{guid}</guid><title>{t}</title><link>http://example.org/{guid}</link><description>{d}</description><pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate></item>"
        ));
    }
    s.push_str("</channel></rss>\n");
    s
}
