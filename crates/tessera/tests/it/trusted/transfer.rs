//! File transfer in automatic sessions: large files in bounded memory, a
//! cancelled transfer leaves nothing under the final name, a refused file
//! fails the transfer.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tessera_core::trust::Scope;

use tessera_testkit::{
    device_cmd, eventually, peak_rss, tessera_bin, AgentProcess, TestDevice, TestServer,
};

use super::*;

/// Writes `size` bytes of pseudo-random content (BLAKE3's output stream)
/// and returns their hash.
fn random_file(path: &Path, size: u64) -> blake3::Hash {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut stream = blake3::Hasher::new()
        .update(b"tessera test file")
        .finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    hasher.finalize()
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    h.finalize()
}

/// Spawns `tessera send` as `from`, and samples its peak memory until it
/// exits; returns (exit code, stdout, stderr, peak RSS in bytes).
async fn send_measured(from: &TestDevice, to: &str, path: &Path) -> (i32, String, String, u64) {
    let mut child = tokio::process::Command::new(tessera_bin())
        .args(["send", to, path.to_str().unwrap(), "--quiet"])
        .env("TESSERA_AGENT_STATE_DIR", from.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut peak = 0;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let io = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut o, mut e) = (String::new(), String::new());
        let _ = tokio::join!(stdout.read_to_string(&mut o), stderr.read_to_string(&mut e));
        (o, e)
    });
    let status = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if !status.contains("State:\tZ") {
                    peak = peak.max(peak_rss(pid));
                }
            }
            match tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
                Ok(status) => return status.unwrap(),
                Err(_) => continue,
            }
        }
    })
    .await
    .expect("send finishes");
    let (o, e) = io.await.unwrap();
    (status.code().unwrap_or(-1), o, e, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_through_in_bounded_memory_and_verifies() {
    const SIZE: u64 = 1 << 30;
    const BOUND: u64 = 96 << 20;
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let agent_b = AgentProcess::start(&s, &b).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("disk.img");
    let want = random_file(&file, SIZE);

    let started = std::time::Instant::now();
    let (code, out, err, sender_peak) = send_measured(&a, &b.device_id, &file).await;
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    let receiver_peak = peak_rss(agent_b.pid());
    let test_peak = peak_rss(std::process::id());
    eprintln!(
        "1 GiB: {:.1} s, sender peak {} MiB, receiver peak {} MiB, server+test peak {} MiB",
        took.as_secs_f64(),
        sender_peak >> 20,
        receiver_peak >> 20,
        test_peak >> 20
    );
    assert!(sender_peak < BOUND, "sender peak {} MiB", sender_peak >> 20);
    assert!(
        receiver_peak < BOUND,
        "receiver peak {} MiB",
        receiver_peak >> 20
    );
    // The relay (in this test process) holds bounded queues, not the file.
    assert!(test_peak < 2 * BOUND, "server peak {} MiB", test_peak >> 20);
    let got = inbox(&b).join("disk.img");
    assert_eq!(std::fs::metadata(&got).unwrap().len(), SIZE);
    assert_eq!(hash_file(&got), want);
    std::fs::remove_file(got).unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transfer_leaves_no_file_under_its_final_name() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("movie.mkv");
    random_file(&file, 512 << 20);

    for signal in ["-INT", "-KILL"] {
        let mut child = tokio::process::Command::new(tessera_bin())
            .args(["send", &b.device_id, file.to_str().unwrap(), "--quiet"])
            .env("TESSERA_AGENT_STATE_DIR", a.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Wait until part of it has arrived (under a temporary name).
        let dir = inbox(&b);
        assert!(
            eventually(Duration::from_secs(30), || {
                let dir = dir.clone();
                async move {
                    std::fs::read_dir(&dir).is_ok_and(|entries| {
                        entries.flatten().any(|e| {
                            e.file_name().to_string_lossy().contains("tessera-partial")
                                && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
                        })
                    })
                }
            })
            .await,
            "a partial file appears"
        );
        std::process::Command::new("kill")
            .args([signal, &child.id().unwrap().to_string()])
            .status()
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("sender stops")
            .unwrap();
        assert!(!out.success(), "{signal}");
        assert!(
            eventually(Duration::from_secs(10), || {
                let dir = dir.clone();
                async move { files_under(&dir).is_empty() }
            })
            .await,
            "{signal}: nothing left in the inbox: {:?}",
            files_under(&dir).keys().collect::<Vec<_>>()
        );
        assert!(!dir.join("movie.mkv").exists());
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_member_refuses_fails_the_transfer_for_the_sender() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    // Something on B planted a link in its inbox where the folder would go.
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(inbox(&b)).unwrap();
    std::os::unix::fs::symlink(outside.path(), inbox(&b).join("docs")).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("docs")).unwrap();
    std::fs::write(src.path().join("docs/a.txt"), b"a").unwrap();
    std::fs::write(src.path().join("ok.txt"), b"ok").unwrap();
    let items =
        tessera_agent::files::walk(&[src.path().join("ok.txt"), src.path().join("docs")]).unwrap();
    let mut session = create(&a, &[&b.device_id], Scope::Files, false).await;
    let err = session
        .send_files(&items, |_| {})
        .await
        .expect_err("b refuses one file");
    assert!(err.to_string().contains("refused the transfer"), "{err}");
    session.end().await;
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    s.stop().await;
}

/// `tessera send` as `from`; returns (exit code, stdout + stderr).
async fn send(from: &TestDevice, to: &str, path: &Path) -> (i32, String) {
    let (code, out, err) =
        device_cmd(from, &["send", to, path.to_str().unwrap(), "--quiet"], None).await;
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_twice_is_not_written_again_and_the_sender_hears_what_was_renamed() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("notes.txt");
    std::fs::write(&file, b"first").unwrap();

    let (code, out) = send(&a, &b.device_id, &file).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Sent 1 file(s)"), "{out}");
    assert!(!out.contains("already had"), "{out}");
    assert_eq!(files_under(&inbox(&b)).len(), 1);

    // The same file again: nothing new in the inbox, and the sender is told.
    let (code, out) = send(&a, &b.device_id, &file).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("already had notes.txt: identical, not written again."),
        "{out}"
    );
    assert_eq!(
        files_under(&inbox(&b)),
        HashMap::from([("notes.txt".to_owned(), b"first".to_vec())])
    );

    // Another file of that name: saved under a new one, which the sender
    // reads.
    std::fs::write(&file, b"second").unwrap();
    let (code, out) = send(&a, &b.device_id, &file).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("already had a different notes.txt: saved this one as notes (1).txt."),
        "{out}"
    );
    assert_eq!(
        files_under(&inbox(&b)),
        HashMap::from([
            ("notes.txt".to_owned(), b"first".to_vec()),
            ("notes (1).txt".to_owned(), b"second".to_vec()),
        ])
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_land_in_the_download_folder_unless_an_inbox_is_named() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("photo.jpg");
    std::fs::write(&file, b"jpeg").unwrap();

    // No inbox named: Tessera in the (test's own) home's Downloads.
    let agent_b = AgentProcess::start_with(&s, &b, None).await;
    let (code, out) = send(&a, &b.device_id, &file).await;
    assert_eq!(code, 0, "{out}");
    let downloads = b.home().join("Downloads/Tessera");
    assert_eq!(std::fs::read(downloads.join("photo.jpg")).unwrap(), b"jpeg");
    drop(agent_b);
    let (state, id) = (s.state.clone(), b.device_id.clone());
    assert!(
        eventually(Duration::from_secs(10), || {
            let (state, id) = (state.clone(), id.clone());
            async move { !state.registry().is_connected(&id) }
        })
        .await,
        "the first agent is gone"
    );

    // TESSERA_INBOX names another folder.
    let elsewhere = src.path().join("received");
    let _agent_b = AgentProcess::start_with(&s, &b, Some(&elsewhere)).await;
    let (code, out) = send(&a, &b.device_id, &file).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read(elsewhere.join("photo.jpg")).unwrap(), b"jpeg");
    s.stop().await;
}
