//! `tessera completions` and `tessera man`: shell completions and man pages
//! generated from the same clap definition that parses the arguments, so
//! they can never describe another version of the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::output::say;

#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for (bash, zsh, fish, elvish or powershell).
    shell: Shell,
}

#[derive(Args, Debug)]
pub(crate) struct ManArgs {
    /// Write one page per command (`tessera.1`, `tessera-ctl-login.1`, …)
    /// into this directory instead of printing `tessera.1`.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on standard output.
pub(crate) fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "tessera", &mut script);
    // A closed pipe bubbles up as BrokenPipe, which `main` ends quietly.
    std::io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `tessera.1`, or writes every command's page into `--dir`.
pub(crate) fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = crate::Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            say!("Wrote the man pages into {}.", dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().lock().write_all(&page)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
