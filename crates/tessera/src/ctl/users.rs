//! `users add|list|set-role|disable|enable`.

use crate::output::say;
use std::process::ExitCode;

use clap::Subcommand;
use tessera_client::ApiClient;
use tessera_core::api::{CreateUserRequest, UpdateUserRequest, UserView};
use tessera_core::roles::Role;

use super::{read_stdin_line, Ctx, JsonFlag};
use crate::output;

#[derive(Subcommand, Debug)]
pub(super) enum UsersCommand {
    /// Create a user. Without --password-stdin the server generates a
    /// password and it is printed once.
    Add {
        /// The new user's login name.
        username: String,
        /// What the user may do: admin, operator or viewer.
        #[arg(long, value_parser = parse_role, default_value = "operator")]
        role: Role,
        /// Read the new user's password from the first line of standard
        /// input instead of letting the server generate one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List users.
    List(JsonFlag),
    /// Change a user's role.
    SetRole {
        /// The user's name.
        user: String,
        /// The new role: admin, operator or viewer.
        #[arg(value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Disable a user and end all their sessions.
    Disable {
        /// The user's name.
        user: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Enable a disabled user.
    Enable {
        /// The user's name.
        user: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "role must be admin, operator or viewer".to_owned())
}

fn rows(users: &[UserView]) -> Vec<Vec<String>> {
    users
        .iter()
        .map(|u| {
            vec![
                u.username.clone(),
                u.role.as_str().to_owned(),
                if u.disabled { "disabled" } else { "active" }.to_owned(),
                u.created_at.clone(),
                u.id.clone(),
            ]
        })
        .collect()
}

fn show(users: &[UserView], json: bool) -> anyhow::Result<()> {
    if json {
        output::json(&users)
    } else {
        output::table(
            &["USERNAME", "ROLE", "STATE", "CREATED", "ID"],
            &rows(users),
        );
        Ok(())
    }
}

pub(super) async fn run(ctx: &Ctx, cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match cmd {
        UsersCommand::Add {
            username,
            role,
            password_stdin,
            out,
        } => {
            let password = if password_stdin {
                Some(read_stdin_line()?)
            } else {
                None
            };
            let resp = client
                .create_user(&CreateUserRequest {
                    username,
                    role,
                    password,
                })
                .await?;
            if out.json {
                output::json(&resp)?;
            } else {
                show(std::slice::from_ref(&resp.user), false)?;
                if let Some(p) = &resp.initial_password {
                    say!("\nInitial password (shown once): {}", p.expose());
                }
            }
        }
        UsersCommand::List(out) => show(&client.list_users().await?, out.json)?,
        UsersCommand::SetRole { user, role, out } => {
            update(&client, &user, Some(role), None, out.json).await?;
        }
        UsersCommand::Disable { user, out } => {
            update(&client, &user, None, Some(true), out.json).await?;
        }
        UsersCommand::Enable { user, out } => {
            update(&client, &user, None, Some(false), out.json).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Changes `user`'s role or whether it is disabled, and shows the result.
async fn update(
    client: &ApiClient,
    user: &str,
    role: Option<Role>,
    disabled: Option<bool>,
    json: bool,
) -> anyhow::Result<()> {
    let req = UpdateUserRequest { role, disabled };
    show(&[client.update_user(user, &req).await?], json)
}
