//! Screen messages from devices and viewers through the relay's rules
//! (`tessera_server::relay::screen`): any sequence of decoded `Screen`
//! bodies, from either side, with any backlog, is judged without a panic,
//! and what the rules let through keeps their promises (input is stamped
//! with its sender; a viewer is only ever given whole frames, and after a
//! skip only from a keyframe on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tessera_core::kinds::ViewerAccess;
use tessera_proto::v1::screen::Body as SB;
use tessera_proto::v1::Screen;
use tessera_server::relay::screen::{
    Backlog, DeviceStream, FromDevice, FromViewer, PartFate, ViewerFlow, ViewerRules,
};

fuzz_target!(|data: &[u8]| {
    let now = tokio::time::Instant::now();
    let mut device = DeviceStream::default();
    let mut viewer = ViewerRules::new(ViewerAccess::Control, 7, 200, now);
    let mut flow = ViewerFlow::new();
    // The frame whose parts the viewer is being given, the last frame it
    // was given, and whether it skipped one since.
    let mut open: Option<u64> = None;
    let mut last_given: Option<u64> = None;
    let mut skipped_since = false;
    let mut rest = data;
    while rest.len() > 2 {
        let (head, tail) = rest.split_at(2);
        let len = usize::from(head[1]).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let Ok(screen) = Screen::decode(msg) else {
            continue;
        };
        if head[0] & 1 == 0 {
            let backlog = Backlog {
                frames: usize::from(head[0] >> 1 & 3),
                bytes: 0,
            };
            let Ok(FromDevice::Frame(part)) = device.judge(screen.body.as_ref()) else {
                continue;
            };
            match flow.part(part, backlog) {
                PartFate::Deliver => {
                    if part.first {
                        if skipped_since {
                            assert!(part.keyframe, "after a skip, a keyframe first");
                            skipped_since = false;
                        }
                        assert!(last_given.is_none_or(|n| part.number > n));
                        last_given = Some(part.number);
                        open = (!part.last).then_some(part.number);
                    } else {
                        assert_eq!(open, Some(part.number), "only parts of a frame begun");
                        if part.last {
                            open = None;
                        }
                    }
                }
                PartFate::Skip | PartFate::SkipAndAskKeyframe => {
                    if part.first {
                        skipped_since = last_given.is_some() || skipped_since;
                        open = None;
                    }
                }
            }
        } else if let Ok(FromViewer::Input(body)) = viewer.judge(screen.body, flow.delivered(), now)
        {
            let stamped = match body {
                SB::Pointer(p) => p.viewer,
                SB::Key(k) => k.viewer,
                SB::SpecialKeys(s) => s.viewer,
                SB::Clipboard(c) => c.viewer,
                other => panic!("not input: {other:?}"),
            };
            assert_eq!(stamped, 7);
        }
    }
});
