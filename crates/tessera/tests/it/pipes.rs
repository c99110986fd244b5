//! The `tessera` binary writing into a pipe nobody reads any more
//! (`tessera ctl devices show ID | head -4`) stops quietly with status 0,
//! like a Unix tool, instead of panicking (issue 17, item 9).

use std::path::Path;
use std::process::{Command, Stdio};

use tessera_testkit::{ctl_admin, tessera_bin, TestDevice, TestServer};

/// Runs `tessera args…` with standard output a pipe whose read end is
/// already closed, so its first write fails with EPIPE: the exit status and
/// what it said on standard error.
fn run_into_a_closed_pipe(args: Vec<String>) -> (Option<i32>, String) {
    // The read end goes to `true`, which exits without reading: the write
    // end left here has no reader. (`std::io::pipe` is newer than the MSRV.)
    let mut gone = Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .expect("run true");
    let writer = gone.stdin.take().expect("pipe");
    gone.wait().expect("true exits");
    let out = Command::new(tessera_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run tessera");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl_args(config: &Path, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "ctl".to_owned(),
        "--config-dir".to_owned(),
        config.display().to_string(),
    ];
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "alpha").await;
    let cfg = ctl_admin(&s).await;
    let commands = vec![
        ctl_args(cfg.path(), &["devices", "show", &device.device_id]),
        ctl_args(cfg.path(), &["devices", "list"]),
        ctl_args(cfg.path(), &["devices", "list", "--json"]),
        ctl_args(cfg.path(), &["audit", "list"]),
        vec!["--help".to_owned()],
    ];
    for args in commands {
        let (code, stderr) = tokio::task::spawn_blocking({
            let args = args.clone();
            move || run_into_a_closed_pipe(args)
        })
        .await
        .unwrap();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
    }
    s.stop().await;
}
