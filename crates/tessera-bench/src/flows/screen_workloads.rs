//! `screen-workloads`: the whole screen path on the workloads at
//! 1920×1080 — an Xvfb display of the benchmark's own, the stage
//! (`stage.rs`) playing the applications on it, a real `tessera agent run`
//! capturing it, a real `tessera server` relaying, and a viewer through
//! `tessera_client::screen` that decodes every frame and acknowledges it
//! as `tessera view` does. Per workload: frames a second delivered, bytes a
//! second on the viewer's socket, the agent process's CPU (from /proc),
//! the agent's capture-and-encode time per frame (from its debug log,
//! `screen frame sent`), and for typing the key-to-pixel latency: the
//! viewer sends a key, the stage's terminal echoes a glyph, and the time
//! runs until the viewer's decoded picture shows it.
//!
//! `--h264` runs the same with H.264 negotiated (the server's
//! `--screen-codec prefer-h264`, a viewer that decodes `h264`); the echo
//! then counts as seen when the glyph's colour shows within a tolerance,
//! H.264 being lossy.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use prost::Message as _;
use tessera_client::screen::{self as viewer, ScreenEvent, ScreenReceiver, ScreenSender};
use tessera_core::api::{CreateEnrollmentTokenRequest, CreateSessionRequest};
use tessera_proto::v1::{screen, KeyInput, Screen};
use tessera_proto::{Body, Envelope};
use tessera_screen::{Codec, Decoder, Framebuffer, H264Decoder, RawZstdDecoder, ReceivedFrame};

use super::stage::{echo_cell, Stage, H, W};
use crate::result::BenchResult;
use crate::server::{Opts, Server};
use crate::stats::{millis, percentile};

/// How far (per channel) a decoded pixel may be from the echo's colour
/// and count as it: exact for raw-zstd, some way off for lossy H.264.
const H264_TOLERANCE: u32 = 40;

/// What the viewer has seen, shared with the workloads that read it.
#[derive(Default)]
struct View {
    picture: Option<Framebuffer>,
    /// For the stream's format (`None`: no format yet, or a codec this
    /// viewer does not decode).
    decoder: Option<Box<dyn Decoder>>,
    /// Per-channel tolerance of the echo test.
    tolerance: u32,
    frames: u64,
    keyframes: u64,
    bytes: u64,
    /// Rectangles of pixels and copies the frames carried.
    rects: u64,
    copies: u64,
    /// The echo awaited: where, which colour, since when.
    awaiting: Option<(u32, u32, u32, Instant)>,
    latencies: Vec<Duration>,
    trouble: Option<String>,
}

fn lock(view: &Mutex<View>) -> MutexGuard<'_, View> {
    view.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes a frame took on the viewer's socket: its messages as the relay
/// encoded them, and each message's WebSocket header.
fn wire_bytes(session: &str, f: &ReceivedFrame) -> u64 {
    f.frame
        .clone()
        .into_messages(f.number, f.captured_at_us)
        .into_iter()
        .map(|m| {
            let len = Envelope::of(Body::Screen(Screen {
                session_id: session.to_owned(),
                channel_id: 2,
                body: Some(screen::Body::Frame(m)),
            }))
            .encoded_len();
            let header = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            (len + header) as u64
        })
        .sum()
}

/// The viewer: decodes and acknowledges every frame, and notes when an
/// awaited echo shows.
async fn watch(
    mut rx: ScreenReceiver,
    tx: Arc<tokio::sync::Mutex<ScreenSender>>,
    view: Arc<Mutex<View>>,
    session: String,
) {
    loop {
        let event = rx.next().await;
        let ack = {
            let mut v = lock(&view);
            match event {
                ScreenEvent::Format(f) => {
                    v.picture = Framebuffer::new(f.width, f.height).ok();
                    (v.decoder, v.tolerance) = match Codec::from_name(&f.codec) {
                        Some(Codec::H264) => match H264Decoder::new() {
                            Ok(d) => (Some(Box::new(d) as Box<dyn Decoder>), H264_TOLERANCE),
                            Err(e) => {
                                v.trouble = Some(format!("no H.264 decoder: {e}"));
                                return;
                            }
                        },
                        Some(Codec::RawZstd) => {
                            (Some(Box::new(RawZstdDecoder::new()) as Box<dyn Decoder>), 0)
                        }
                        None => {
                            v.trouble =
                                Some(format!("the stream's codec {:?} is unknown", f.codec));
                            return;
                        }
                    };
                    None
                }
                ScreenEvent::Frame(f) => {
                    v.bytes += wire_bytes(&session, &f);
                    let View {
                        picture, decoder, ..
                    } = &mut *v;
                    let decoded = picture
                        .as_mut()
                        .zip(decoder.as_mut())
                        .map(|(p, d)| d.decode(&f.frame, p).map_err(|e| e.to_string()));
                    if let Some(Err(e)) = decoded {
                        v.trouble = Some(format!("a frame did not decode: {e}"));
                        return;
                    }
                    v.frames += 1;
                    v.rects += f.frame.rects().count() as u64;
                    v.copies += f.frame.copies.len() as u64;
                    v.keyframes += u64::from(f.frame.keyframe);
                    if let (Some((x, y, colour, sent)), Some(p)) = (v.awaiting, &v.picture) {
                        let at = p.pixels().get((y * p.width() + x) as usize);
                        if at.is_some_and(|&c| near(c, colour, v.tolerance)) {
                            v.latencies.push(sent.elapsed());
                            v.awaiting = None;
                        }
                    }
                    Some(f.number)
                }
                ScreenEvent::Resync { code } => {
                    v.trouble = Some(format!("the stream broke: {code}"));
                    return;
                }
                ScreenEvent::Ended { code, reason } => {
                    v.trouble = Some(format!("the session ended ({code}): {reason}"));
                    return;
                }
                ScreenEvent::Closed { code, reason } => {
                    v.trouble = Some(format!("the relay closed ({code:?}): {reason}"));
                    return;
                }
                _ => None,
            }
        };
        if let Some(n) = ack {
            if tx.lock().await.ack(n).await.is_err() {
                return;
            }
        }
    }
}

/// Whether two `0x00RRGGBB` colours are within `tolerance` on every channel.
fn near(a: u32, b: u32, tolerance: u32) -> bool {
    [16, 8, 0]
        .iter()
        .all(|s| ((a >> s) & 0xFF).abs_diff((b >> s) & 0xFF) <= tolerance)
}

/// What one workload measured.
struct Sample {
    secs: f64,
    frames: u64,
    bytes: u64,
    rects: u64,
    copies: u64,
    cpu: Duration,
    encode: Vec<Duration>,
}

/// Snapshots before and after a workload.
struct Meter<'a> {
    view: &'a Mutex<View>,
    agent_pid: u32,
    log: &'a Path,
    start: Instant,
    frames: u64,
    bytes: u64,
    rects: u64,
    copies: u64,
    cpu: Duration,
    log_at: u64,
}

impl<'a> Meter<'a> {
    fn start(view: &'a Mutex<View>, agent_pid: u32, log: &'a Path) -> anyhow::Result<Meter<'a>> {
        let v = lock(view);
        Ok(Meter {
            view,
            agent_pid,
            log,
            start: Instant::now(),
            frames: v.frames,
            bytes: v.bytes,
            rects: v.rects,
            copies: v.copies,
            cpu: tessera_testkit::cpu_time(agent_pid)?,
            log_at: std::fs::metadata(log)?.len(),
        })
    }

    fn stop(self) -> anyhow::Result<Sample> {
        let secs = self.start.elapsed().as_secs_f64();
        let cpu = tessera_testkit::cpu_time(self.agent_pid)?.saturating_sub(self.cpu);
        let (frames, bytes, rects, copies) = {
            let v = lock(self.view);
            (
                v.frames - self.frames,
                v.bytes - self.bytes,
                v.rects - self.rects,
                v.copies - self.copies,
            )
        };
        let log = std::fs::read(self.log)?;
        let segment = log.get(self.log_at as usize..).unwrap_or_default();
        Ok(Sample {
            secs,
            frames,
            bytes,
            rects,
            copies,
            cpu,
            encode: encode_times(&String::from_utf8_lossy(segment)),
        })
    }
}

/// Capture + encode time of each `screen frame sent` line of the agent's log.
fn encode_times(log: &str) -> Vec<Duration> {
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
    };
    log.lines()
        .filter(|l| l.contains("screen frame sent"))
        .filter_map(|l| Some(field(l, "capture_us=")? + field(l, "encode_us=")?))
        .map(Duration::from_micros)
        .collect()
}

/// Runs `step(i)` on the stage `rate` times a second for `secs`.
async fn drive(
    stage: &Arc<Stage>,
    rate: f64,
    secs: f64,
    step: fn(&Stage, usize) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let stage = Arc::clone(stage);
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let ticks = (rate * secs) as usize;
        for i in 0..ticks {
            step(&stage, i)?;
            let next = start + Duration::from_secs_f64((i + 1) as f64 / rate);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        stage.sync()
    })
    .await?
}

fn record(result: &mut BenchResult, name: &str, s: &mut Sample) {
    let secs = s.secs.max(1e-9);
    result.figure(
        &format!("{name}: frames delivered"),
        s.frames as f64 / secs,
        "/s",
    );
    result.figure(
        &format!("{name}: bytes"),
        s.bytes as f64 / secs / 1e3,
        "kB/s",
    );
    result.figure(
        &format!("{name}: agent CPU"),
        s.cpu.as_secs_f64() / secs * 100.0,
        "% of a core",
    );
    let per_frame = |n: u64| n as f64 / s.frames.max(1) as f64;
    result.figure(&format!("{name}: bytes per frame"), per_frame(s.bytes), "B");
    result.figure(
        &format!("{name}: rectangles per frame"),
        per_frame(s.rects),
        "",
    );
    result.figure(
        &format!("{name}: copies per frame"),
        per_frame(s.copies),
        "",
    );
    let p50 = millis(percentile(&mut s.encode, 50.0));
    let p99 = millis(percentile(&mut s.encode, 99.0));
    result.figure(&format!("{name}: capture+encode p50"), p50, "ms");
    result.figure(&format!("{name}: capture+encode p99"), p99, "ms");
}

/// Types `keys` keys at 10 a second from the viewer; each is echoed by
/// the stage's terminal and timed until the viewer sees it. How many
/// were seen within 2 s.
async fn type_keys(
    tx: &tokio::sync::Mutex<ScreenSender>,
    view: &Mutex<View>,
    first: u64,
    keys: u64,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut seen = 0;
    for k in 0..keys {
        let (x, y, colour) = echo_cell(first + k);
        lock(view).awaiting = Some((x, y, colour, Instant::now()));
        for down in [true, false] {
            let key = KeyInput {
                usage: 0x04,
                keysym: 0x61,
                down,
                modifiers: 0,
                viewer: 0,
            };
            if !tx.lock().await.key(key).await? {
                bail!("the viewer may not send input");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while lock(view).awaiting.is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if lock(view).awaiting.take().is_none() {
            seen += 1;
        }
        let next = start + Duration::from_millis(100 * (k + 1));
        tokio::time::sleep_until(next.into()).await;
    }
    Ok(seen)
}

/// A device enrolled with a token, and its `tessera agent run` on `display`.
async fn start_agent(
    server: &Server,
    admin: &tessera_client::ApiClient,
    bin: &Path,
    dir: &Path,
    display: &str,
) -> anyhow::Result<(String, tokio::process::Child, PathBuf)> {
    let token = admin
        .create_enrollment_token(&CreateEnrollmentTokenRequest {
            uses: 1,
            ttl_seconds: 600,
            tags: vec![],
        })
        .await?;
    let state = tessera_agent::AgentState::new(dir.join("agent"));
    let enroll = tessera_agent::enroll::EnrollOptions {
        server: server.url.clone(),
        tls_fingerprint: None,
        ca_cert: None,
        name: Some("bench-desktop".into()),
    };
    let id = tessera_agent::enroll::with_token(&state, &enroll, token.secret).await?;
    let log = dir.join("agent.log");
    let child = tokio::process::Command::new(bin)
        .args(["agent", "run", "--state-dir"])
        .arg(state.dir())
        .env("DISPLAY", display)
        .env("HOME", dir)
        .env("TESSERA_LOG", "warn,tessera_agent::screen=debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting tessera agent run")?;
    Ok((id.to_string(), child, log))
}

pub(crate) async fn screen_workloads(
    opts: &Opts,
    quick: bool,
    h264: bool,
) -> anyhow::Result<BenchResult> {
    let codec = if h264 { Codec::H264 } else { Codec::RawZstd };
    let secs = if quick { 1.5 } else { 10.0 };
    let keys: u64 = if quick { 15 } else { 200 };
    let settle = Duration::from_millis(if quick { 300 } else { 1000 });
    let mut result = BenchResult::new(
        "screen-workloads",
        serde_json::json!({
            "width": W, "height": H, "codec": codec.name(), "seconds_per_workload": secs,
            "keys": keys, "typing": "10 keys/s", "scroll": "60 lines/s",
            "window_move": "30 steps/s", "motion": "30 fps",
        }),
    );
    let xvfb = tessera_testkit::Xvfb::start_with(u32::from(W), u32::from(H))?;
    let display = xvfb.display().to_owned();
    let stage = Arc::new(tokio::task::spawn_blocking(move || Stage::open(&display)).await??);
    let policy = if h264 { "prefer-h264" } else { "raw" };
    let server = Server::start(
        opts,
        &["--screen-input-rate", "1000", "--screen-codec", policy],
    )
    .await?;
    let admin = server.admin().await?;
    let dir = tempfile::tempdir()?;
    let (device, agent, log) =
        start_agent(&server, &admin, &opts.bin, dir.path(), xvfb.display()).await?;
    let agent_pid = agent.id().ok_or_else(|| anyhow!("the agent exited"))?;
    let request = CreateSessionRequest {
        device,
        access: None,
        channel: Some("screen".into()),
    };
    let mut tries = 0;
    let session = loop {
        match admin.create_session(&request).await {
            Ok(s) => break s.id,
            // Until the agent is online.
            Err(_) if tries < 100 => tries += 1,
            Err(e) => return Err(e).context("opening a screen session"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let token = admin.viewer_token(&session).await?;
    let decoders: &[&str] = if h264 {
        &["h264", "raw-zstd"]
    } else {
        &["raw-zstd"]
    };
    let (tx, rx, _) = viewer::connect(&admin, &session, &token.token, decoders).await?;
    let tx = Arc::new(tokio::sync::Mutex::new(tx));
    let view = Arc::new(Mutex::new(View::default()));
    let watcher = tokio::spawn(watch(rx, tx.clone(), view.clone(), session.clone()));
    let wait_start = Instant::now();
    while lock(&view).keyframes == 0 {
        if let Some(t) = lock(&view).trouble.clone() {
            bail!("{t}");
        }
        if wait_start.elapsed() > Duration::from_secs(30) {
            bail!("no keyframe within 30 s; agent log: {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(settle).await;

    // Idle: after the first keyframe nothing changes, nothing is sent.
    let meter = Meter::start(&view, agent_pid, &log)?;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let mut idle = meter.stop()?;
    result.check("idle: no byte after the first keyframe", idle.bytes == 0);
    record(&mut result, "idle", &mut idle);

    // Typing at 10 keys a second, each echoed by the terminal.
    let meter = Meter::start(&view, agent_pid, &log)?;
    let seen = type_keys(&tx, &view, stage.echoed(), keys).await?;
    let mut typing = meter.stop()?;
    record(&mut result, "typing", &mut typing);
    let mut lat = std::mem::take(&mut lock(&view).latencies);
    result.figure(
        "typing: key-to-pixel p50",
        millis(percentile(&mut lat, 50.0)),
        "ms",
    );
    result.figure(
        "typing: key-to-pixel p99",
        millis(percentile(&mut lat, 99.0)),
        "ms",
    );
    result.check("typing: every key's echo seen", seen == keys);

    type Step = fn(&Stage, usize) -> anyhow::Result<()>;
    let workloads: [(&str, f64, Step); 3] = [
        ("scroll", 60.0, Stage::scroll),
        ("window move", 30.0, Stage::drag),
        ("full-screen motion", 30.0, Stage::motion),
    ];
    for (name, rate, step) in workloads {
        let s = Arc::clone(&stage);
        tokio::task::spawn_blocking(move || s.desktop()).await??;
        tokio::time::sleep(settle).await;
        let meter = Meter::start(&view, agent_pid, &log)?;
        drive(&stage, rate, secs, step).await?;
        let mut sample = meter.stop()?;
        record(&mut result, name, &mut sample);
    }
    let trouble = lock(&view).trouble.clone();
    if let Some(t) = trouble {
        bail!("{t}");
    }
    watcher.abort();
    drop(agent);
    if h264 {
        let used = lock(&view).tolerance == H264_TOLERANCE;
        result.check("the stream was H.264", used);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_near_within_the_tolerance_on_every_channel() {
        assert!(near(0x10_20_30, 0x10_20_30, 0));
        assert!(!near(0x10_20_30, 0x10_20_31, 0));
        assert!(near(0x10_20_30, 0x38_00_08, 40));
        assert!(!near(0x10_20_30, 0x10_20_59, 40));
    }

    #[test]
    fn encode_times_come_from_the_agents_frame_lines() {
        let log = "2026-11-26T11:40:00Z DEBUG tessera_agent::screen: screen frame sent number=5 keyframe=false capture_us=120 encode_us=880 bytes=44\n\
                   2026-11-26T11:40:00Z  INFO tessera_agent::screen: screen stream starts\n\
                   x DEBUG screen frame sent number=6 capture_us=1000 encode_us=19000\n";
        assert_eq!(
            encode_times(log),
            [Duration::from_millis(1), Duration::from_millis(20)]
        );
    }
}
