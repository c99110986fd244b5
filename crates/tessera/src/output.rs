//! What the `tessera` binary prints: its lines on standard output
//! ([`say!`]), its notes on standard error ([`note!`]), and the tables and
//! JSON of `tessera ctl`.
//!
//! Standard output is often a pipe to `head` or `grep -m1`, which closes it
//! once it has read enough. Rust ignores SIGPIPE, so a write then fails with
//! `BrokenPipe`, and `println!` panics on that. Every line goes through
//! [`line`] instead, which stops the command quietly with status 0 when
//! nobody reads any more, like ripgrep does. SIGPIPE stays ignored on
//! purpose: the same process runs the server, the agent's PTYs and
//! connections and consent commands on pipes, where a peer going away must
//! be an error the code handles, not a signal that kills it.

use std::fmt;
use std::io::{self, Write};

use serde::Serialize;

/// `println!` for the binary's output: stops quietly once the reader is
/// gone (see the module docs).
macro_rules! say {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// `eprintln!` that never panics: when even standard error is gone there
/// is nobody left to tell.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::output::note_line(format_args!($($arg)*))
    };
}
pub(crate) use note;

/// Writes one line to standard output (see [`say!`]).
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        unwritable(&e);
    }
}

/// Writes `text` without a newline and flushes it (a question before an
/// answer is read).
pub(crate) fn prompt(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        unwritable(&e);
    }
}

/// Writes one line to standard error, ignoring failure.
pub(crate) fn note_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Whether `e` (or what caused it) is a write to a reader that went away.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

/// Standard output cannot be written: a reader that left ends the command
/// quietly and successfully; any other failure (a full disk) is an error.
fn unwritable(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    note!("error: cannot write the output: {e}");
    std::process::exit(1);
}

/// Prints `rows` under `headers`, columns padded to their widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        say!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub(crate) fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `-` for an absent value.
pub(crate) fn opt(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// Who may auto-join whom.
pub(crate) fn grants(grants: &[tessera_core::api::GrantView]) {
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            vec![
                g.granter_name.clone().unwrap_or_else(|| g.granter.clone()),
                g.grantee_name.clone().unwrap_or_else(|| g.grantee.clone()),
                g.scopes.join(","),
                g.state.clone(),
                g.expires_at.clone(),
                opt(g.last_used_at.as_deref()),
                g.id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "GRANTER",
            "MAY BE JOINED BY",
            "SCOPES",
            "STATE",
            "EXPIRES",
            "LAST USED",
            "ID",
        ],
        &rows,
    );
}
