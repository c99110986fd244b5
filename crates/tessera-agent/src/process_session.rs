//! Ending a shell's whole terminal session, background jobs included.
//!
//! A shell in a PTY leads a session of its own. A background job
//! (`sleep 3333 &`) stays in that session even when job control gives it a
//! process group of its own, so ending the shell's group alone leaves it
//! running. Every member gets SIGHUP, then SIGKILL after a short grace. A
//! process that starts a session of its own (a daemon) has left on purpose.

use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long the session's processes have to end on SIGHUP before SIGKILL.
pub const HANGUP_GRACE: Duration = Duration::from_millis(300);

/// Ends the session `leader` leads: SIGHUP now, SIGKILL to whatever is left
/// (or forked meanwhile) after [`HANGUP_GRACE`], on a thread of its own so
/// the caller (often a `Drop`) does not wait. Ids below 2 are never
/// signalled: 0 and 1 are not a shell's.
pub fn end(leader: u32) {
    let Some(sid) = i32::try_from(leader).ok().filter(|p| *p > 1) else {
        return;
    };
    signal(sid, Signal::SIGHUP);
    std::thread::spawn(move || {
        std::thread::sleep(HANGUP_GRACE);
        signal(sid, Signal::SIGKILL);
    });
}

/// Sends `signal` to the group `sid` leads and to every process in session
/// `sid`.
fn signal(sid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(sid), signal);
    for pid in members(sid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// The processes in session `sid` (Linux `/proc`; elsewhere none are found
/// and the process group alone is signalled). None for an id below 1: 0
/// stands for "led from outside this pid namespace", never a shell's.
fn members(sid: i32) -> Vec<i32> {
    if sid < 1 {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| session_of(*pid) == Some(sid))
        .collect()
}

/// The session id of `pid` (field 6 of `/proc/<pid>/stat`).
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces, in parentheses:
    // state, ppid, pgrp, session.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_read_from_proc_and_ended_whole() {
        // This process's own session may be led from outside its pid
        // namespace (a container's), which /proc reports as 0; a process
        // started with setsid leads one of its own, as a shell does.
        let me = std::process::id() as i32;
        assert_eq!(
            session_of(me),
            nix::unistd::getsid(None).ok().map(Pid::as_raw)
        );
        // `trap '' HUP` makes the leader outlive SIGHUP, so only the
        // SIGKILL after the grace ends it.
        let mut child = std::process::Command::new("setsid")
            .args(["sh", "-c", "trap '' HUP; sleep 30 & wait"])
            .spawn()
            .expect("setsid runs");
        let lead = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while members(lead).len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = members(lead);
        assert!(before.contains(&lead) && before.len() >= 2, "{before:?}");
        end(child.id());
        let status = child.wait().expect("the child is reaped");
        assert!(!status.success(), "the session's leader was killed");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !members(lead).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(members(lead).is_empty(), "the background job ended too");
    }

    #[test]
    fn no_session_id_below_one_is_searched_and_none_below_two_signalled() {
        assert!(members(0).is_empty());
        assert!(members(-1).is_empty());
        // Would signal this process's group if it were not refused.
        end(0);
        end(1);
    }
}
