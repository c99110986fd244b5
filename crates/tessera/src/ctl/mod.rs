//! `tessera ctl`: the operator command line. Each subcommand is one API call
//! (or a short walk of pages) plus its rendering.

mod audit;
mod devices;
mod grants;
mod session;
mod sessions;
mod users;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tessera_client::{ApiClient, TlsTrust};
use tessera_core::api::SecretString;

#[derive(Args, Debug)]
pub(crate) struct CtlArgs {
    /// Directory holding the login (default: the user's config dir).
    #[arg(long, env = "TESSERA_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Log in to a server and remember the session.
    Login(session::LoginArgs),
    /// End the session on the server and forget it here.
    Logout,
    /// Show who you are logged in as.
    Whoami(JsonFlag),
    /// Change your password (ends your other sessions).
    Passwd(session::PasswdArgs),
    /// Manage operator accounts.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// List, inspect, tag and revoke devices and their keys.
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
    /// Approve or deny devices pairing by device code.
    #[command(subcommand)]
    Pairing(devices::PairingCommand),
    /// Create, list and revoke enrollment tokens.
    #[command(subcommand, name = "enroll-token")]
    EnrollToken(devices::TokenCommand),
    /// List, show and end sessions.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Create a support code for an attended session.
    #[command(subcommand, name = "support-code")]
    SupportCode(sessions::SupportCodeCommand),
    /// The session policy.
    #[command(subcommand)]
    Policy(sessions::PolicyCommand),
    /// Automatic-join grants between devices: list and revoke.
    #[command(subcommand)]
    Grants(grants::GrantsCommand),
}

#[derive(Args, Debug)]
pub(crate) struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `login` remembers, in `<config-dir>/ctl.json` (mode 0600).
#[derive(Serialize, Deserialize)]
pub(crate) struct Saved {
    pub server: String,
    pub token: SecretString,
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

impl Saved {
    pub(crate) fn trust(&self) -> TlsTrust {
        trust_from(self.tls_fingerprint.clone(), self.ca_cert.clone())
    }
}

pub(crate) fn trust_from(fingerprint: Option<String>, ca: Option<PathBuf>) -> TlsTrust {
    match (fingerprint, ca) {
        (Some(fp), _) => TlsTrust::Fingerprint(fp),
        (None, Some(ca)) => TlsTrust::CaFile(ca),
        (None, None) => TlsTrust::PublicRoots,
    }
}

pub(crate) struct Ctx {
    config_dir: PathBuf,
}

impl Ctx {
    /// The given directory, or the user's config dir.
    pub(crate) fn from_dir(dir: Option<PathBuf>) -> anyhow::Result<Ctx> {
        let config_dir = match dir {
            Some(d) => d,
            None => dirs::config_dir()
                .ok_or_else(|| anyhow!("no config directory; pass --config-dir"))?
                .join("tessera"),
        };
        Ok(Ctx { config_dir })
    }

    fn path(&self) -> PathBuf {
        self.config_dir.join("ctl.json")
    }

    pub(crate) fn load(&self) -> anyhow::Result<Saved> {
        let path = self.path();
        let text = std::fs::read_to_string(&path)
            .map_err(|_| anyhow!("not logged in: run `tessera ctl login --server URL` first"))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged; log in again", path.display()))
    }

    pub(crate) fn save(&self, saved: &Saved) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.config_dir)
            .with_context(|| format!("cannot create {}", self.config_dir.display()))?;
        let path = self.path();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        f.write_all(serde_json::to_string_pretty(saved)?.as_bytes())?;
        Ok(())
    }

    pub(crate) fn forget(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A client authenticated with the saved login.
    pub(crate) fn client(&self) -> anyhow::Result<ApiClient> {
        let saved = self.load()?;
        Ok(ApiClient::new(&saved.server, &saved.trust())?.with_token(saved.token))
    }
}

/// Reads one line of stdin (for `--password-stdin`), without the newline.
pub(crate) fn read_stdin_line() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = line.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(anyhow!("expected a password on standard input"));
    }
    Ok(SecretString::new(trimmed))
}

/// Prompts on the terminal without echo.
pub(crate) fn prompt_secret(prompt: &str) -> anyhow::Result<SecretString> {
    let p =
        rpassword::prompt_password(prompt).context("cannot read a password from the terminal")?;
    Ok(SecretString::new(p))
}

pub(crate) async fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::from_dir(args.config_dir)?;
    match args.command {
        CtlCommand::Login(a) => session::login(&ctx, a).await,
        CtlCommand::Logout => session::logout(&ctx).await,
        CtlCommand::Whoami(f) => session::whoami(&ctx, f.json).await,
        CtlCommand::Passwd(a) => session::passwd(&ctx, a).await,
        CtlCommand::Users(c) => users::run(&ctx, c).await,
        CtlCommand::Audit(c) => audit::run(&ctx, c).await,
        CtlCommand::Devices(c) => devices::devices(&ctx, c).await,
        CtlCommand::Pairing(c) => devices::pairing(&ctx, c).await,
        CtlCommand::EnrollToken(c) => devices::tokens(&ctx, c).await,
        CtlCommand::Sessions(c) => sessions::sessions(&ctx, c).await,
        CtlCommand::SupportCode(c) => sessions::support_code(&ctx, c).await,
        CtlCommand::Policy(c) => sessions::policy(&ctx, c).await,
        CtlCommand::Grants(c) => grants::run(&ctx, c).await,
    }
}
