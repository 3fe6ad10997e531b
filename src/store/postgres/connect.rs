//! How the store reaches its PostgreSQL server: the URL read as libpq reads it
//! (`config::PgUrl`), the password from the config's secret when one is named (the
//! URL's own otherwise), TLS with rustls as `sslmode` asks, and failures that name the
//! server but never the password. Every connection the store opens (the worker's, the
//! listener's, a leader's) comes from one `Connector`.

use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode as CrateSslMode};
use postgres::{Client, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PgUrl, PostgresDatabase, SslMode};
use crate::store::StoreError;

/// How long a connection attempt may take when the URL does not say
/// (`connect_timeout`): an unreachable server is an error, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens connections to one database, as its URL and the config ask.
pub(super) struct Connector {
    config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
    ssl_mode: SslMode,
    /// `user@host:port/dbname`: what errors and `vigia check` show.
    server: String,
}

impl Connector {
    /// From the config: the password from `database_password_env` / `_file` when one
    /// is named, read now (so a changed file is read at the next start).
    pub(super) fn for_database(db: &PostgresDatabase) -> Result<Connector, StoreError> {
        let password = match &db.password {
            Some(secret) => Some(
                secret
                    .read()
                    .map_err(|e| StoreError::Postgres(format!("the database password: {e}")))?,
            ),
            None => None,
        };
        Connector::new(&db.url, password)
    }

    /// From a URL, with a password that replaces the URL's if given.
    pub(super) fn new(url: &str, password: Option<String>) -> Result<Connector, StoreError> {
        let url = PgUrl::parse(url)
            .map_err(|e| StoreError::Postgres(format!("bad database URL: {e}")))?;
        let mut config = url.params;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // The crate's default is `prefer`, which would try TLS unasked; vigia's
        // default is plain, and the crate's `require` stands for every verifying mode
        // (the verification is the rustls config's).
        config.ssl_mode(match url.ssl_mode {
            SslMode::Disable => CrateSslMode::Disable,
            SslMode::Prefer => CrateSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => CrateSslMode::Require,
        });
        let tls = match url.ssl_mode {
            SslMode::Disable => None,
            mode => Some(MakeRustlsConnect::new(tls_config(
                mode,
                url.root_cert.as_deref(),
            )?)),
        };
        let server = describe(&config);
        Ok(Connector {
            config,
            tls,
            ssl_mode: url.ssl_mode,
            server,
        })
    }

    /// A new connection; must not be called on a tokio runtime's thread (the
    /// synchronous client runs a runtime of its own).
    pub(super) fn connect(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            None => self.config.connect(NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        };
        connected.map_err(|e| StoreError::PgConnect {
            server: self.server.clone(),
            tls: self.ssl_mode.name(),
            reason: super::server_says(&e),
        })
    }

    pub(super) fn server(&self) -> &str {
        &self.server
    }
}

/// `user@host:port/dbname`, the password left out.
fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("{user}{}/{db}", hosts.join(","))
}

/// The rustls configuration for a TLS mode: what it verifies, against which roots.
fn tls_config(
    mode: SslMode,
    root_cert: Option<&std::path::Path>,
) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Postgres(format!("TLS: {e}")))?;
    let chain = match mode {
        // As libpq: encrypted, but any certificate will do.
        SslMode::Disable | SslMode::Prefer | SslMode::Require => None,
        SslMode::VerifyCa | SslMode::VerifyFull => Some(
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(root_cert)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| StoreError::Postgres(format!("TLS: {e}")))?,
        ),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            provider,
            chain,
            name_too: mode == SslMode::VerifyFull,
        }))
        .with_no_client_auth())
}

/// The trusted roots: the `sslrootcert` file's certificates, else webpki's.
fn roots(root_cert: Option<&std::path::Path>) -> Result<RootCertStore, StoreError> {
    let Some(path) = root_cert else {
        return Ok(RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        ));
    };
    let unreadable =
        |why: String| StoreError::Postgres(format!("sslrootcert {}: {why}", path.display()));
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| unreadable(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| unreadable(e.to_string()))?;
        store
            .add(cert)
            .map_err(|e| unreadable(format!("not a usable certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(unreadable("holds no certificate".into()));
    }
    Ok(store)
}

/// What a mode checks of the server's certificate. The handshake's signatures are
/// always checked against the certificate presented, whatever is thought of it.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// `verify-ca` and `verify-full`: the chain must lead to a trusted root. None
    /// (`prefer`, `require`): any certificate will do, as in libpq.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// `verify-full`: the certificate must also name the host connected to.
    name_too: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the chain before the name: a name mismatch means the
            // chain was good, which is all `verify-ca` asks.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name_too => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_descriptions_never_show_the_password() {
        let c = Connector::new(
            "postgres://vigia:s3cret@db.example:6543/logs?sslmode=require",
            None,
        )
        .unwrap();
        assert_eq!(c.server(), "vigia@db.example:6543/logs");
        let c = Connector::new("postgres://vigia@db.example/logs", Some("s3cret".into())).unwrap();
        assert_eq!(c.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(c.server(), "vigia@db.example:5432/logs");
        let err = Connector::new("postgres://u:s3cret@h/db?sslmode=bogus", None)
            .err()
            .unwrap();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn a_missing_root_certificate_file_is_named() {
        let err = Connector::new(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            None,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
