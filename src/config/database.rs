//! A PostgreSQL URL read as libpq reads it. The `postgres` crate knows `sslmode`
//! `disable`, `prefer` and `require` only, and no `sslrootcert`; vigia takes both out
//! of the URL here, so the config check (`vigia check`) and the store (which connects)
//! read a URL the same way, and the rest goes to the crate untouched (no re-encoding).

use std::path::PathBuf;

/// How much TLS the URL asks for (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP; also what a URL without `sslmode` gets (unlike libpq's `prefer`:
    /// vigia does not try TLS unasked, as before TLS was supported).
    Disable,
    /// TLS if the server offers it, else plain; the certificate is not verified.
    Prefer,
    /// TLS or no connection; the certificate is not verified (encryption against
    /// eavesdroppers, not against an impostor), unless `sslrootcert` is given, which
    /// makes it `verify-ca`, as in libpq.
    Require,
    /// TLS with a certificate that chains to a trusted root, whatever its name.
    VerifyCa,
    /// TLS with a trusted certificate issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A PostgreSQL URL, its TLS options apart.
#[derive(Debug, Clone)]
pub struct PgUrl {
    /// Everything but the TLS options, as the `postgres` crate reads it (TLS mode not
    /// yet set: that is the connector's business).
    pub params: postgres::Config,
    pub ssl_mode: SslMode,
    /// `sslrootcert`: the PEM file of trusted roots (webpki's roots otherwise; `system`
    /// also means those).
    pub root_cert: Option<PathBuf>,
}

impl PgUrl {
    /// Reads a `postgres://` or `postgresql://` URL. The error never repeats the URL
    /// (it may hold a password).
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        let (rest, query) = match url.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (url, None),
        };
        let mut kept = Vec::new();
        let mut ssl_mode = None;
        let mut root_cert = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = || {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map(|v| v.into_owned())
                    .map_err(|_| format!("{key}: not UTF-8 once decoded"))
            };
            match key {
                "sslmode" => ssl_mode = Some(value()?),
                "sslrootcert" => root_cert = Some(value()?),
                _ => kept.push(pair),
            }
        }
        let ssl_mode = match ssl_mode.as_deref() {
            None | Some("disable") => SslMode::Disable,
            Some("prefer") => SslMode::Prefer,
            Some("require") if root_cert.is_some() => SslMode::VerifyCa,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => {
                return Err(format!(
                "sslmode={other}: vigia knows disable, prefer, require, verify-ca and verify-full"
            ))
            }
        };
        let rest = if kept.is_empty() {
            rest.to_string()
        } else {
            format!("{rest}?{}", kept.join("&"))
        };
        let params = rest
            .parse::<postgres::Config>()
            .map_err(|e: postgres::Error| error_chain(&e))?;
        Ok(PgUrl {
            params,
            ssl_mode,
            root_cert: root_cert.filter(|r| r != "system").map(PathBuf::from),
        })
    }
}

/// An error and its causes on one line: the `postgres` crate's errors say what
/// failed ("error performing TLS handshake") and leave why to their sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_read_apart_and_the_rest_is_left_as_written() {
        let url = PgUrl::parse(
            "postgres://u:p%40ss@db.example:6543/vigia?application_name=a%20b&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
        assert_eq!(url.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(url.params.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(url.params.get_application_name(), Some("a b"));
        assert_eq!(url.params.get_dbname(), Some("vigia"));
        for (query, mode) in [
            ("", SslMode::Disable),
            ("?sslmode=disable", SslMode::Disable),
            ("?sslmode=prefer", SslMode::Prefer),
            ("?sslmode=require", SslMode::Require),
            // libpq: a root certificate makes `require` verify the chain.
            ("?sslmode=require&sslrootcert=ca.pem", SslMode::VerifyCa),
            ("?sslmode=verify-ca&sslrootcert=system", SslMode::VerifyCa),
        ] {
            let url = PgUrl::parse(&format!("postgres://h/db{query}")).unwrap();
            assert_eq!(url.ssl_mode, mode, "{query}");
        }
        assert!(PgUrl::parse("postgres://h/db?sslrootcert=system")
            .unwrap()
            .root_cert
            .is_none());
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        for url in [
            "postgres://u:s3cret@h/db?sslmode=allow",
            "postgres://u:s3cret@h/db?sslmode=sometimes",
            "postgres://u:s3cret@h/db?nonsense=1",
        ] {
            let err = PgUrl::parse(url).unwrap_err();
            assert!(!err.contains("s3cret"), "{err}");
        }
        assert!(PgUrl::parse("postgres://h/db?sslmode=allow")
            .unwrap_err()
            .contains("verify-full"));
    }
}
