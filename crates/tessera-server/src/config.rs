//! Server configuration, as parsed by the `tessera server` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

#[derive(Clone, Debug)]
pub enum TlsMode {
    /// Plain HTTP: loopback only, unless `insecure_http` says otherwise.
    Off,
    /// PEM certificate chain and private key from files.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate generated once into `<data-dir>/tls/`.
    SelfSigned,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The file holding this node's private signing key (viewer tokens);
    /// `None` means `<data_dir>/node.key`. Created (mode 0600) if missing.
    pub node_key: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`; `None` means SQLite in `data_dir`.
    pub database_url: Option<String>,
    pub tls: TlsMode,
    /// Allow plain HTTP on a non-loopback address (behind a TLS proxy).
    pub insecure_http: bool,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Lifetime of an operator login session.
    pub session_ttl: Duration,
    /// How often devices heartbeat on the control channel; a revoked device
    /// is cut off within one interval on every node.
    pub heartbeat_interval: Duration,
    /// RFC 8628 polling interval handed to devices.
    pub pairing_interval: Duration,
    /// How long a device code and its user code stay valid.
    pub pairing_ttl: Duration,
    /// The URL people and devices use to reach this server, for links such
    /// as the pairing `verification_uri`; default: from the request's Host.
    pub public_url: Option<String>,
    /// How long the person at an attended device has to answer.
    pub consent_timeout: Duration,
    /// How long a managed shell outlives its last viewer (unless a viewer
    /// left it on purpose with `keep`): a reconnect within it finds it.
    pub shell_grace: Duration,
    /// Most devices in one automatic session, the creator included.
    pub auto_session_max_members: usize,
    /// Most viewers of one session.
    pub max_viewers: usize,
    /// Input events a `control` viewer may send per second.
    pub viewer_input_per_second: u32,
    /// Input events a `control` viewer of a screen may send per second.
    pub screen_input_per_second: u32,
    /// How screen sessions choose their codec (see `relay::screen`).
    pub screen_codec: crate::relay::CodecPolicy,
    /// A second address that serves only `/metrics`, with no token: for a
    /// scraper on loopback or a private network.
    pub metrics_listen: Option<SocketAddr>,
    /// The bearer token `/metrics` on the main listener requires. Without
    /// one the main listener does not serve metrics at all.
    pub metrics_token: Option<tessera_core::api::SecretString>,
    /// Connections one device may hold on this node at once (agent and
    /// clients together); one more is refused with `too_many_connections`.
    pub max_connections_per_device: usize,
    /// How long one write to a device's socket may take; a device that
    /// does not take a message in this long has stopped reading and is
    /// disconnected.
    pub device_write_timeout: Duration,
    /// A signed audit checkpoint is written once this many rows follow the
    /// last one, or once `audit_checkpoint_interval` has passed since it
    /// (and rows followed), whichever comes first; checked every heartbeat.
    pub audit_checkpoint_rows: i64,
    pub audit_checkpoint_interval: Duration,
    /// This node's id in a cluster; `None` means the one generated once
    /// into `<data_dir>/node.id`.
    pub node_id: Option<String>,
    /// The URL other nodes and operators reach this very node at (shown in
    /// the node list; the load balancer's address is `public_url`).
    pub advertise_url: Option<String>,
    /// How nodes on one database reach each other; `None` runs one node.
    pub nats: Option<NatsConfig>,
}

/// `--nats-url` and its credentials (see `crate::cluster`).
#[derive(Clone, Debug, Default)]
pub struct NatsConfig {
    /// One or more `nats://` / `tls://` URLs, comma-separated.
    pub url: String,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// A file holding an NKey seed (`SU…`).
    pub nkey: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the NATS server's TLS.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Refuse a NATS connection without TLS.
    pub require_tls: bool,
}

impl ServerConfig {
    /// Defaults for everything but where to listen and keep data.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            data_dir,
            node_key: None,
            database_url: None,
            tls: TlsMode::Off,
            insecure_http: false,
            trusted_proxies: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            heartbeat_interval: Duration::from_secs(15),
            pairing_interval: Duration::from_secs(5),
            pairing_ttl: Duration::from_secs(600),
            public_url: None,
            consent_timeout: Duration::from_secs(60),
            shell_grace: Duration::from_secs(60),
            auto_session_max_members: crate::automatic::DEFAULT_MAX_MEMBERS,
            max_viewers: crate::relay::MAX_VIEWERS,
            viewer_input_per_second: crate::relay::viewer::INPUT_PER_SECOND,
            screen_input_per_second: crate::relay::viewer::INPUT_PER_SECOND,
            screen_codec: crate::relay::CodecPolicy::Raw,
            metrics_listen: None,
            metrics_token: None,
            max_connections_per_device: crate::control::MAX_CONNECTIONS_PER_DEVICE,
            device_write_timeout: crate::control::connection::WRITE_TIMEOUT,
            audit_checkpoint_rows: 1000,
            audit_checkpoint_interval: Duration::from_secs(300),
            node_id: None,
            advertise_url: None,
            nats: None,
        }
    }

    /// Where this node's signing key lives.
    pub fn node_key_path(&self) -> PathBuf {
        self.node_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("node.key"))
    }

    /// Why this configuration must not start, if it must not.
    pub fn refusal(&self) -> Option<String> {
        plain_http_refusal(
            self.listen,
            matches!(self.tls, TlsMode::Off),
            self.insecure_http,
        )
    }
}

/// Plain HTTP off loopback would carry passwords, login tokens and device keys
/// over the network in the clear, so it takes an explicit opt-in.
pub fn plain_http_refusal(listen: SocketAddr, plain: bool, insecure_http: bool) -> Option<String> {
    if !plain || insecure_http || listen.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "refusing to serve plain HTTP on {listen}: passwords, login tokens and device keys would \
         cross the network unencrypted. Use --tls-cert/--tls-key or --tls-self-signed, or pass \
         --insecure-http if a TLS-terminating proxy sits in front of this server"
    ))
}

/// A database URL fit for a log line: scheme, host and database, never a
/// password.
pub fn redact_database_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let after_creds = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
            let without_query = after_creds.split('?').next().unwrap_or("");
            format!("{scheme}://{without_query}")
        }
        None => "<unparsable database url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_off_loopback_only() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(plain_http_refusal(lo, true, false).is_none());
        assert!(plain_http_refusal(lo6, true, false).is_none());
        let why = plain_http_refusal(any, true, false).unwrap();
        assert!(why.contains("--insecure-http") && why.contains("unencrypted"));
        assert!(plain_http_refusal(any, true, true).is_none());
        assert!(plain_http_refusal(any, false, false).is_none());
    }

    #[test]
    fn database_urls_lose_their_credentials() {
        assert_eq!(
            redact_database_url("postgres://app:s3cret@db.example:5432/tessera?sslmode=require"),
            "postgres://db.example:5432/tessera"
        );
        assert_eq!(
            redact_database_url("sqlite:///var/lib/tessera/tessera.db?mode=rwc"),
            "sqlite:///var/lib/tessera/tessera.db"
        );
    }
}
