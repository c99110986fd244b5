//! `tessera server`.

use crate::output::say;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use tessera_core::SystemClock;
use tessera_server::{Server, ServerConfig, TlsMode};

#[derive(Args, Debug)]
pub(crate) struct ServerArgs {
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
    #[arg(long, env = "TESSERA_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// How long a managed shell outlives its last viewer (`connect --keep`
    /// leaves it running on purpose); a `connect --resume` within it finds it.
    #[arg(long, env = "TESSERA_SHELL_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    shell_grace: Duration,
    /// RFC 8628 polling interval given to pairing devices.
    #[arg(long, env = "TESSERA_PAIRING_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
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
    /// URL people and devices use to reach this server (for pairing links);
    /// default: from the request's Host header.
    #[arg(long, env = "TESSERA_PUBLIC_URL")]
    public_url: Option<String>,
    /// How long a pairing (its device code and user code) waits for an
    /// operator's approval, from 1 minute to 1 day, e.g. `30m`.
    #[arg(long, env = "TESSERA_PAIRING_TTL", default_value = "10m", value_parser = pairing_ttl)]
    pairing_ttl: Duration,
    /// Lifetime of an operator login, e.g. `12h`.
    #[arg(long, env = "TESSERA_SESSION_TTL", default_value = "12h", value_parser = humantime::parse_duration)]
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

pub(crate) async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
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
    config.heartbeat_interval = args.heartbeat_interval.max(Duration::from_millis(100));
    config.pairing_interval = args.pairing_interval.max(Duration::from_secs(1));
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

/// The shortest and longest pairing lifetime: long enough to walk to the
/// approval page, short enough that a forgotten code does not linger.
const PAIRING_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(24 * 3600));

/// `--pairing-ttl`: a human duration within [`PAIRING_TTL_RANGE`].
fn pairing_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. `10m` or `1h`)"))?;
    let (min, max) = PAIRING_TTL_RANGE;
    if d < min || d > max {
        return Err(format!(
            "a pairing must live between 1 minute and 1 day, not {}",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_ttl_takes_human_durations_within_a_minute_and_a_day() {
        assert_eq!(pairing_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(pairing_ttl("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(pairing_ttl("1day"), Ok(Duration::from_secs(86_400)));
        let short = pairing_ttl("5s").unwrap_err();
        assert!(short.contains("between 1 minute and 1 day"), "{short}");
        assert!(pairing_ttl("2days").is_err());
        assert!(pairing_ttl("soon").unwrap_err().contains("e.g. `10m`"));
    }
}
