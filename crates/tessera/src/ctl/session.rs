//! `login`, `logout`, `whoami`, `passwd`.

use crate::output::say;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tessera_client::ApiClient;
use tessera_core::api::ChangePasswordRequest;

use super::{prompt_secret, read_stdin_line, trust_from, Ctx, Saved};
use crate::output;

#[derive(Args, Debug)]
pub(super) struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8080
    #[arg(long, env = "TESSERA_SERVER")]
    server: String,
    /// Username.
    #[arg(long, short, default_value = "admin")]
    user: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Trust exactly the server certificate with this SHA-256 fingerprint.
    #[arg(long)]
    tls_fingerprint: Option<String>,
    /// Trust server certificates issued by the CA(s) in this PEM file.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

pub(super) async fn login(ctx: &Ctx, a: LoginArgs) -> anyhow::Result<ExitCode> {
    let password = if a.password_stdin {
        read_stdin_line()?
    } else {
        prompt_secret(&format!("Password for {}: ", a.user))?
    };
    let trust = trust_from(a.tls_fingerprint.clone(), a.ca_cert.clone());
    let client = ApiClient::new(&a.server, &trust)?;
    let resp = client.login(&a.user, password).await?;
    ctx.save(&Saved {
        server: a.server,
        token: resp.token,
        tls_fingerprint: a.tls_fingerprint,
        ca_cert: a.ca_cert,
    })?;
    say!(
        "Logged in as {} ({}); session expires {}.",
        resp.user.username,
        resp.user.role.as_str(),
        resp.expires_at
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn logout(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let result = client.logout().await;
    // Forget the token locally whatever the server said: it is useless now
    // or was already.
    ctx.forget()?;
    match result {
        Ok(()) => say!("Logged out."),
        Err(e) if tessera_client::is_unauthorized(&e) => {
            say!("Logged out (the session had already ended).")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn whoami(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let me = ctx.client()?.whoami().await?;
    if json {
        output::json(&me)?;
    } else {
        let perms: Vec<&str> = me.permissions.iter().map(|p| p.as_str()).collect();
        output::table(
            &["USER", "ROLE", "PERMISSIONS", "USER ID"],
            &[vec![
                me.username,
                me.role.as_str().to_owned(),
                perms.join(","),
                me.user_id,
            ]],
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub(super) struct PasswdArgs {
    /// Read the current and the new password from the first two lines of
    /// standard input.
    #[arg(long)]
    password_stdin: bool,
}

pub(super) async fn passwd(ctx: &Ctx, a: PasswdArgs) -> anyhow::Result<ExitCode> {
    let (current, new) = if a.password_stdin {
        (read_stdin_line()?, read_stdin_line()?)
    } else {
        let current = prompt_secret("Current password: ")?;
        let new = prompt_secret("New password: ")?;
        let again = prompt_secret("New password again: ")?;
        if new != again {
            anyhow::bail!("the new passwords do not match");
        }
        (current, new)
    };
    let resp = ctx
        .client()?
        .change_password(&ChangePasswordRequest {
            current_password: current,
            new_password: new,
        })
        .await?;
    say!(
        "Password changed; {} other session(s) ended.",
        resp.revoked_sessions
    );
    Ok(ExitCode::SUCCESS)
}
