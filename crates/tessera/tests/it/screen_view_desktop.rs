//! `tessera view` and the viewer's own desktop (issue 13): the clipboard
//! shared between the viewer's X display and the device's, and the choice
//! of the device's monitor. Everything under Xvfb: a real `tessera agent
//! run` on one display, real `tessera view` windows on others, and the test
//! kit's X client on each display copying and pasting as an application
//! would. These skip, saying so, only when Xvfb is not installed (`.ci/run`
//! installs it, and under `CI` a missing Xvfb fails instead).

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_core::roles::Role;
use tessera_testkit::{
    ctl, ctl_admin, pattern, view, AgentProcess, TestDevice, TestServer, XTestClient, Xvfb,
};

use crate::screen_view::{create_screen_session, join, png_pixels, xvfb_or_skip, Seen};

/// A `tessera view SESSION` window on `display`, logged in from `dir`,
/// its stderr in `log`.
fn window(
    dir: &Path,
    session: &str,
    display: &str,
    log: &Path,
    extra: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new(tessera_testkit::tessera_bin())
        .args(["view", session])
        .args(extra)
        .arg("--config-dir")
        .arg(dir)
        .env("DISPLAY", display)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(
            std::fs::File::create(log).expect("log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("tessera view")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Pastes on `client` until it gets `want`, for at most `limit`.
async fn pasted(
    client: &std::sync::Arc<XTestClient>,
    want: &str,
    limit: Duration,
) -> Option<String> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        let c = std::sync::Arc::clone(client);
        last = tokio::task::spawn_blocking(move || c.paste_text(Duration::from_millis(500)))
            .await
            .expect("paste")
            .expect("X");
        if last.as_deref() == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// Copies `text` on `from` (again every second, while the viewer may
/// still be starting) until `to` pastes it; whether it did within `limit`.
async fn crosses(
    from: &std::sync::Arc<XTestClient>,
    to: &std::sync::Arc<XTestClient>,
    text: &str,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        from.copy_text(text).expect("copy");
        if pasted(to, text, Duration::from_secs(1)).await.as_deref() == Some(text) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_xvfb_the_window_shares_the_clipboard_both_ways_and_a_view_only_one_shares_nothing() {
    let Some(remote_x) = xvfb_or_skip("under_xvfb_the_window_shares_the_clipboard") else {
        return;
    };
    let local_x = Xvfb::start().expect("the viewer's Xvfb");
    let watcher_x = Xvfb::start().expect("the view-only viewer's Xvfb");
    let remote = std::sync::Arc::new(XTestClient::open(remote_x.display()).expect("X client"));
    remote.draw_pattern(2).expect("pattern");
    let local = std::sync::Arc::new(XTestClient::open(local_x.display()).expect("X client"));
    let watcher_desk =
        std::sync::Arc::new(XTestClient::open(watcher_x.display()).expect("X client"));

    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "kiosk").await;
    let agent = AgentProcess::start_on_display(&s, &device, remote_x.display()).await;
    let session = create_screen_session(dir.path(), "kiosk", false).await;

    // A view-only operator, logged in with `tessera ctl login`.
    s.user(&admin, "watcher", Role::Viewer).await;
    let wdir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = ctl(
        wdir.path(),
        &[
            "login",
            "--server",
            &s.url,
            "--user",
            "watcher",
            "--password-stdin",
        ],
        Some("watcher-password-123\n"),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");

    let log = dir.path().join("view.log");
    let wlog = wdir.path().join("view.log");
    let _control = window(dir.path(), &session, local_x.display(), &log, &[]);
    let _watching = window(wdir.path(), &session, watcher_x.display(), &wlog, &[]);
    let logs = || {
        format!(
            "viewer:\n{}\nview-only viewer:\n{}\nagent:\n{}",
            read(&log),
            read(&wlog),
            agent.log()
        )
    };

    // Copied on the viewer's desktop (non-ASCII too): pasted on the device's.
    let here = "copied here — ✓ naïve";
    assert!(
        crosses(&local, &remote, here, Duration::from_secs(40)).await,
        "the viewer's copy never reached the remote clipboard\n{}",
        logs()
    );

    // Copied on the device's desktop: pasted on the viewer's, and not on
    // the view-only viewer's (its desktop keeps its own clipboard).
    watcher_desk.copy_text("the watcher's own").expect("copy");
    let there = "copied there";
    assert!(
        crosses(&remote, &local, there, Duration::from_secs(20)).await,
        "the remote copy never reached the viewer's clipboard\n{}",
        logs()
    );
    assert_eq!(
        pasted(&watcher_desk, "the watcher's own", Duration::from_secs(5))
            .await
            .as_deref(),
        Some("the watcher's own"),
        "a view-only viewer's desktop is given no remote text"
    );

    // The view-only viewer's copy does not reach the device, not even sent
    // by hand past the client's own check.
    watcher_desk.copy_text("from the watcher").expect("copy");
    let watcher = s.login("watcher", "watcher-password-123").await;
    let (mut wtx, _wrx, wjoined) = join(&watcher, &session).await;
    assert!(!wjoined.may_control());
    assert!(
        !wtx.clipboard("forged").await.expect("no error"),
        "not sent"
    );
    let forged = tessera_proto::Envelope::of(tessera_testkit::screen(
        &session,
        tessera_proto::v1::screen::Body::Clipboard(tessera_proto::v1::ClipboardText {
            text: "forged".into(),
            viewer: 0,
        }),
    ));
    wtx.raw(prost::Message::encode_to_vec(&forged))
        .await
        .expect("sent raw");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pasted(&remote, there, Duration::from_secs(2))
            .await
            .as_deref(),
        Some(there),
        "the remote clipboard still holds what was copied there\n{}",
        logs()
    );

    // Over the protocol's cap, either way: not sent, and nothing breaks —
    // the next small copy still crosses both ways.
    let big = "x".repeat(tessera_proto::MAX_CLIPBOARD_TEXT + 1);
    local.copy_text(&big).expect("copy");
    remote.copy_text(&big).expect("copy");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        crosses(&local, &remote, "small again", Duration::from_secs(20)).await,
        "a copy after an oversized one\n{}",
        logs()
    );
    assert!(
        crosses(&remote, &local, "small from there", Duration::from_secs(20)).await,
        "a remote copy after an oversized one (the device stayed connected)\n{}",
        logs()
    );
    assert!(
        read(&log).contains("not sent to the remote clipboard"),
        "the viewer says why the big copy stayed here\n{}",
        logs()
    );
    wtx.close().await;
    drop(agent);
}

/// Splits `x`'s one screen into two monitors side by side (left, the
/// primary, and right).
fn two_monitors(x: &Xvfb) -> (u32, u32) {
    let half = x.width / 2;
    x.xrandr(&[
        "--setmonitor",
        "left",
        &format!("{half}/100x{}/100+0+0", x.height),
        "screen",
    ])
    .expect("xrandr --setmonitor");
    x.xrandr(&[
        "--setmonitor",
        "right",
        &format!("{half}/100x{}/100+{half}+0", x.height),
        "none",
    ])
    .expect("xrandr --setmonitor");
    (half, x.height)
}

/// The columns `x0..x0+w` of a `width`-wide picture.
fn columns(px: &[u32], width: u32, x0: u32, w: u32) -> Vec<u32> {
    px.chunks(width as usize)
        .flat_map(|row| row[x0 as usize..(x0 + w) as usize].to_vec())
        .collect()
}

/// The title of the one mapped top-level window on `display` that has one.
fn window_title(display: &str) -> Option<String> {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{self, AtomEnum, ConnectionExt as _};
    let (conn, screen) = x11rb::connect(Some(display)).ok()?;
    let root = conn.setup().roots[screen].root;
    let net_wm_name = conn
        .intern_atom(false, b"_NET_WM_NAME")
        .ok()?
        .reply()
        .ok()?
        .atom;
    let tree = conn.query_tree(root).ok()?.reply().ok()?;
    tree.children.into_iter().find_map(|w| {
        let mapped = conn.get_window_attributes(w).ok()?.reply().ok()?.map_state
            == xproto::MapState::VIEWABLE;
        let name = conn
            .get_property(false, w, net_wm_name, AtomEnum::ANY, 0, 1024)
            .ok()?
            .reply()
            .ok()?
            .value;
        (mapped && !name.is_empty()).then(|| String::from_utf8_lossy(&name).into_owned())
    })
}

/// Holds the host key (Right Ctrl) and taps M on `display`'s focused
/// top-level window, through XTEST.
fn host_m(display: &str) {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{self, ConnectionExt as _};
    use x11rb::protocol::xtest::ConnectionExt as _;
    use x11rb::wrapper::ConnectionExt as _;
    let code = |name: &str| {
        tessera_screen::keys::by_name(name)
            .and_then(|k| k.x_keycode())
            .expect("an X keycode")
    };
    let (conn, screen) = x11rb::connect(Some(display)).expect("X");
    let root = conn.setup().roots[screen].root;
    let tree = conn.query_tree(root).expect("tree").reply().expect("tree");
    for w in tree.children {
        let mapped = conn
            .get_window_attributes(w)
            .expect("attributes")
            .reply()
            .is_ok_and(|a| a.map_state == xproto::MapState::VIEWABLE);
        if mapped {
            conn.set_input_focus(xproto::InputFocus::PARENT, w, x11rb::CURRENT_TIME)
                .expect("focus");
        }
    }
    let (host, m) = (code("control_right"), code("m"));
    for (kind, key) in [
        (xproto::KEY_PRESS_EVENT, host),
        (xproto::KEY_PRESS_EVENT, m),
        (xproto::KEY_RELEASE_EVENT, m),
        (xproto::KEY_RELEASE_EVENT, host),
    ] {
        conn.xtest_fake_input(kind, key, 0, root, 0, 0, 0)
            .expect("key");
    }
    conn.sync().expect("sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_xvfb_the_viewer_chooses_the_devices_monitor_by_flag_and_by_hotkey() {
    let Some(remote_x) = xvfb_or_skip("under_xvfb_the_viewer_chooses_the_devices_monitor") else {
        return;
    };
    let (w, h) = two_monitors(&remote_x);
    let remote = XTestClient::open(remote_x.display()).expect("X client");
    let drawn = remote.draw_pattern(9).expect("pattern");
    assert_eq!(drawn, pattern(remote_x.width, remote_x.height, 9));
    let left = columns(&drawn, remote_x.width, 0, w);
    let right = columns(&drawn, remote_x.width, w, w);

    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "kiosk").await;
    let agent = AgentProcess::start_on_display(&s, &device, remote_x.display()).await;
    let session = create_screen_session(dir.path(), "kiosk", false).await;

    // --snapshot --monitor N: the Nth monitor, pixel for pixel.
    for (n, want) in [("2", &right), ("1", &left)] {
        let out = dir.path().join(format!("monitor-{n}.png"));
        let (code, stdout, stderr) = view(
            dir.path(),
            &[
                &session,
                "--snapshot",
                out.to_str().expect("utf-8"),
                "--monitor",
                n,
            ],
        )
        .await;
        assert_eq!(code, 0, "{stdout}{stderr}\nagent log:\n{}", agent.log());
        let (pw, ph, px) = png_pixels(&out);
        assert_eq!((pw, ph), (w, h), "monitor {n}");
        assert!(
            &px == want,
            "monitor {n}'s snapshot differs from its half of the display"
        );
    }
    // A monitor the device does not have: refused, saying why.
    let out = dir.path().join("none.png");
    let (code, _, stderr) = view(
        dir.path(),
        &[
            &session,
            "--snapshot",
            out.to_str().expect("utf-8"),
            "--monitor",
            "3",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("monitor_unknown"), "{stderr}");
    assert!(!out.exists());

    // A window opened with --monitor 2 shows the right-hand monitor (a
    // second viewer of the session sees the stream turn to it) and says
    // so in its title; host key + M goes on to the left-hand one.
    let (mut tx, mut rx, _) = join(&admin, &session).await;
    let mut seen = Seen::default();
    seen.next_drawn(&mut tx, &mut rx).await;
    let local_x = Xvfb::start().expect("the viewer's Xvfb");
    let log = dir.path().join("window.log");
    let _window = window(
        dir.path(),
        &session,
        local_x.display(),
        &log,
        &["--monitor", "2"],
    );
    let shown = |seen: &Seen| seen.formats.last().map(|f| f.monitor);
    let until = Instant::now() + Duration::from_secs(30);
    while shown(&seen) != Some(1) || !seen.shows(&right) {
        assert!(
            Instant::now() < until,
            "the stream never turned to monitor 2: {:?}\n{}",
            seen.formats,
            read(&log)
        );
        seen.next_drawn(&mut tx, &mut rx).await;
    }
    let title_says = |want: &'static str| {
        let display = local_x.display().to_owned();
        async move {
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                let d = display.clone();
                let title = tokio::task::spawn_blocking(move || window_title(&d))
                    .await
                    .expect("title");
                if title.as_deref().is_some_and(|t| t.contains(want)) || Instant::now() > until {
                    return title;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let title = title_says("monitor 2/2 right").await;
    assert!(
        title
            .as_deref()
            .is_some_and(|t| t.contains("monitor 2/2 right")),
        "{title:?}\n{}",
        read(&log)
    );
    let display = local_x.display().to_owned();
    tokio::task::spawn_blocking(move || host_m(&display))
        .await
        .expect("typed");
    let until = Instant::now() + Duration::from_secs(30);
    while shown(&seen) != Some(0) || !seen.shows(&left) {
        assert!(
            Instant::now() < until,
            "host key + M never turned the stream to monitor 1: {:?}\n{}",
            seen.formats,
            read(&log)
        );
        seen.next_drawn(&mut tx, &mut rx).await;
    }
    assert_eq!(
        seen.formats.last().map(|f| f.reason.as_str()),
        Some("monitor_changed")
    );
    let title = title_says("monitor 1/2 left").await;
    assert!(
        title
            .as_deref()
            .is_some_and(|t| t.contains("monitor 1/2 left")),
        "{title:?}\n{}",
        read(&log)
    );
    tx.close().await;
    drop(agent);
}
