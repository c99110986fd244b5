//! `tessera server`.

use crate::output::say;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ipnet::IpNet;
use tessera_core::SystemClock;
use tessera_server::{Server, ServerConfig, TlsMode};

use crate::duration;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServerArgs {
    #[command(subcommand)]
    command: Option<ServerCommand>,
    /// Address and port to listen on.
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for the embedded database and generated TLS material.
    #[arg(long, env = "TESSERA_DATA_DIR", default_value = "./tessera-data")]
    data_dir: PathBuf,
    /// This node's private signing key for viewer tokens (created, mode
    /// 0600, if missing); default: <data-dir>/node.key. Never in the database.
    #[arg(long, env = "TESSERA_NODE_KEY")]
    node_key: Option<PathBuf>,
    /// `postgres://…` to use PostgreSQL; default: SQLite in the data directory.
    #[arg(long, env = "TESSERA_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(
        long,
        env = "TESSERA_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TESSERA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve TLS with a certificate generated once into <data-dir>/tls.
    #[arg(long, env = "TESSERA_TLS_SELF_SIGNED")]
    tls_self_signed: bool,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS proxy).
    #[arg(long, env = "TESSERA_INSECURE_HTTP")]
    insecure_http: bool,
    /// Proxy address range whose X-Forwarded-For is trusted (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "TESSERA_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpNet>,
    /// How often devices heartbeat; a revoked device is cut off within one.
    /// From 100 milliseconds to 5 minutes, e.g. `15s`.
    #[arg(long, env = "TESSERA_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = duration::heartbeat_interval)]
    heartbeat_interval: Duration,
    /// How long a managed shell outlives its last viewer (`connect --keep`
    /// leaves it running on purpose); a `connect --resume` within it finds it.
    /// From 0 seconds (it ends with its last viewer) to 1 day, e.g. `60s`.
    #[arg(long, env = "TESSERA_SHELL_GRACE", default_value = "60s", value_parser = duration::shell_grace)]
    shell_grace: Duration,
    /// RFC 8628 polling interval given to pairing devices, from 1 second
    /// to 1 minute, e.g. `5s`.
    #[arg(long, env = "TESSERA_PAIRING_INTERVAL", default_value = "5s", value_parser = duration::pairing_interval)]
    pairing_interval: Duration,
    /// Most members of one automatic session, the creator included.
    #[arg(long, env = "TESSERA_AUTO_SESSION_MAX_MEMBERS", default_value_t = tessera_server::automatic::DEFAULT_MAX_MEMBERS as u16, value_parser = clap::value_parser!(u16).range(2..=256))]
    auto_session_max_members: u16,
    /// Most viewers of one session.
    #[arg(long, env = "TESSERA_MAX_VIEWERS", default_value_t = tessera_server::relay::MAX_VIEWERS as u16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_viewers: u16,
    /// Connections one device may hold at once (its agent and `tessera
    /// send` clients together); one more is refused with
    /// `too_many_connections`.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS_PER_DEVICE", default_value_t = tessera_server::control::MAX_CONNECTIONS_PER_DEVICE as u16, value_parser = clap::value_parser!(u16).range(1..=64))]
    max_connections_per_device: u16,
    /// Input events per second a `control` viewer may send (keystrokes,
    /// resizes); more are delayed, then dropped.
    #[arg(long, env = "TESSERA_VIEWER_INPUT_RATE", default_value_t = tessera_server::relay::viewer::INPUT_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..))]
    viewer_input_rate: u32,
    /// Input events per second a `control` viewer of a screen may send
    /// (pointer, keys, clipboard); more are dropped and counted.
    #[arg(long, env = "TESSERA_SCREEN_INPUT_RATE", default_value_t = tessera_server::relay::viewer::INPUT_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..))]
    screen_input_rate: u32,
    /// How screen sessions choose their codec: `raw` (lossless raw+zstd
    /// tiles, exact text, no codec library; the default) or `prefer-h264`
    /// (H.264 whenever the agent and every viewer can, for motion-heavy
    /// screens on slow links).
    #[arg(long, env = "TESSERA_SCREEN_CODEC", default_value = "raw")]
    screen_codec: tessera_server::relay::CodecPolicy,
    /// URL people and devices use to reach this server (an http or https
    /// URL): pairing links use it, and a device's proof of key possession
    /// must name it. Default: from the request's Host header.
    #[arg(long, env = "TESSERA_PUBLIC_URL", value_parser = public_url)]
    public_url: Option<String>,
    /// How long a pairing (its device code and user code) waits for an
    /// operator's approval, from 1 minute to 1 day, e.g. `30m`.
    #[arg(long, env = "TESSERA_PAIRING_TTL", default_value = "10m", value_parser = duration::pairing_ttl)]
    pairing_ttl: Duration,
    /// Lifetime of an operator login, from 1 minute to 30 days, e.g. `12h`.
    #[arg(long, env = "TESSERA_SESSION_TTL", default_value = "12h", value_parser = duration::session_ttl)]
    session_ttl: Duration,
    /// Serve `/metrics` (and nothing else) on this address too, with no
    /// token: for a scraper on loopback or a private network.
    #[arg(long, env = "TESSERA_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` on the main address to requests bearing this token.
    /// Without it (or --metrics-listen) no metrics are served. Prefer the
    /// environment variable: a command line is visible to other users.
    #[arg(long, env = "TESSERA_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// NATS server(s) through which several nodes on one PostgreSQL
    /// database reach each other's devices (comma-separated `nats://` or
    /// `tls://` URLs). Without it the server runs as a single node, and
    /// refuses to start beside another live node on the same database.
    #[arg(long, env = "TESSERA_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// NATS credentials file (JWT and NKey seed, `.creds`).
    #[arg(
        long,
        env = "TESSERA_NATS_CREDS",
        requires = "nats_url",
        conflicts_with = "nats_nkey"
    )]
    nats_creds: Option<PathBuf>,
    /// File holding an NKey seed to authenticate to NATS with.
    #[arg(long, env = "TESSERA_NATS_NKEY", requires = "nats_url")]
    nats_nkey: Option<PathBuf>,
    /// CA certificates (PEM) that sign the NATS server's certificate.
    #[arg(long, env = "TESSERA_NATS_TLS_CA", requires = "nats_url")]
    nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS to NATS (needs --nats-tls-key).
    #[arg(long, env = "TESSERA_NATS_TLS_CERT", requires_all = ["nats_url", "nats_tls_key"])]
    nats_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --nats-tls-cert.
    #[arg(long, env = "TESSERA_NATS_TLS_KEY", requires = "nats_tls_cert")]
    nats_tls_key: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    #[arg(long, env = "TESSERA_NATS_REQUIRE_TLS", requires = "nats_url")]
    nats_require_tls: bool,
    /// This node's id (letters, digits and dashes, at most 63); default:
    /// generated once into <data-dir>/node.id.
    #[arg(long, env = "TESSERA_NODE_ID")]
    node_id: Option<String>,
    /// The URL this very node is reached at (kept with its lease in the
    /// database, and named when another node is refused beside it); the
    /// load balancer's address is --public-url.
    #[arg(long, env = "TESSERA_ADVERTISE_URL", value_parser = public_url)]
    advertise_url: Option<String>,
    /// Log line format.
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // Ignore a second initialisation (tests, nested commands).
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C), whichever comes first.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[derive(Subcommand, Debug)]
enum ServerCommand {
    /// Give an administrator a new random password, offline (for a lost
    /// one): needs the server's data directory or database, ends the
    /// account's signed-in sessions and is audited. Prints the password once.
    ResetAdmin(ResetAdminArgs),
}

#[derive(Args, Debug)]
struct ResetAdminArgs {
    /// The administrator whose password is reset.
    #[arg(long, default_value = tessera_server::bootstrap::BOOTSTRAP_USERNAME)]
    username: String,
    /// The server's data directory (its embedded database).
    #[arg(long, env = "TESSERA_DATA_DIR", default_value = "./tessera-data")]
    data_dir: PathBuf,
    /// `postgres://…` when the server uses PostgreSQL.
    #[arg(long, env = "TESSERA_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// `tessera server reset-admin`.
async fn reset_admin(args: ResetAdminArgs) -> anyhow::Result<ExitCode> {
    let url = match args.database_url {
        Some(url) => url,
        None => {
            // Never create an empty database where the operator mistyped
            // the directory: the reset needs the server's own.
            let file = args.data_dir.join("tessera.db");
            if !file.is_file() {
                anyhow::bail!(
                    "no Tessera database at {}: give the server's --data-dir (or --database-url)",
                    file.display()
                );
            }
            tessera_server::store::Db::sqlite_url(&args.data_dir)
        }
    };
    let db = tessera_server::store::Db::connect(&url)
        .await
        .context("cannot open the server's database")?;
    let reset = tessera_server::bootstrap::reset_admin(&db, &args.username).await?;
    // Printed once, to the console only: never through the logger.
    say!(
        "New password for {}: {}\n\
         Sign in with it and change it (`tessera ctl passwd` or the console).",
        reset.admin.username,
        reset.admin.password.as_str()
    );
    if reset.reenabled {
        say!("The account was disabled; it is enabled again.");
    }
    if reset.revoked_sessions > 0 {
        say!(
            "{} signed-in session(s) of the account ended.",
            reset.revoked_sessions
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    if let Some(ServerCommand::ResetAdmin(reset)) = args.command {
        return reset_admin(reset).await;
    }
    init_logging(args.log_format);
    let tls = match (args.tls_cert, args.tls_key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => TlsMode::Files { cert, key },
        (_, _, true) => TlsMode::SelfSigned,
        _ => TlsMode::Off,
    };
    let mut config = ServerConfig::new(args.listen, args.data_dir);
    config.node_key = args.node_key;
    config.database_url = args.database_url;
    config.tls = tls;
    config.insecure_http = args.insecure_http;
    config.trusted_proxies = args.trusted_proxies;
    config.session_ttl = args.session_ttl;
    config.pairing_ttl = args.pairing_ttl;
    config.heartbeat_interval = args.heartbeat_interval;
    config.pairing_interval = args.pairing_interval;
    config.shell_grace = args.shell_grace;
    config.public_url = args.public_url;
    config.auto_session_max_members = usize::from(args.auto_session_max_members);
    config.max_viewers = usize::from(args.max_viewers);
    config.max_connections_per_device = usize::from(args.max_connections_per_device);
    config.viewer_input_per_second = args.viewer_input_rate;
    config.screen_input_per_second = args.screen_input_rate;
    config.screen_codec = args.screen_codec;
    config.metrics_listen = args.metrics_listen;
    config.metrics_token = args
        .metrics_token
        .filter(|t| !t.is_empty())
        .map(tessera_core::api::SecretString::new);
    config.node_id = args.node_id;
    config.advertise_url = args.advertise_url;
    config.nats = args.nats_url.map(|url| tessera_server::config::NatsConfig {
        url,
        credentials: args.nats_creds,
        nkey: args.nats_nkey,
        tls_ca: args.nats_tls_ca,
        tls_client: args.nats_tls_cert.zip(args.nats_tls_key),
        require_tls: args.nats_require_tls,
    });

    if config.public_url.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            "no --public-url: devices' proofs of key possession are checked against the \
             Host header each request sends, which catches a mistyped server address but \
             not a server that replays a proof on purpose; set --public-url to the URL \
             devices use"
        );
    }
    let server = Server::start(config, Arc::new(SystemClock))
        .await
        .context("cannot start the server")?;
    let scheme = if server.tls_fingerprint.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}", server.local_addr());
    if let Some(fp) = &server.tls_fingerprint {
        say!("TLS certificate SHA-256 fingerprint: {fp}");
    }
    if let Some(admin) = &server.bootstrap {
        // Printed once, to the console only: never through the logger.
        let pin = server
            .tls_fingerprint
            .as_ref()
            .map(|fp| format!(" --tls-fingerprint {fp}"))
            .unwrap_or_default();
        say!(
            "\n================================================================\n\
             Tessera created the first administrator. This password is shown\n\
             once and is not stored anywhere in plaintext:\n\n  \
             username: {}\n  password: {}\n\n\
             Log in with:\n  tessera ctl login --server {url} --user {}{pin}\n\
             ================================================================\n",
            admin.username,
            admin.password.as_str(),
            admin.username,
        );
    }
    if let Some(addr) = server.metrics_addr() {
        say!("metrics on http://{addr}/metrics");
    }
    say!("tessera server listening on {url}");
    tracing::info!(%url, "listening");
    server
        .serve(async {
            shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// `--public-url`: an http(s) URL with a host, kept as given.
fn public_url(s: &str) -> Result<String, String> {
    match tessera_core::identity::audience_of(s) {
        Some(_) => Ok(s.to_owned()),
        None => Err(format!(
            "`{s}` is not an http:// or https:// URL with a host, e.g. https://tessera.example.com"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_url_must_be_an_http_url_with_a_host() {
        assert!(public_url("https://tessera.example.com").is_ok());
        assert!(public_url("http://10.0.0.5:8080/").is_ok());
        for bad in [
            "tessera.example.com",
            "10.0.0.5:8080",
            "ftp://x",
            "https://",
        ] {
            let e = public_url(bad).unwrap_err();
            assert!(e.contains("https://tessera.example.com"), "{bad}: {e}");
        }
    }
}
