//! `tessera view --snapshot out.png`: join, wait for the first whole
//! picture, write it as a PNG and leave. No window, no input: for scripts
//! and tests.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tessera_client::screen::{ScreenEvent, ScreenReceiver, ScreenSender};
use tessera_screen::Framebuffer;

use super::now_us;
use super::stream::{self, Stream};
use crate::output::note;

/// Waits at most `wait` for a picture (of the `monitor`th monitor, from
/// 1, if given) and writes it to `path`.
pub(crate) async fn run(
    mut tx: ScreenSender,
    mut rx: ScreenReceiver,
    path: &Path,
    wait: Duration,
    monitor: Option<u32>,
) -> anyhow::Result<()> {
    let picture = tokio::time::timeout(wait, first_picture(&mut tx, &mut rx, monitor))
        .await
        .map_err(|_| {
            anyhow!(
                "no picture arrived within {} (is the device's display idle and its agent able to capture it?)",
                humantime::format_duration(wait)
            )
        });
    tx.close().await;
    let picture = picture??;
    let bytes = png_bytes(&picture)?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn first_picture(
    tx: &mut ScreenSender,
    rx: &mut ScreenReceiver,
    monitor: Option<u32>,
) -> anyhow::Result<Framebuffer> {
    let mut stream = Stream::default();
    // With --monitor: its index once the monitors are known; until the
    // stream shows it, nothing is drawn.
    let mut want: Option<u32> = None;
    loop {
        match rx.next().await {
            ScreenEvent::Monitors(ms) => {
                let Some(n) = monitor else { continue };
                let index = stream::nth_monitor(&ms, n).ok_or_else(|| {
                    anyhow!(
                        "the device has {} monitor(s): there is no monitor {n} (monitor_unknown)",
                        ms.len()
                    )
                })?;
                if !tx.choose_monitor(index).await? {
                    bail!("view only: --monitor cannot choose the monitor (control access needed)");
                }
                want = Some(index);
            }
            ScreenEvent::Format(f) => {
                if monitor.is_some() && want != Some(f.monitor) {
                    stream = Stream::default();
                    continue;
                }
                stream
                    .format(&f)
                    .map_err(|e| anyhow!("{e} ({})", e.code()))?
            }
            // Not the monitor asked for: acknowledged, not drawn.
            ScreenEvent::Frame(f) if stream.codec().is_none() => tx.ack(f.number).await?,
            ScreenEvent::Frame(f) => match stream.frame(&f, now_us()) {
                Ok(()) => {
                    tx.ack(f.number).await?;
                    if let Some(p) = stream.picture() {
                        return Ok(p.clone());
                    }
                }
                Err(e) => {
                    note!("a frame was refused ({}); asking for a keyframe", e.code());
                    tx.request_keyframe().await?;
                }
            },
            ScreenEvent::Resync { .. } => tx.request_keyframe().await?,
            ScreenEvent::Notice { code, message } => note!("{message} ({code})"),
            ScreenEvent::ChannelClosed { reason } => {
                bail!("the screen channel closed before a picture arrived ({reason})")
            }
            ScreenEvent::Ended { code, reason } => bail!("the session ended ({code}): {reason}"),
            ScreenEvent::Closed { code, reason } => bail!(
                "disconnected by the server ({}): {reason}",
                code.map_or_else(|| "no code".into(), |c| c.to_string())
            ),
            ScreenEvent::Cursor(_) | ScreenEvent::Clipboard(_) => {}
        }
    }
}

/// The picture as an 8-bit RGB PNG.
pub(crate) fn png_bytes(picture: &Framebuffer) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, picture.width(), picture.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    w.write_image_data(&picture.to_rgb8())?;
    w.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_holds_the_picture_exactly() {
        let px: Vec<u32> = (0..6 * 4).map(|i| i * 0x0A0B0C).collect();
        let pic = Framebuffer::from_pixels(6, 4, px).unwrap();
        let bytes = png_bytes(&pic).unwrap();
        let mut dec = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; dec.output_buffer_size().unwrap()];
        let info = dec.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (6, 4));
        assert_eq!(buf[..info.buffer_size()], pic.to_rgb8());
    }
}
