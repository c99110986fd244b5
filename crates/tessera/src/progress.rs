//! Progress bars for file transfers, drawn from the transfer events the
//! agent library reports (the library itself draws nothing).

use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use tessera_agent::auto::{TransferEvent, TransferReport};
use tessera_agent::files::Outgoing;

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// One bar for everything `tessera send` sends, named after the file in
/// progress and cleared once the last file went out; hidden when `show` is
/// false.
pub(crate) fn sending(items: &[Outgoing], show: bool) -> impl FnMut(TransferEvent) {
    let total: u64 = items.iter().map(|o| o.size).sum();
    let bar = if show {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(style());
    let mut files_left = items.len();
    move |event| match event {
        TransferEvent::Started { name, .. } => bar.set_message(name),
        TransferEvent::Progress { bytes } => bar.inc(bytes),
        TransferEvent::Finished { .. } => {
            files_left = files_left.saturating_sub(1);
            if files_left == 0 {
                bar.finish_and_clear();
            }
        }
        TransferEvent::Abandoned => bar.abandon(),
    }
}

/// A bar per file the agent receives in an automatic session.
pub(crate) fn receiving() -> TransferReport {
    let current: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Arc::new(move |event| {
        let Ok(mut current) = current.lock() else {
            return;
        };
        match event {
            TransferEvent::Started { name, size } => {
                let bar = ProgressBar::new(size).with_message(name);
                bar.set_style(style());
                *current = Some(bar);
            }
            TransferEvent::Progress { bytes } => {
                if let Some(bar) = current.as_ref() {
                    bar.inc(bytes);
                }
            }
            TransferEvent::Finished { .. } => {
                if let Some(bar) = current.take() {
                    bar.finish_and_clear();
                }
            }
            TransferEvent::Abandoned => {
                if let Some(bar) = current.take() {
                    bar.abandon();
                }
            }
        }
    })
}
