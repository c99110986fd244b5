//! `tessera`: one binary for the server, the agent and the operator CLI.
//! Argument parsing and wiring only; the work happens in the library crates.

mod agent;
mod connect;
mod ctl;
mod device;
mod duration;
mod hints;
mod join;
mod manuals;
mod output;
mod progress;
mod server;
mod session_shell;
mod terminal;
mod view;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::note;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Secure sessions between people and devices"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Tessera server.
    Server(Box<server::ServerArgs>),
    /// Operator command line: log in, manage users and devices, read the audit log.
    Ctl(ctl::CtlArgs),
    /// The device agent: enroll this machine and keep it connected.
    Agent(agent::AgentArgs),
    /// Open a shell on a device (or join a session) in this terminal.
    Connect(connect::ConnectArgs),
    /// Show a device's screen in a window (or write one picture with --snapshot).
    View(view::ViewArgs),
    /// Verify and pin your other devices' keys (this device's trust store).
    Trust(device::TrustArgs),
    /// Let trusted devices join this one into their sessions automatically.
    Grant(device::GrantArgs),
    /// Start an end-to-end encrypted session with trusted devices.
    Session(device::SessionArgs),
    /// Send files and folders to trusted devices, end to end encrypted.
    Send(device::SendArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or
    /// powershell (e.g. `tessera completions bash > /etc/bash_completion.d/tessera`).
    Completions(manuals::CompletionsArgs),
    /// Print the man page, or write one page per command with --dir.
    Man(manuals::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            note!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(*args).await,
            Command::Ctl(args) => ctl::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::View(args) => view::run(args).await,
            Command::Trust(args) => device::trust(args).await,
            Command::Grant(args) => device::grant(args).await,
            Command::Session(args) => device::session(args).await,
            Command::Send(args) => device::send(args).await,
            Command::Completions(args) => manuals::completions(args),
            Command::Man(args) => manuals::man(args),
        }
    });
    match result {
        Ok(code) => code,
        // The reader of the output left (`| head`): not an error to report.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            note!("error: {e:#}");
            for hint in hints::for_error(&e) {
                note!("  {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command and every argument of `tessera … --help` says what it
    /// is for: the help is the only manual many users read, and the man
    /// pages and completions are generated from it.
    #[test]
    fn every_command_and_argument_has_help_text() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "tessera", &mut missing);
        assert!(
            missing.is_empty(),
            "no help text for:\n{}",
            missing.join("\n")
        );
    }

    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        if cmd.get_about().is_none() && cmd.get_long_about().is_none() {
            missing.push(path.to_owned());
        }
        for arg in cmd.get_arguments() {
            if arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} --{}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
}
