//! Screen sessions through the relay, with a device and viewers spoken by
//! hand (no X needed): who may send what, throttling, latest-wins for a
//! stalled viewer, refusals with close codes, the protocol gate, releases,
//! audit rows and metrics.

use std::time::Duration;

use serde_json::Value;
use tessera_client::ApiClient;
use tessera_client::AuditQuery;
use tessera_core::api::CreateSessionRequest;
use tessera_core::roles::Role;
use tessera_proto::v1::screen::Body as SB;
use tessera_proto::v1::{
    ChannelClose, ChannelData, ChannelKind, KeyInput, KeyframeRequest, Monitor, PointerInput,
    ScreenAck, ScreenCapabilities, ScreenDecoders, ScreenFormat, ScreenFrame, SpecialKeys,
};
use tessera_proto::Body;
use tessera_testkit::{
    eventually, screen, screen_body, HandDevice, HandViewer, Options, TestDevice, TestServer,
};

pub(crate) const RAW: &str = "raw-zstd";

fn screen_request(device: &str, access: Option<&str>) -> CreateSessionRequest {
    CreateSessionRequest {
        device: device.to_owned(),
        access: access.map(str::to_owned),
        channel: Some("screen".to_owned()),
    }
}

pub(crate) fn key(usage: u32) -> SB {
    SB::Key(KeyInput {
        usage,
        keysym: 0x61,
        down: true,
        modifiers: 0,
        viewer: 0,
    })
}

pub(crate) fn frame(number: u64, keyframe: bool, part: u32, last_part: bool, size: usize) -> SB {
    SB::Frame(ScreenFrame {
        number,
        keyframe,
        part,
        last_part,
        data: vec![(number % 251) as u8; size].into(),
        ..ScreenFrame::default()
    })
}

pub(crate) fn format() -> SB {
    SB::Format(ScreenFormat {
        codec: RAW.into(),
        monitor: 0,
        width: 1280,
        height: 800,
        reason: String::new(),
    })
}

/// A protocol-4 device online with a screen session open on it: the
/// device has answered the channel's open with its capabilities.
pub(crate) async fn screen_setup(s: &TestServer, admin: &ApiClient) -> (HandDevice, String) {
    let d = TestDevice::enroll(s, admin, "desk").await;
    let mut dev = HandDevice::connect(s, &d, 4).await;
    let session = admin
        .create_session(&screen_request("desk", None))
        .await
        .expect("screen session")
        .id;
    let open = dev
        .next_where(|b| match b {
            Body::ChannelOpen(o) => Some(o.clone()),
            _ => None,
        })
        .await;
    assert_eq!(open.kind, ChannelKind::Screen as i32);
    assert_eq!(open.session_id, session);
    dev.send(screen(
        &session,
        SB::Capabilities(ScreenCapabilities {
            codecs: vec![RAW.into(), "h264".into()],
            monitors: vec![Monitor {
                index: 0,
                name: "screen".into(),
                width: 1280,
                height: 800,
                primary: true,
                ..Monitor::default()
            }],
        }),
    ))
    .await;
    (dev, session)
}

/// The device's next screen message (skipping presence notices).
pub(crate) async fn next_screen(dev: &mut HandDevice) -> SB {
    dev.next_where(|b| screen_body(b).cloned()).await
}

async fn audit_rows(admin: &ApiClient, action: &str) -> Vec<Value> {
    admin
        .audit_page(&AuditQuery {
            action: Some(action.to_owned()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.details)
        .collect()
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_session_to_an_agent_below_protocol_4_is_refused_before_it_is_asked() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "old").await;
    let mut dev = HandDevice::connect(&s, &d, 3).await;
    let err = admin
        .create_session(&screen_request("old", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("channel_unsupported"), "{err}");
    assert!(
        admin.sessions(true).await.unwrap().is_empty(),
        "nothing recorded"
    );
    // The device was sent nothing: its next message answers this heartbeat.
    dev.send(Body::Heartbeat(tessera_proto::v1::Heartbeat { seq: 9 }))
        .await;
    assert!(matches!(dev.next().await, Ok(Body::HeartbeatAck(a)) if a.seq == 9));
    // A shell still opens on it.
    let shell = admin
        .create_session(&CreateSessionRequest {
            device: "old".into(),
            access: None,
            channel: None,
        })
        .await
        .unwrap();
    assert_eq!(shell.channel, "shell");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_session_relays_by_the_rules_and_is_audited() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (mut dev, session) = screen_setup(&s, &admin).await;
    let listed = admin.session(&session).await.unwrap();
    assert_eq!(listed.channel, "screen");

    // A control viewer joins: the device is configured (raw by default).
    let mut control = HandViewer::join(&s, &admin, &session).await;
    assert_eq!(control.ready.kind, ChannelKind::Screen as i32);
    assert_eq!(control.ready.access, "control");
    let SB::Configure(c) = next_screen(&mut dev).await else {
        panic!("configure")
    };
    assert_eq!((c.codec.as_str(), c.monitor), (RAW, 0));
    control
        .send(screen(
            &session,
            SB::Decoders(ScreenDecoders {
                codecs: vec![RAW.into(), "h264".into()],
            }),
        ))
        .await;

    // Format and a keyframe reach the viewer; its ack credits the device.
    dev.send(screen(&session, format())).await;
    dev.send(screen(&session, frame(1, true, 0, true, 1000)))
        .await;
    let got = control.next().await.unwrap();
    assert!(matches!(screen_body(&got), Some(SB::Format(_))));
    let got = control.next().await.unwrap();
    assert!(matches!(screen_body(&got), Some(SB::Frame(f)) if f.number == 1 && f.keyframe));
    control
        .send(screen(&session, SB::Ack(ScreenAck { number: 1 })))
        .await;
    let SB::Credit(credit) = next_screen(&mut dev).await else {
        panic!("credit")
    };
    assert_eq!(credit.number, 1);

    // A view-only operator joins; its input never reaches the device.
    let watcher = s.user(&admin, "watcher", Role::Viewer).await;
    let mut view_only = HandViewer::join(&s, &watcher, &session).await;
    assert_eq!(view_only.ready.access, "view_only");
    // (A keyframe request follows the join: the device owes it a picture.)
    let SB::KeyframeRequest(_) = next_screen(&mut dev).await else {
        panic!("keyframe request for the new viewer")
    };
    for usage in [100, 101] {
        view_only.send(screen(&session, key(usage))).await;
    }
    view_only
        .send(screen(
            &session,
            SB::Pointer(PointerInput {
                x: 5,
                y: 5,
                buttons: 1,
                ..PointerInput::default()
            }),
        ))
        .await;
    // (Each socket is read by its own task: wait until the server counted
    // the view-only viewer's three events as dropped.)
    let s3 = &s;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            metric(
                &s3.metrics().await,
                "tessera_screen_input_dropped_total{reason=\"view_only\"}",
            ) == 3.0
        })
        .await
    );
    // The control viewer's key, stamped by the server whatever it claimed.
    control
        .send(screen(
            &session,
            SB::Key(KeyInput {
                usage: 4,
                keysym: 0x61,
                down: true,
                modifiers: 1,
                viewer: 999,
            }),
        ))
        .await;
    let SB::Key(k) = next_screen(&mut dev).await else {
        panic!("the control viewer's key comes first: the view-only input was dropped")
    };
    assert_eq!(k.usage, 4);
    assert_ne!(k.viewer, 999);
    assert_ne!(k.viewer, 0);
    let control_number = k.viewer;
    control
        .send(screen(
            &session,
            SB::SpecialKeys(SpecialKeys {
                combo: "ctrl_alt_del".into(),
                viewer: 0,
            }),
        ))
        .await;
    let SB::SpecialKeys(sk) = next_screen(&mut dev).await else {
        panic!("special keys")
    };
    assert_eq!(sk.viewer, control_number);

    // The control viewer leaves: the device releases what it held.
    drop(control);
    let SB::ReleaseInput(r) = next_screen(&mut dev).await else {
        panic!("release")
    };
    assert_eq!(r.viewer, control_number);
    drop(view_only);

    // End it: the channel's close is audited with codec and monitor.
    admin.end_session(&session).await.unwrap();
    let s2 = &s;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            !audit_rows(&s2.admin().await, "screen_closed")
                .await
                .is_empty()
        })
        .await
    );
    let opened = audit_rows(&admin, "screen_opened").await;
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["codec"], RAW);
    assert_eq!(opened[0]["monitor"], 0);
    let closed = audit_rows(&admin, "screen_closed").await;
    assert_eq!(closed[0]["codec"], RAW);
    assert_eq!(closed[0]["frames"], 1);
    let joined = audit_rows(&admin, "session_joined").await;
    let mut accesses: Vec<_> = joined
        .iter()
        .filter(|d| d["channel"] == "screen")
        .map(|d| d["access"].as_str().unwrap().to_owned())
        .collect();
    accesses.sort();
    assert_eq!(accesses, ["control", "view_only"]);
    // Written by the viewer's task as it ends, after the viewer left.
    let admin2 = &admin;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            audit_rows(admin2, "viewer_throttled")
                .await
                .iter()
                .any(|d| d["dropped_view_only"] == 3)
        })
        .await
    );
    let created = audit_rows(&admin, "session_created").await;
    assert_eq!(created[0]["channel"], "screen");

    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "tessera_screen_frames_total{codec=\"raw-zstd\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "tessera_screen_bytes_total{codec=\"raw-zstd\"}"),
        1000.0
    );
    assert_eq!(
        metric(
            &m,
            "tessera_screen_input_dropped_total{reason=\"view_only\"}"
        ),
        3.0
    );
    assert!(metric(&m, "tessera_screen_keyframes_requested_total") >= 1.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_beyond_the_screen_rate_is_dropped_and_counted() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.screen_input_per_second = 5)),
        ..Options::default()
    })
    .await;
    let admin = s.admin().await;
    let (mut dev, session) = screen_setup(&s, &admin).await;
    let mut v = HandViewer::join(&s, &admin, &session).await;
    let SB::Configure(_) = next_screen(&mut dev).await else {
        panic!("configure")
    };
    for usage in 4..44 {
        v.send(screen(&session, key(usage))).await;
    }
    // A marker after the burst, once the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.send(screen(&session, key(200))).await;
    let mut forwarded = 0;
    loop {
        let SB::Key(k) = next_screen(&mut dev).await else {
            continue;
        };
        if k.usage == 200 {
            break;
        }
        forwarded += 1;
    }
    assert!(
        (5..=7).contains(&forwarded),
        "{forwarded} keys went through"
    );
    let m = s.metrics().await;
    let dropped = metric(
        &m,
        "tessera_screen_input_dropped_total{reason=\"rate_limited\"}",
    );
    assert_eq!(dropped as u32 + forwarded, 40, "every key counted");
    drop(v);
    let admin2 = &admin;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            audit_rows(admin2, "viewer_throttled")
                .await
                .iter()
                .any(|d| d["dropped_rate_limited"].as_u64().unwrap_or(0) >= 33)
        })
        .await
    );
    s.stop().await;
}

/// Frames the stalled viewer received, once it reads again: each whole,
/// and after every gap a keyframe.
fn check_resync(frames: &[(u64, bool, u32, bool)]) {
    let mut prev: Option<u64> = None;
    let mut gaps = 0;
    let mut i = 0;
    while i < frames.len() {
        let (n, key, part, _) = frames[i];
        assert_eq!(part, 0, "frame {n} starts with its first part");
        // Its parts, in order, to the last.
        let mut p = 0;
        while !frames[i].3 {
            i += 1;
            p += 1;
            assert!(i < frames.len(), "frame {n} arrived whole");
            assert_eq!((frames[i].0, frames[i].2), (n, p), "parts in order");
        }
        if let Some(prev) = prev {
            assert!(n > prev);
            if n != prev + 1 {
                gaps += 1;
                assert!(key, "after skipping to {n}, a keyframe");
            }
        }
        prev = Some(n);
        i += 1;
    }
    assert!(gaps >= 1, "the stalled viewer skipped frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_does_not_slow_a_fast_one_and_resumes_at_a_keyframe() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (mut dev, session) = screen_setup(&s, &admin).await;
    let mut fast = HandViewer::join(&s, &admin, &session).await;
    let SB::Configure(_) = next_screen(&mut dev).await else {
        panic!("configure")
    };
    let mut slow = Some(HandViewer::join(&s, &admin, &session).await);
    dev.send(screen(&session, format())).await;

    // The fast viewer reads and acks every frame it draws.
    let fast_session = session.clone();
    let fast_task = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            match fast.next().await {
                Ok(b) => {
                    if let Some(SB::Frame(f)) = screen_body(&b) {
                        if !f.last_part {
                            continue;
                        }
                        seen.push(f.number);
                        let ack = SB::Ack(ScreenAck { number: f.number });
                        fast.send(screen(&fast_session, ack)).await;
                    }
                }
                Err(_) => return seen,
            }
        }
    });

    // The device sends two-part frames of 1 MiB, at most 3 ahead of the
    // fastest viewer's credit, a keyframe whenever asked.
    let total: u64 = 60;
    let mut credit = 0u64;
    let mut keyframe_due = true;
    let mut asked = 0;
    let mut n = 1u64;
    let mut slow_frames = Vec::new();
    let mut slow_reading = None;
    while n <= total {
        // Half way, the stalled viewer starts reading again.
        if n == total / 2 {
            if let Some(mut v) = slow.take() {
                slow_reading = Some(tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Ok(b) = v.next().await {
                        if let Some(SB::Frame(f)) = screen_body(&b) {
                            got.push((f.number, f.keyframe, f.part, f.last_part));
                            if f.number >= total && f.last_part {
                                break;
                            }
                        }
                    }
                    got
                }));
            }
        }
        if n > credit + 3 {
            match next_screen(&mut dev).await {
                SB::Credit(c) => credit = credit.max(c.number),
                SB::KeyframeRequest(KeyframeRequest {}) => {
                    keyframe_due = true;
                    asked += 1;
                }
                other => panic!("{other:?}"),
            }
            continue;
        }
        let key = keyframe_due || n == total;
        keyframe_due = false;
        dev.send(screen(&session, frame(n, key, 0, false, 512 << 10)))
            .await;
        dev.send(screen(&session, frame(n, key, 1, true, 512 << 10)))
            .await;
        n += 1;
    }
    let fast_seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if credit >= total {
                break;
            }
            if let SB::Credit(c) = next_screen(&mut dev).await {
                credit = c.number;
            }
        }
    })
    .await;
    assert!(fast_seen.is_ok(), "the fast viewer drew every frame");
    assert!(
        asked >= 1,
        "the relay asked for a keyframe for the stalled viewer"
    );
    if let Some(t) = slow_reading {
        slow_frames = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("the stalled viewer catches up")
            .unwrap();
    }
    check_resync(&slow_frames);
    admin.end_session(&session).await.unwrap();
    let seen = fast_task.await.unwrap();
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    let m = s.metrics().await;
    assert!(metric(&m, "tessera_screen_frames_skipped_total") >= 1.0);
    drop(slow);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_screen_messages_are_refused_with_a_close_code() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (mut dev, session) = screen_setup(&s, &admin).await;
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Option<Body>, Option<Vec<u8>>, u16)> = vec![
        ("garbage", None, Some(vec![0xff; 32]), 1007),
        (
            "oversized",
            None,
            Some(vec![0; tessera_proto::MAX_VIEWER_FRAME + 1]),
            1009,
        ),
        (
            "a_frame_from_a_viewer",
            Some(screen(&session, frame(1, true, 0, true, 10))),
            None,
            1008,
        ),
        (
            "an_ack_of_a_frame_never_sent",
            Some(screen(&session, SB::Ack(ScreenAck { number: 7 }))),
            None,
            1008,
        ),
        (
            "shell_input_on_a_screen",
            Some(Body::ChannelData(ChannelData {
                session_id: session.clone(),
                channel_id: 1,
                data: b"ls\n".to_vec().into(),
            })),
            None,
            1008,
        ),
        (
            "an_unknown_combination",
            Some(screen(
                &session,
                SB::SpecialKeys(SpecialKeys {
                    combo: "reboot_now".into(),
                    viewer: 0,
                }),
            )),
            None,
            1008,
        ),
        (
            "a_pointer_off_any_screen",
            Some(screen(
                &session,
                SB::Pointer(PointerInput {
                    x: 1 << 20,
                    ..PointerInput::default()
                }),
            )),
            None,
            1008,
        ),
    ];
    for (name, body, raw, want) in cases {
        let mut v = HandViewer::join(&s, &admin, &session).await;
        match (body, raw) {
            (Some(b), _) => v.send(b).await,
            (None, Some(r)) => v.send_raw(r).await,
            (None, None) => unreachable!(),
        }
        assert_eq!(v.close_code().await, want, "{name}");
    }
    // Decoders twice.
    let mut v = HandViewer::join(&s, &admin, &session).await;
    let decoders = || {
        screen(
            &session,
            SB::Decoders(ScreenDecoders {
                codecs: vec![RAW.into()],
            }),
        )
    };
    v.send(decoders()).await;
    v.send(decoders()).await;
    assert_eq!(v.close_code().await, 1008);

    // Nothing of it reached the device: the session is still live, and
    // its next screen input is a real viewer's.
    let mut ok = HandViewer::join(&s, &admin, &session).await;
    ok.send(screen(&session, key(42))).await;
    let first_input = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Key(k)) => Some(k.usage),
            Some(SB::Pointer(_) | SB::SpecialKeys(_) | SB::Clipboard(_)) => Some(0),
            _ => None,
        })
        .await;
    assert_eq!(first_input, 42);

    // A device that sends a frame before its format is cut off (1008).
    dev.send(screen(&session, frame(1, true, 0, true, 10)))
        .await;
    let code = loop {
        if let Err(code) = dev.next().await {
            break code;
        }
    };
    assert_eq!(code, 1008);
    drop(ok);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_screen_ends_the_session_with_screen_unavailable() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "headless").await;
    let mut dev = HandDevice::connect(&s, &d, 4).await;
    let session = admin
        .create_session(&screen_request("headless", Some("view")))
        .await
        .unwrap()
        .id;
    let open = dev
        .next_where(|b| match b {
            Body::ChannelOpen(o) => Some(o.clone()),
            _ => None,
        })
        .await;
    dev.send(Body::ChannelClose(ChannelClose {
        session_id: session.clone(),
        channel_id: open.channel_id,
        exit_status: None,
        reason: "screen_unavailable".into(),
    }))
    .await;
    let admin2 = &admin;
    let session2 = &session;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            admin2.session(session2).await.unwrap().end_code.as_deref()
                == Some("screen_unavailable")
        })
        .await
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_support_code_asks_consent_for_the_screen_and_an_old_agent_is_refused() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let code = || async {
        admin
            .create_support_code(&tessera_core::api::CreateSupportCodeRequest {
                access: None,
                ttl_seconds: None,
                channel: Some("screen".into()),
            })
            .await
            .unwrap()
            .code
            .expose()
            .to_owned()
    };
    let trust = tessera_client::TlsTrust::PublicRoots;

    // An agent too old for screens: nobody is asked, the session ends.
    let old = code().await;
    let preview = s.client().preview_support_code(&old).await.unwrap();
    assert_eq!(preview.channel, "screen");
    let (creds, bound) = tessera_agent::support::bind(&s.url, &trust, &old, None)
        .await
        .unwrap();
    let mut dev = HandDevice::connect_as(&s, &creds.keys, creds.key.expose(), 3).await;
    let (admin2, id) = (&admin, &bound.session_id);
    assert!(
        eventually(Duration::from_secs(10), || async move {
            admin2.session(id).await.unwrap().end_code.as_deref() == Some("channel_unsupported")
        })
        .await
    );
    let asked = dev
        .next_where(|b| match b {
            Body::ConsentRequest(_) | Body::ChannelOpen(_) => Some(true),
            Body::SessionEnded(_) => Some(false),
            _ => None,
        })
        .await;
    assert!(!asked, "the old agent was asked nothing");

    // A protocol-4 agent is asked for its screen, and opens it on yes.
    let new = code().await;
    let (creds, bound) = tessera_agent::support::bind(&s.url, &trust, &new, None)
        .await
        .unwrap();
    let mut dev = HandDevice::connect_as(&s, &creds.keys, creds.key.expose(), 4).await;
    let request = dev
        .next_where(|b| match b {
            Body::ConsentRequest(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(request.kind, ChannelKind::Screen as i32);
    dev.send(Body::ConsentResponse(tessera_proto::v1::ConsentResponse {
        session_id: bound.session_id.clone(),
        granted: true,
        unavailable: false,
    }))
    .await;
    let open = dev
        .next_where(|b| match b {
            Body::ChannelOpen(o) => Some(o.clone()),
            _ => None,
        })
        .await;
    assert_eq!(open.kind, ChannelKind::Screen as i32);
    assert_eq!(
        admin.session(&bound.session_id).await.unwrap().channel,
        "screen"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_controller_is_dropped_and_the_device_releases_what_it_held() {
    let s = TestServer::start_with(tessera_testkit::fast_heartbeat(300)).await;
    let admin = s.admin().await;
    let (mut dev, session) = screen_setup(&s, &admin).await;
    let otto = s.user(&admin, "otto", Role::Operator).await;
    let mut v = HandViewer::join(&s, &otto, &session).await;
    assert_eq!(v.ready.access, "control");
    v.send(screen(&session, key(4))).await;
    let held = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Key(k)) => Some(k.viewer),
            _ => None,
        })
        .await;
    admin
        .update_user(
            "otto",
            &tessera_core::api::UpdateUserRequest {
                role: Some(Role::Viewer),
                disabled: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(v.close_code().await, 4012, "role_changed");
    let released = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::ReleaseInput(r)) => Some(r.viewer),
            _ => None,
        })
        .await;
    assert_eq!(released, held);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_opens_a_screen_session_with_channel_screen() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "kiosk").await;
    let mut dev = HandDevice::connect(&s, &d, 4).await;
    let dir = tessera_testkit::ctl_admin(&s).await;
    let (code, out, err) = tessera_testkit::ctl(
        dir.path(),
        &[
            "sessions",
            "create",
            "kiosk",
            "--channel",
            "screen",
            "--json",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["channel"], "screen");
    let open = dev
        .next_where(|b| match b {
            Body::ChannelOpen(o) => Some(o.kind),
            _ => None,
        })
        .await;
    assert_eq!(open, ChannelKind::Screen as i32);
    let (code, _, err) = tessera_testkit::ctl(
        dir.path(),
        &["sessions", "create", "kiosk", "--channel", "video"],
        None,
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("screen"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_vanishes_holding_a_key_is_dropped_and_the_device_releases_it() {
    use futures_util::StreamExt;
    // Heartbeats of 300 ms: a viewer silent for 900 ms is gone.
    let s = TestServer::start_with(tessera_testkit::fast_heartbeat(300)).await;
    let admin = s.admin().await;
    let (mut dev, session) = screen_setup(&s, &admin).await;
    // A second viewer that keeps reading (so it answers the relay's pings)
    // stays through it all.
    let watcher = s.user(&admin, "wanda", Role::Viewer).await;
    let mut alive = HandViewer::join(&s, &watcher, &session).await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = alive.ws.next().await {
            let _ = seen_tx.send(m);
        }
    });
    // The control viewer presses a key, then vanishes without a word: its
    // socket stays open but nothing reads it or writes to it again (a
    // laptop lid shut mid-press).
    let mut gone = HandViewer::join(&s, &admin, &session).await;
    gone.send(screen(&session, key(0xE0))).await;
    let held = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Key(k)) => Some(k.viewer),
            _ => None,
        })
        .await;
    let released = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::ReleaseInput(r)) => Some(r.viewer),
            _ => None,
        })
        .await;
    assert_eq!(released, held, "the vanished viewer's key is released");
    // 4014 (viewer_unresponsive) when the close frame is read. Reading it
    // now also answers the pings it missed: the server lingers for the
    // closing handshake and reads those pongs, so they draw no reset that
    // could discard the unread close frame (which showed as 1006).
    let code = gone.close_code().await;
    assert_eq!(code, 4014, "viewer_unresponsive");
    // The reading viewer is still there: a notice reaches it.
    while seen.try_recv().is_ok() {}
    dev.send(screen(
        &session,
        SB::Notice(tessera_proto::v1::ScreenNotice {
            code: "still_here".into(),
            message: String::new(),
        }),
    ))
    .await;
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match seen.recv().await {
                Some(tokio_tungstenite::tungstenite::Message::Binary(b)) => {
                    let env = <tessera_proto::Envelope as prost::Message>::decode(b.as_ref())
                        .expect("envelope");
                    if let Some(Body::Screen(sc)) = env.body {
                        if let Some(SB::Notice(n)) = sc.body {
                            return n.code;
                        }
                    }
                }
                Some(_) => {}
                None => panic!("the reading viewer was dropped"),
            }
        }
    })
    .await
    .expect("the notice in time");
    assert_eq!(got, "still_here");
    reader.abort();
    s.stop().await;
}
