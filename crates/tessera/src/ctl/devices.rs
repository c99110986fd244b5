//! `devices`, `pairing`, `enroll-token`, `events`.

use crate::output::say;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use tessera_core::api::{
    CreateEnrollmentTokenRequest, DeviceKeyView, DeviceView, EnrollmentTokenView, PairingView,
    TagsRequest,
};

use super::{Ctx, JsonFlag};
use crate::output::{self, opt};

#[derive(Subcommand, Debug)]
pub(super) enum DevicesCommand {
    /// List devices.
    List(JsonFlag),
    /// Show one device and its keys.
    Show {
        /// The device: its name, id (grouped or not) or an id prefix.
        device: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke a device: its connection is closed and its keys stop working.
    Revoke {
        /// The device: its name, id (grouped or not) or an id prefix.
        device: String,
        #[arg(long)]
        /// Why, for the audit log.
        reason: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Add (`+tag` or `tag`) and remove (`-tag`) tags.
    Tag {
        /// The device: its name, id (grouped or not) or an id prefix.
        device: String,
        /// Tags to add (`tag` or `+tag`) and remove (`-tag`).
        #[arg(required = true, allow_hyphen_values = true)]
        tags: Vec<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Issue a new key for a device (printed once).
    IssueKey {
        /// The device: its name, id (grouped or not) or an id prefix.
        device: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke one key of a device.
    RevokeKey {
        /// The device: its name, id (grouped or not) or an id prefix.
        device: String,
        /// The key's id, as `devices show` lists it.
        key_id: String,
        #[arg(long)]
        /// Why, for the audit log.
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum PairingCommand {
    /// Devices waiting for approval.
    List(JsonFlag),
    /// Approve the device showing this code.
    Approve {
        /// The code the device shows, `XXXX-XXXX`.
        user_code: String,
    },
    /// Deny the device showing this code.
    Deny {
        /// The code the device shows, `XXXX-XXXX`.
        user_code: String,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum TokenCommand {
    /// Create a token (printed once).
    Create {
        /// How many devices may use it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid, e.g. `1h`, `7d` (1 minute to 30 days).
        #[arg(long, default_value = "1h", value_parser = crate::duration::enrollment_token_ttl)]
        ttl: Duration,
        /// Tag for enrolled devices (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List tokens (never their secrets).
    List(JsonFlag),
    /// Revoke a token.
    Revoke {
        /// The token's id, as `enroll-token list` shows it.
        id: String,
    },
}

fn device_rows(devices: &[DeviceView]) -> Vec<Vec<String>> {
    devices
        .iter()
        .map(|d| {
            let state = if d.revoked {
                "revoked"
            } else if d.online {
                "online"
            } else {
                "offline"
            };
            vec![
                d.name.clone(),
                state.to_owned(),
                opt(d.last_seen_at.as_deref()),
                d.os.clone(),
                opt(d.agent_version.as_deref()),
                d.tags.join(","),
                d.fingerprint.chars().take(19).collect::<String>() + "…",
                d.id.clone(),
            ]
        })
        .collect()
}

const DEVICE_HEADERS: [&str; 8] = [
    "NAME",
    "STATE",
    "LAST SEEN",
    "OS",
    "AGENT",
    "TAGS",
    "FINGERPRINT",
    "ID",
];

fn show_devices(devices: &[DeviceView], json: bool) -> anyhow::Result<()> {
    if json {
        output::json(&devices)
    } else {
        output::table(&DEVICE_HEADERS, &device_rows(devices));
        Ok(())
    }
}

const KEY_HEADERS: [&str; 6] = [
    "KEY ID",
    "PREFIX",
    "STATE",
    "CREATED",
    "LAST USED",
    "REVOKED BECAUSE",
];

fn key_rows(keys: &[DeviceKeyView]) -> Vec<Vec<String>> {
    keys.iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.prefix.clone() + "…",
                k.state.clone(),
                k.created_at.clone(),
                opt(k.last_used_at.as_deref()),
                opt(k.revoked_reason.as_deref()),
            ]
        })
        .collect()
}

pub(super) async fn devices(ctx: &Ctx, cmd: DevicesCommand) -> anyhow::Result<ExitCode> {
    let c = ctx.client()?;
    match cmd {
        DevicesCommand::List(out) => show_devices(&c.list_devices().await?, out.json)?,
        DevicesCommand::Show { device, out } => {
            let d = c.device(&c.resolve_device(&device).await?).await?;
            let keys = c.device_keys(&d.id).await.unwrap_or_default();
            if out.json {
                output::json(&serde_json::json!({ "device": d, "keys": keys }))?;
            } else {
                let rows = [
                    ("Name", d.name.clone()),
                    ("Id", d.id.clone()),
                    ("Fingerprint", d.fingerprint.clone()),
                    (
                        "State",
                        if d.revoked {
                            "revoked".into()
                        } else if d.online {
                            "online".into()
                        } else {
                            "offline".to_owned()
                        },
                    ),
                    ("Hostname", d.hostname.clone()),
                    ("OS", d.os.clone()),
                    ("Agent", opt(d.agent_version.as_deref())),
                    ("Last seen", opt(d.last_seen_at.as_deref())),
                    ("Last address", opt(d.last_ip.as_deref())),
                    ("Tags", d.tags.join(",")),
                    (
                        "Enrolled",
                        format!(
                            "{} via {} by {}",
                            d.created_at, d.enrolled_via, d.enrolled_by
                        ),
                    ),
                    ("Owner", d.owner_user_id.clone()),
                    ("Revoked", opt(d.revoked_reason.as_deref())),
                ];
                for (k, v) in rows {
                    say!("{k:<13} {v}");
                }
                say!();
                output::table(&KEY_HEADERS, &key_rows(&keys));
            }
        }
        DevicesCommand::Revoke {
            device,
            reason,
            out,
        } => {
            let d = c
                .revoke_device(&c.resolve_device(&device).await?, reason)
                .await?;
            show_devices(&[d], out.json)?;
        }
        DevicesCommand::Tag { device, tags, out } => {
            let mut req = TagsRequest::default();
            for t in tags {
                match t.strip_prefix('-') {
                    Some(r) => req.remove.push(r.to_owned()),
                    None => req.add.push(t.trim_start_matches('+').to_owned()),
                }
            }
            let d = c
                .tag_device(&c.resolve_device(&device).await?, &req)
                .await?;
            show_devices(&[d], out.json)?;
        }
        DevicesCommand::IssueKey { device, out } => {
            let k = c
                .issue_device_key(&c.resolve_device(&device).await?)
                .await?;
            if out.json {
                output::json(&k)?;
            } else {
                output::table(&KEY_HEADERS, &key_rows(std::slice::from_ref(&k.key)));
                say!("\nDevice key (shown once): {}", k.device_key.expose());
            }
        }
        DevicesCommand::RevokeKey {
            device,
            key_id,
            reason,
        } => {
            let device = c.resolve_device(&device).await?;
            let k = c.revoke_device_key(&device, &key_id, reason).await?;
            output::table(&KEY_HEADERS, &key_rows(&[k]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn pairing_rows(p: &[PairingView]) -> Vec<Vec<String>> {
    p.iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.hostname.clone(),
                p.os.clone(),
                opt(p.source_ip.as_deref()),
                p.requested_at.clone(),
                p.fingerprint.clone(),
            ]
        })
        .collect()
}

const PAIRING_HEADERS: [&str; 6] = ["NAME", "HOSTNAME", "OS", "FROM", "REQUESTED", "FINGERPRINT"];

pub(super) async fn pairing(ctx: &Ctx, cmd: PairingCommand) -> anyhow::Result<ExitCode> {
    let c = ctx.client()?;
    match cmd {
        PairingCommand::List(out) => {
            let p = c.pairings().await?;
            if out.json {
                output::json(&p)?;
            } else {
                output::table(&PAIRING_HEADERS, &pairing_rows(&p));
                if !p.is_empty() {
                    say!("\nApprove with the code shown on the device: tessera ctl pairing approve XXXX-XXXX");
                }
            }
        }
        PairingCommand::Approve { user_code } => {
            let p = c.decide_pairing(&user_code, true).await?;
            say!(
                "Approved {} ({}), fingerprint {}.",
                p.name,
                p.hostname,
                p.fingerprint
            );
        }
        PairingCommand::Deny { user_code } => {
            let p = c.decide_pairing(&user_code, false).await?;
            say!("Denied {} ({}).", p.name, p.hostname);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token_rows(t: &[EnrollmentTokenView]) -> Vec<Vec<String>> {
    t.iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.prefix.clone() + "…",
                t.state.clone(),
                format!("{}/{}", t.uses_remaining, t.uses_total),
                t.expires_at.clone(),
                t.tags.join(","),
            ]
        })
        .collect()
}

const TOKEN_HEADERS: [&str; 6] = ["ID", "PREFIX", "STATE", "USES LEFT", "EXPIRES", "TAGS"];

pub(super) async fn tokens(ctx: &Ctx, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let c = ctx.client()?;
    match cmd {
        TokenCommand::Create {
            uses,
            ttl,
            tags,
            out,
        } => {
            let t = c
                .create_enrollment_token(&CreateEnrollmentTokenRequest {
                    uses,
                    ttl_seconds: ttl.as_secs(),
                    tags,
                })
                .await?;
            if out.json {
                output::json(&t)?;
            } else {
                output::table(&TOKEN_HEADERS, &token_rows(std::slice::from_ref(&t.token)));
                say!("\nEnrollment token (shown once): {}", t.secret.expose());
                say!(
                    "Enroll a device with: tessera agent enroll --server URL --token {}",
                    t.secret.expose()
                );
            }
        }
        TokenCommand::List(out) => {
            let t = c.enrollment_tokens().await?;
            if out.json {
                output::json(&t)?;
            } else {
                output::table(&TOKEN_HEADERS, &token_rows(&t));
            }
        }
        TokenCommand::Revoke { id } => {
            c.revoke_enrollment_token(&id).await?;
            say!("Revoked enrollment token {id}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
