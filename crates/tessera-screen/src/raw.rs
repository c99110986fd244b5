//! raw-zstd: lossless dirty tiles, zstd-compressed (docs/PROTOCOL.md,
//! "Screen: raw-zstd payload").
//!
//! The encoder keeps the picture the viewers hold. Each call compares the
//! new picture with it in 64×64 tiles (only where damage says it may have
//! changed), looks for moved regions among the changed tiles, sends those
//! as copies, then sends the exact changed box of each remaining dirty tile
//! (merged along a tile row where boxes line up), 3 bytes per pixel.

use crate::codec::{Codec, DecodeError, Decoder, EncodeError, EncodedFrame, Encoder, FramePart};
use crate::framebuffer::Framebuffer;
use crate::geom::{CopyRect, Rect, TILE};
use crate::motion::{find_copies, may_follow, MAX_COPIES};
use crate::parts::{MAX_RECTS_PER_PART, PART_DATA_BUDGET};

/// Bytes per pixel in the payload: R, G, B.
pub const BYTES_PER_PIXEL: usize = 3;

/// The zstd level: 1 is the fastest of the standard levels and already
/// shrinks screen content tenfold or more.
const DEFAULT_LEVEL: i32 = 1;

pub struct RawZstdEncoder {
    /// The viewers' picture as this encoder last left it.
    model: Option<Framebuffer>,
    level: i32,
    copies: bool,
}

impl Default for RawZstdEncoder {
    fn default() -> Self {
        RawZstdEncoder::new()
    }
}

impl RawZstdEncoder {
    pub fn new() -> RawZstdEncoder {
        RawZstdEncoder {
            model: None,
            level: DEFAULT_LEVEL,
            copies: true,
        }
    }

    /// Compression level (zstd's; higher is smaller and slower).
    pub fn with_level(mut self, level: i32) -> RawZstdEncoder {
        self.level = level;
        self
    }

    /// Whether to look for moved regions (on by default).
    pub fn with_copy_detection(mut self, on: bool) -> RawZstdEncoder {
        self.copies = on;
        self
    }

    fn keyframe(&mut self, picture: &Framebuffer) -> Result<EncodedFrame, EncodeError> {
        self.model = Some(picture.clone());
        let parts = pack(picture, &[picture.bounds()], self.level)?;
        Ok(EncodedFrame {
            keyframe: true,
            copies: Vec::new(),
            parts,
        })
    }
}

impl Encoder for RawZstdEncoder {
    fn codec(&self) -> Codec {
        Codec::RawZstd
    }

    fn encode(
        &mut self,
        picture: &Framebuffer,
        damage: Option<&[Rect]>,
        keyframe: bool,
    ) -> Result<Option<EncodedFrame>, EncodeError> {
        let model = match self.model.as_mut() {
            Some(m)
                if !keyframe && m.width() == picture.width() && m.height() == picture.height() =>
            {
                m
            }
            _ => return self.keyframe(picture).map(Some),
        };
        let grid = TileGrid::new(picture.width(), picture.height());
        let mut dirty = grid.dirty_tiles(model, picture, damage);
        if dirty.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut copies: Vec<CopyRect> = Vec::new();
        if self.copies {
            for area in grid.components(&dirty) {
                if copies.len() >= MAX_COPIES {
                    break;
                }
                for c in find_copies(model, picture, area) {
                    // Copies of different areas must not read what another wrote.
                    if may_follow(&copies, &c) && copies.len() < MAX_COPIES {
                        copies.push(c);
                    }
                }
            }
            if !copies.is_empty() {
                for c in &copies {
                    // Found inside the picture, so they fit.
                    model
                        .copy_within(c)
                        .map_err(|e| EncodeError::Encoder(e.to_string()))?;
                }
                // What the copies fixed is clean now; what they covered may not be.
                let touched: Vec<Rect> = dirty
                    .iter()
                    .flatten()
                    .copied()
                    .chain(copies.iter().map(|c| c.dst))
                    .collect();
                dirty = grid.dirty_tiles(model, picture, Some(&touched));
            }
        }
        let rects = grid.merged_rects(&dirty);
        let parts = if rects.is_empty() {
            vec![FramePart::default()]
        } else {
            pack(picture, &rects, self.level)?
        };
        for r in &rects {
            for y in r.y..r.y + r.height {
                model
                    .span_mut(r.x, y, r.width)
                    .copy_from_slice(picture.span(r.x, y, r.width));
            }
        }
        Ok(Some(EncodedFrame {
            keyframe: false,
            copies,
            parts,
        }))
    }
}

/// The 64×64 tiles of a picture.
struct TileGrid {
    width: u32,
    height: u32,
    cols: u32,
    rows: u32,
}

impl TileGrid {
    fn new(width: u32, height: u32) -> TileGrid {
        TileGrid {
            width,
            height,
            cols: width.div_ceil(TILE),
            rows: height.div_ceil(TILE),
        }
    }

    fn tile(&self, col: u32, row: u32) -> Rect {
        let (x, y) = (col * TILE, row * TILE);
        Rect::new(x, y, TILE.min(self.width - x), TILE.min(self.height - y))
    }

    /// For each tile (row-major), the exact box of pixels that differ, for
    /// the tiles `damage` touches (all when `None`).
    fn dirty_tiles(
        &self,
        old: &Framebuffer,
        new: &Framebuffer,
        damage: Option<&[Rect]>,
    ) -> Vec<Option<Rect>> {
        let mut out = vec![None; (self.cols * self.rows) as usize];
        let mut wanted = vec![damage.is_none(); out.len()];
        if let Some(damage) = damage {
            for d in damage {
                let d = d.intersect(&Rect::new(0, 0, self.width, self.height));
                if d.is_empty() {
                    continue;
                }
                for row in d.y / TILE..=(d.bottom() as u32 - 1) / TILE {
                    for col in d.x / TILE..=(d.right() as u32 - 1) / TILE {
                        wanted[(row * self.cols + col) as usize] = true;
                    }
                }
            }
        }
        for row in 0..self.rows {
            for col in 0..self.cols {
                let i = (row * self.cols + col) as usize;
                if wanted[i] {
                    out[i] = changed_box(old, new, self.tile(col, row));
                }
            }
        }
        out
    }

    /// Bounding boxes of the changed pixels of 8-connected dirty tiles.
    fn components(&self, dirty: &[Option<Rect>]) -> Vec<Rect> {
        let mut seen = vec![false; dirty.len()];
        let mut out = Vec::new();
        for start in 0..dirty.len() {
            if seen[start] || dirty[start].is_none() {
                continue;
            }
            let mut area = Rect::default();
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(i) = stack.pop() {
                if let Some(r) = dirty[i] {
                    area = area.union(&r);
                }
                let (col, row) = (
                    i as i64 % i64::from(self.cols),
                    i as i64 / i64::from(self.cols),
                );
                for (dc, dr) in [
                    (-1, -1),
                    (0, -1),
                    (1, -1),
                    (-1, 0),
                    (1, 0),
                    (-1, 1),
                    (0, 1),
                    (1, 1),
                ] {
                    let (c, r) = (col + dc, row + dr);
                    if c < 0 || r < 0 || c >= i64::from(self.cols) || r >= i64::from(self.rows) {
                        continue;
                    }
                    let j = (r * i64::from(self.cols) + c) as usize;
                    if !seen[j] && dirty[j].is_some() {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
            out.push(area);
        }
        out
    }

    /// The dirty boxes, with neighbours along a tile row merged where they
    /// share their top and bottom and touch.
    fn merged_rects(&self, dirty: &[Option<Rect>]) -> Vec<Rect> {
        let mut out: Vec<Rect> = Vec::new();
        for row in 0..self.rows {
            let mut open: Option<Rect> = None;
            for col in 0..self.cols {
                let Some(r) = dirty[(row * self.cols + col) as usize] else {
                    if let Some(o) = open.take() {
                        out.push(o);
                    }
                    continue;
                };
                open = match open {
                    Some(o)
                        if o.y == r.y && o.height == r.height && o.right() == u64::from(r.x) =>
                    {
                        Some(o.union(&r))
                    }
                    Some(o) => {
                        out.push(o);
                        Some(r)
                    }
                    None => Some(r),
                };
            }
            if let Some(o) = open {
                out.push(o);
            }
        }
        out
    }
}

/// The smallest box of `tile` holding every pixel that differs.
fn changed_box(old: &Framebuffer, new: &Framebuffer, tile: Rect) -> Option<Rect> {
    let (mut x0, mut x1, mut y0, mut y1) = (u32::MAX, 0, u32::MAX, 0);
    for y in tile.y..tile.y + tile.height {
        let a = old.span(tile.x, y, tile.width);
        let b = new.span(tile.x, y, tile.width);
        if a == b {
            continue;
        }
        // Found a difference: so both searches below end inside the row.
        let first = a.iter().zip(b).position(|(p, q)| p != q).unwrap_or(0) as u32;
        let last = a.iter().zip(b).rposition(|(p, q)| p != q).unwrap_or(0) as u32;
        x0 = x0.min(tile.x + first);
        x1 = x1.max(tile.x + last + 1);
        y0 = y0.min(y);
        y1 = y + 1;
    }
    (y0 != u32::MAX).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
}

/// Serialises `rects` of `picture` into parts: one zstd frame if it fits a
/// message, else rectangles (cut along rows) grouped by raw size, so no
/// part can exceed the budget whatever zstd makes of it.
fn pack(picture: &Framebuffer, rects: &[Rect], level: i32) -> Result<Vec<FramePart>, EncodeError> {
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(EncodeError::Compress)?;
    let raw_len: u64 = rects.iter().map(|r| r.area()).sum::<u64>() * BYTES_PER_PIXEL as u64;
    if rects.len() <= MAX_RECTS_PER_PART && raw_len <= 4 * PART_DATA_BUDGET as u64 {
        let data = compressor
            .compress(&raw_pixels(picture, rects))
            .map_err(EncodeError::Compress)?;
        if data.len() <= PART_DATA_BUDGET {
            return Ok(vec![FramePart {
                rects: rects.to_vec(),
                data,
            }]);
        }
    }
    // zstd never grows data by more than a small fraction; keep a margin.
    let raw_budget = (PART_DATA_BUDGET - PART_DATA_BUDGET / 64) as u64;
    let mut parts = Vec::new();
    let mut current: Vec<Rect> = Vec::new();
    let mut current_len = 0u64;
    let row_bytes = |r: &Rect| u64::from(r.width) * BYTES_PER_PIXEL as u64;
    let mut flush =
        |current: &mut Vec<Rect>, parts: &mut Vec<FramePart>| -> Result<(), EncodeError> {
            if current.is_empty() {
                return Ok(());
            }
            let data = compressor
                .compress(&raw_pixels(picture, current))
                .map_err(EncodeError::Compress)?;
            parts.push(FramePart {
                rects: std::mem::take(current),
                data,
            });
            Ok(())
        };
    for r in rects {
        let mut rest = *r;
        while !rest.is_empty() {
            let room = raw_budget - current_len;
            let fit_rows = (room / row_bytes(&rest)).min(u64::from(rest.height)) as u32;
            if fit_rows == 0 || current.len() >= MAX_RECTS_PER_PART {
                flush(&mut current, &mut parts)?;
                current_len = 0;
                continue;
            }
            let piece = Rect::new(rest.x, rest.y, rest.width, fit_rows);
            current.push(piece);
            current_len += piece.area() * BYTES_PER_PIXEL as u64;
            rest = Rect::new(
                rest.x,
                rest.y + fit_rows,
                rest.width,
                rest.height - fit_rows,
            );
        }
    }
    flush(&mut current, &mut parts)?;
    Ok(parts)
}

fn raw_pixels(picture: &Framebuffer, rects: &[Rect]) -> Vec<u8> {
    let len: u64 = rects.iter().map(|r| r.area()).sum::<u64>() * BYTES_PER_PIXEL as u64;
    let mut out = vec![0u8; len as usize];
    let mut at = 0;
    for r in rects {
        for y in r.y..r.y + r.height {
            let n = r.width as usize * BYTES_PER_PIXEL;
            for (b, p) in out[at..at + n]
                .chunks_exact_mut(BYTES_PER_PIXEL)
                .zip(picture.span(r.x, y, r.width))
            {
                b.copy_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
            }
            at += n;
        }
    }
    out
}

/// Most rectangles and copies one frame may carry (a viewer refuses more).
const MAX_FRAME_RECTS: usize = 1 << 16;

#[derive(Default)]
pub struct RawZstdDecoder {
    has_picture: bool,
}

impl RawZstdDecoder {
    pub fn new() -> RawZstdDecoder {
        RawZstdDecoder::default()
    }
}

impl Decoder for RawZstdDecoder {
    fn codec(&self) -> Codec {
        Codec::RawZstd
    }

    fn decode(
        &mut self,
        frame: &EncodedFrame,
        picture: &mut Framebuffer,
    ) -> Result<Rect, DecodeError> {
        if !frame.keyframe && !self.has_picture {
            return Err(DecodeError::NoPicture);
        }
        let (w, h) = (picture.width(), picture.height());
        let rect_count: usize = frame.parts.iter().map(|p| p.rects.len()).sum();
        if rect_count + frame.copies.len() > MAX_FRAME_RECTS {
            return Err(DecodeError::TooManyParts);
        }
        for c in &frame.copies {
            if !c.src().fits(w, h) {
                return Err(DecodeError::OutOfBounds(crate::FormatError::OutOfBounds(
                    c.src(),
                )));
            }
            if !c.dst.fits(w, h) {
                return Err(DecodeError::OutOfBounds(crate::FormatError::OutOfBounds(
                    c.dst,
                )));
            }
        }
        let mut total = 0u64;
        for r in frame.rects() {
            if !r.fits(w, h) {
                return Err(DecodeError::OutOfBounds(crate::FormatError::OutOfBounds(
                    *r,
                )));
            }
            total += r.area();
        }
        // The encoder never overlaps rectangles; twice the picture is slack.
        if total > 2 * picture.bounds().area() {
            return Err(DecodeError::TooManyPixels);
        }
        // Decompress every part before touching the picture.
        let mut decompressor =
            zstd::bulk::Decompressor::new().map_err(|e| DecodeError::BadPayload {
                part: 0,
                detail: e.to_string(),
            })?;
        let mut payloads = Vec::with_capacity(frame.parts.len());
        for (i, part) in frame.parts.iter().enumerate() {
            let need = part.rects.iter().map(|r| r.area()).sum::<u64>() as usize * BYTES_PER_PIXEL;
            if need == 0 {
                if !part.data.is_empty() {
                    return Err(DecodeError::BadPayload {
                        part: i,
                        detail: "data without rectangles".into(),
                    });
                }
                payloads.push(Vec::new());
                continue;
            }
            let bytes =
                decompressor
                    .decompress(&part.data, need)
                    .map_err(|e| DecodeError::BadPayload {
                        part: i,
                        detail: e.to_string(),
                    })?;
            if bytes.len() != need {
                return Err(DecodeError::BadPayload {
                    part: i,
                    detail: format!("{} bytes, rectangles need {need}", bytes.len()),
                });
            }
            payloads.push(bytes);
        }
        // Checked above: nothing below can fail.
        let mut changed = Rect::default();
        for c in &frame.copies {
            picture.copy_within(c)?;
            changed = changed.union(&c.dst);
        }
        for (part, bytes) in frame.parts.iter().zip(&payloads) {
            let mut at = 0;
            for r in &part.rects {
                for y in r.y..r.y + r.height {
                    let n = r.width as usize * BYTES_PER_PIXEL;
                    let src = &bytes[at..at + n];
                    for (px, b) in picture
                        .span_mut(r.x, y, r.width)
                        .iter_mut()
                        .zip(src.chunks_exact(3))
                    {
                        *px = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
                    }
                    at += n;
                }
                changed = changed.union(r);
            }
        }
        self.has_picture = true;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32, seed: u32) -> Framebuffer {
        let mut s = seed | 1;
        let px = (0..w * h)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s & 0xFF_FFFF
            })
            .collect();
        Framebuffer::from_pixels(w, h, px).unwrap()
    }

    fn round_trip(
        enc: &mut RawZstdEncoder,
        dec: &mut RawZstdDecoder,
        view: &mut Framebuffer,
        pic: &Framebuffer,
    ) -> Option<EncodedFrame> {
        let frame = enc.encode(pic, None, false).unwrap()?;
        dec.decode(&frame, view).unwrap();
        assert!(view == pic, "viewer picture differs after a frame");
        Some(frame)
    }

    #[test]
    fn first_frame_is_a_keyframe_and_idle_sends_nothing() {
        let pic = noise(100, 70, 3);
        let mut enc = RawZstdEncoder::new();
        let mut dec = RawZstdDecoder::new();
        let mut view = Framebuffer::new(100, 70).unwrap();
        let f = round_trip(&mut enc, &mut dec, &mut view, &pic).unwrap();
        assert!(f.keyframe);
        assert!(enc.encode(&pic, None, false).unwrap().is_none());
        assert!(enc.encode(&pic, Some(&[]), false).unwrap().is_none());
        assert!(enc
            .encode(&pic, None, true)
            .unwrap()
            .is_some_and(|f| f.keyframe));
    }

    #[test]
    fn only_the_exact_change_is_sent() {
        let mut pic = Framebuffer::new(256, 256).unwrap();
        let mut enc = RawZstdEncoder::new();
        let mut dec = RawZstdDecoder::new();
        let mut view = Framebuffer::new(256, 256).unwrap();
        round_trip(&mut enc, &mut dec, &mut view, &pic);
        pic.fill(Rect::new(70, 10, 3, 2), 0xFFFFFF).unwrap();
        let f = round_trip(&mut enc, &mut dec, &mut view, &pic).unwrap();
        assert_eq!(
            f.rects().copied().collect::<Vec<_>>(),
            [Rect::new(70, 10, 3, 2)]
        );
        // A change across a tile edge: one box per tile, merged along the row.
        pic.fill(Rect::new(60, 100, 10, 5), 0x123456).unwrap();
        let f = round_trip(&mut enc, &mut dec, &mut view, &pic).unwrap();
        assert_eq!(
            f.rects().copied().collect::<Vec<_>>(),
            [Rect::new(60, 100, 10, 5)]
        );
    }

    #[test]
    fn a_scroll_travels_as_a_copy() {
        let mut pic = noise(640, 480, 9);
        let mut enc = RawZstdEncoder::new();
        let mut dec = RawZstdDecoder::new();
        let mut view = Framebuffer::new(640, 480).unwrap();
        round_trip(&mut enc, &mut dec, &mut view, &pic);
        // Scroll 16 rows up, new text at the bottom.
        pic.copy_within(&CopyRect {
            src_x: 0,
            src_y: 16,
            dst: Rect::new(0, 0, 640, 464),
        })
        .unwrap();
        let fresh = noise(640, 16, 11);
        for y in 0..16 {
            pic.span_mut(0, 464 + y, 640).copy_from_slice(fresh.row(y));
        }
        let f = round_trip(&mut enc, &mut dec, &mut view, &pic).unwrap();
        assert!(!f.copies.is_empty());
        let sent: u64 = f.rects().map(Rect::area).sum();
        assert!(sent <= 640 * 32, "sent {sent} pixels");
    }

    #[test]
    fn damage_limits_where_changes_are_looked_for() {
        let mut pic = Framebuffer::new(128, 128).unwrap();
        let mut enc = RawZstdEncoder::new();
        enc.encode(&pic, None, false).unwrap();
        pic.fill(Rect::new(0, 0, 1, 1), 1).unwrap();
        assert!(enc
            .encode(&pic, Some(&[Rect::new(100, 100, 5, 5)]), false)
            .unwrap()
            .is_none());
        assert!(enc
            .encode(&pic, Some(&[Rect::new(0, 0, 1, 1)]), false)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_large_noisy_keyframe_is_split_under_the_cap() {
        let pic = noise(1536, 1024, 5);
        let mut enc = RawZstdEncoder::new();
        let f = enc.encode(&pic, None, false).unwrap().unwrap();
        assert!(f.parts.len() >= 2);
        for part in &f.parts {
            assert!(part.data.len() <= PART_DATA_BUDGET);
        }
        let mut view = Framebuffer::new(1536, 1024).unwrap();
        RawZstdDecoder::new().decode(&f, &mut view).unwrap();
        assert!(view == pic);
        let msgs = f.into_messages(1, 0);
        assert!(msgs
            .iter()
            .all(|m| prost::Message::encoded_len(m) < tessera_proto::MAX_DEVICE_FRAME - 1024));
    }

    #[test]
    fn bad_frames_are_refused_and_change_nothing() {
        let pic = noise(64, 64, 1);
        let mut view = pic.clone();
        let mut dec = RawZstdDecoder::new();
        let delta = EncodedFrame {
            keyframe: false,
            copies: vec![],
            parts: vec![FramePart {
                rects: vec![Rect::new(0, 0, 1, 1)],
                data: vec![],
            }],
        };
        assert_eq!(dec.decode(&delta, &mut view), Err(DecodeError::NoPicture));
        let mut key = delta.clone();
        key.keyframe = true;
        key.parts[0].rects = vec![Rect::new(60, 60, 5, 5)];
        assert_eq!(
            dec.decode(&key, &mut view).unwrap_err().code(),
            "frame_out_of_bounds"
        );
        key.parts[0].rects = vec![Rect::new(0, 0, 2, 2)];
        key.parts[0].data = zstd::bulk::compress(&[0u8; 11], 1).unwrap();
        assert_eq!(
            dec.decode(&key, &mut view).unwrap_err().code(),
            "bad_frame_payload"
        );
        key.parts[0].data = b"not zstd".to_vec();
        assert_eq!(
            dec.decode(&key, &mut view).unwrap_err().code(),
            "bad_frame_payload"
        );
        key.copies = vec![CopyRect {
            src_x: 63,
            src_y: 0,
            dst: Rect::new(0, 0, 2, 2),
        }];
        assert_eq!(
            dec.decode(&key, &mut view).unwrap_err().code(),
            "frame_out_of_bounds"
        );
        assert!(view == pic);
    }
}
