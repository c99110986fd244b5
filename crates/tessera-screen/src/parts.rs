//! Frames on the wire: one `ScreenFrame` message per part, every part under
//! the device plane's message cap; and the viewer's reassembly of parts
//! into whole frames (a frame is drawn only once whole).

use tessera_proto::v1 as pb;

use crate::codec::{EncodedFrame, FramePart};
use crate::geom::{CopyRect, Rect};

/// Most payload bytes in one part: the 4 MiB device cap less room for the
/// rectangles, copies and envelope around them.
pub const PART_DATA_BUDGET: usize = 3 * 1024 * 1024;
/// Most rectangles in one part (≤ 20 bytes each on the wire: ≤ 160 KiB).
pub(crate) const MAX_RECTS_PER_PART: usize = 8192;
/// Most parts a viewer accepts for one frame (a 16384² keyframe of noise
/// needs about 260).
const MAX_PARTS: u32 = 512;
/// Most payload bytes a viewer buffers for one frame (the server's own cap
/// on a frame): 512 parts of a device's largest message would be 2 GiB.
pub(crate) const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

impl EncodedFrame {
    /// The messages carrying this frame as number `number`; copies travel
    /// in the first part.
    pub fn into_messages(self, number: u64, captured_at_us: i64) -> Vec<pb::ScreenFrame> {
        let count = self.parts.len().max(1);
        let mut copies: Vec<pb::CopyRect> = self.copies.into_iter().map(Into::into).collect();
        let mut parts = self.parts;
        if parts.is_empty() {
            parts.push(FramePart::default());
        }
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| pb::ScreenFrame {
                number,
                keyframe: self.keyframe,
                part: i as u32,
                last_part: i + 1 == count,
                copies: std::mem::take(&mut copies),
                rects: part.rects.into_iter().map(Into::into).collect(),
                data: part.data.into(),
                captured_at_us,
            })
            .collect()
    }
}

/// A whole frame as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedFrame {
    pub number: u64,
    pub captured_at_us: i64,
    pub frame: EncodedFrame,
}

/// Why a part was refused (the frame being assembled is dropped).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartError {
    #[error("part {got} of frame {number} arrived, part {expected} was due")]
    OutOfOrder {
        number: u64,
        expected: u32,
        got: u32,
    },
    #[error("frame {got} began before frame {pending} was whole")]
    Interrupted { pending: u64, got: u64 },
    #[error("frame {got} is not newer than frame {last}")]
    NotNewer { last: u64, got: u64 },
    #[error("frame {0} has too many parts")]
    TooManyParts(u64),
    #[error("frame {0} is larger than a viewer buffers")]
    TooManyBytes(u64),
    #[error("copies outside the first part of frame {0}")]
    LateCopies(u64),
    #[error("a copy without its destination in frame {0}")]
    MissingRect(u64),
}

impl PartError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            PartError::OutOfOrder { .. } => "frame_part_out_of_order",
            PartError::Interrupted { .. } => "frame_interrupted",
            PartError::NotNewer { .. } => "frame_not_newer",
            PartError::TooManyParts(_) => "frame_too_many_parts",
            PartError::TooManyBytes(_) => "frame_too_many_bytes",
            PartError::LateCopies(_) => "frame_late_copies",
            PartError::MissingRect(_) => "frame_missing_rect",
        }
    }
}

/// Collects the parts of one frame at a time.
#[derive(Default, Debug)]
pub struct FrameAssembler {
    pending: Option<ReceivedFrame>,
    next_part: u32,
    /// Payload bytes of the pending frame so far.
    pending_bytes: usize,
    last_number: Option<u64>,
}

impl FrameAssembler {
    pub fn new() -> FrameAssembler {
        FrameAssembler::default()
    }

    /// Takes one part; returns the frame when it is whole. Frame numbers
    /// must increase (gaps are fine: the server drops whole frames for a
    /// slow viewer); parts must come in order, uninterrupted.
    pub fn push(&mut self, msg: pb::ScreenFrame) -> Result<Option<ReceivedFrame>, PartError> {
        let result = self.accept(msg);
        if result.is_err() {
            self.pending = None;
            self.next_part = 0;
            self.pending_bytes = 0;
        }
        result
    }

    fn accept(&mut self, msg: pb::ScreenFrame) -> Result<Option<ReceivedFrame>, PartError> {
        match &self.pending {
            Some(p) if p.number != msg.number => {
                return Err(PartError::Interrupted {
                    pending: p.number,
                    got: msg.number,
                })
            }
            Some(_) => {}
            None => {
                if let Some(last) = self.last_number.filter(|&l| msg.number <= l) {
                    return Err(PartError::NotNewer {
                        last,
                        got: msg.number,
                    });
                }
            }
        }
        if msg.part != self.next_part {
            return Err(PartError::OutOfOrder {
                number: msg.number,
                expected: self.next_part,
                got: msg.part,
            });
        }
        if msg.part >= MAX_PARTS {
            return Err(PartError::TooManyParts(msg.number));
        }
        if msg.part > 0 && !msg.copies.is_empty() {
            return Err(PartError::LateCopies(msg.number));
        }
        let bytes = self.pending_bytes.saturating_add(msg.data.len());
        if bytes > MAX_FRAME_BYTES {
            return Err(PartError::TooManyBytes(msg.number));
        }
        self.pending_bytes = bytes;
        if msg.copies.iter().any(|c| c.dst.is_none()) {
            return Err(PartError::MissingRect(msg.number));
        }
        let pending = self.pending.get_or_insert_with(|| ReceivedFrame {
            number: msg.number,
            captured_at_us: msg.captured_at_us,
            frame: EncodedFrame {
                keyframe: msg.keyframe,
                copies: msg.copies.iter().copied().map(CopyRect::from).collect(),
                parts: Vec::new(),
            },
        });
        pending.frame.parts.push(FramePart {
            rects: msg.rects.into_iter().map(Rect::from).collect(),
            data: msg.data.into(),
        });
        self.next_part += 1;
        if !msg.last_part {
            return Ok(None);
        }
        self.next_part = 0;
        self.pending_bytes = 0;
        self.last_number = Some(msg.number);
        Ok(self.pending.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(parts: usize) -> EncodedFrame {
        EncodedFrame {
            keyframe: false,
            copies: vec![CopyRect {
                src_x: 0,
                src_y: 8,
                dst: Rect::new(0, 0, 8, 8),
            }],
            parts: (0..parts)
                .map(|i| FramePart {
                    rects: vec![Rect::new(0, i as u32, 1, 1)],
                    data: vec![i as u8],
                })
                .collect(),
        }
    }

    #[test]
    fn parts_reassemble_into_the_frame() {
        let f = frame(3);
        let msgs = f.clone().into_messages(7, 42);
        assert_eq!(msgs.len(), 3);
        assert!(msgs[2].last_part && !msgs[1].last_part);
        assert!(msgs[1].copies.is_empty());
        let mut a = FrameAssembler::new();
        let mut out = None;
        for m in msgs {
            out = a.push(m).unwrap();
        }
        assert_eq!(
            out,
            Some(ReceivedFrame {
                number: 7,
                captured_at_us: 42,
                frame: f
            })
        );
    }

    #[test]
    fn out_of_order_and_interrupted_parts_are_refused() {
        let msgs = frame(3).into_messages(1, 0);
        let mut a = FrameAssembler::new();
        assert_eq!(
            a.push(msgs[1].clone()).unwrap_err().code(),
            "frame_part_out_of_order"
        );
        a.push(msgs[0].clone()).unwrap();
        let other = frame(1).into_messages(2, 0);
        assert_eq!(
            a.push(other[0].clone()).unwrap_err().code(),
            "frame_interrupted"
        );
        // After an error the assembler starts afresh with the next frame.
        assert!(a.push(other[0].clone()).unwrap().is_some());
        assert_eq!(
            a.push(other[0].clone()).unwrap_err().code(),
            "frame_not_newer"
        );
    }

    #[test]
    fn copies_in_later_parts_are_refused() {
        let mut msgs = frame(2).into_messages(1, 0);
        msgs[1].copies = msgs[0].copies.clone();
        let mut a = FrameAssembler::new();
        a.push(msgs[0].clone()).unwrap();
        assert_eq!(
            a.push(msgs[1].clone()).unwrap_err().code(),
            "frame_late_copies"
        );
    }

    #[test]
    fn a_frame_past_the_byte_cap_is_refused_and_the_next_is_taken() {
        let mut a = FrameAssembler::new();
        let part = |number: u64, part: u32, last: bool| pb::ScreenFrame {
            number,
            part,
            last_part: last,
            data: vec![0u8; PART_DATA_BUDGET].into(),
            ..Default::default()
        };
        let parts = (MAX_FRAME_BYTES / PART_DATA_BUDGET) as u32;
        for i in 0..parts {
            assert!(a.push(part(1, i, false)).unwrap().is_none());
        }
        let e = a.push(part(1, parts, false)).unwrap_err();
        assert_eq!(e.code(), "frame_too_many_bytes");
        // Nothing of it is kept: a later whole frame is taken.
        let whole = a.push(part(2, 0, true)).unwrap().expect("whole");
        assert_eq!(whole.number, 2);
    }
}
