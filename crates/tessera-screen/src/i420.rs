//! The H.264 encoder's input picture: 4:2:0 planes (I420) converted from
//! the captured `0x00RRGGBB` pixels with the integer BT.601 (limited range)
//! arithmetic of OpenH264's own converter, to the same values.
//!
//! It is written row by row over plain slices so the compiler vectorises
//! it, pads an odd width or height by repeating the last column or row (no
//! padded copy of the picture is made), and converts by rectangle: an
//! encoder that knows what changed converts only that and keeps the rest
//! of the planes from the previous picture.

use openh264::formats::YUVSource;

use crate::{Framebuffer, Rect};

/// Rounds up to even (4:2:0 needs it).
pub(crate) fn even(n: u32) -> u32 {
    n + (n & 1)
}

/// I420 planes of an even-sized picture.
pub(crate) struct I420 {
    /// The size of the pictures converted (before padding).
    source: (u32, u32),
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

/// Luma of one pixel: `((66 R + 129 G + 25 B) >> 8) + 16`, 16..=235.
/// In 16-bit lanes (the sum is at most 220 × 255), which SSE2 multiplies
/// eight at a time; wrapping operations because nothing overflows.
#[inline(always)]
fn luma(p: u32) -> u8 {
    let r = ((p >> 16) & 0xFF) as u16;
    let g = ((p >> 8) & 0xFF) as u16;
    let b = (p & 0xFF) as u16;
    let sum = r
        .wrapping_mul(66)
        .wrapping_add(g.wrapping_mul(129))
        .wrapping_add(b.wrapping_mul(25));
    ((sum >> 8) as u8).wrapping_add(16)
}

/// Chroma of a 2×2 block: each channel averaged with rounding
/// (`(a + b + c + d + 2) >> 2`), then `U = ((-38 R - 74 G + 112 B) >> 8) + 128`
/// and `V = ((112 R - 94 G - 18 B) >> 8) + 128` (arithmetic shift), 16..=239.
/// R and B are summed side by side in one word (four bytes fit 16 bits);
/// the weighted sums fit 16 bits signed (|112 × 255| = 28560).
#[inline(always)]
fn chroma(a: u32, b: u32, c: u32, d: u32) -> (u8, u8) {
    const RB: u32 = 0x00FF_00FF;
    let rb = (a & RB) + (b & RB) + (c & RB) + (d & RB) + 0x0002_0002;
    let g = ((a >> 8) & 0xFF) + ((b >> 8) & 0xFF) + ((c >> 8) & 0xFF) + ((d >> 8) & 0xFF) + 2;
    let r = ((rb >> 18) & 0xFF) as i16;
    let bl = ((rb & 0xFFFF) >> 2) as i16;
    let g = (g >> 2) as i16;
    let u = bl
        .wrapping_mul(112)
        .wrapping_sub(r.wrapping_mul(38))
        .wrapping_sub(g.wrapping_mul(74));
    let v = r
        .wrapping_mul(112)
        .wrapping_sub(g.wrapping_mul(94))
        .wrapping_sub(bl.wrapping_mul(18));
    (((u >> 8) + 128) as u8, ((v >> 8) + 128) as u8)
}

/// Luma of a run of pixels.
fn luma_row(src: &[u32], dst: &mut [u8]) {
    for (d, &p) in dst.iter_mut().zip(src) {
        *d = luma(p);
    }
}

/// Chroma of a run of 2×2 blocks: `src0` and `src1` are two rows of
/// `2 * u.len()` pixels.
fn chroma_row(src0: &[u32], src1: &[u32], u: &mut [u8], v: &mut [u8]) {
    let pairs = src0.chunks_exact(2).zip(src1.chunks_exact(2));
    for ((u, v), (p, q)) in u.iter_mut().zip(v.iter_mut()).zip(pairs) {
        (*u, *v) = chroma(p[0], p[1], q[0], q[1]);
    }
}

impl I420 {
    /// Planes for a `width` × `height` picture (padded to even), black.
    pub(crate) fn new(width: u32, height: u32) -> I420 {
        let (w, h) = (even(width) as usize, even(height) as usize);
        I420 {
            source: (width, height),
            width: w,
            height: h,
            y: vec![16; w * h],
            u: vec![128; w * h / 4],
            v: vec![128; w * h / 4],
        }
    }

    /// Whether these planes hold a picture of this size (the padding
    /// depends on the exact size, not only the even one).
    pub(crate) fn fits(&self, picture: &Framebuffer) -> bool {
        self.source == (picture.width(), picture.height())
    }

    /// Converts the whole of `picture` (of the planes' size).
    pub(crate) fn convert_all(&mut self, picture: &Framebuffer) {
        self.convert_rect(picture, picture.bounds());
    }

    /// Converts the part of `picture` under `rect`, widened to the 2×2
    /// blocks it touches; the rest of the planes stays as it was.
    pub(crate) fn convert_rect(&mut self, picture: &Framebuffer, rect: Rect) {
        let rect = rect.intersect(&picture.bounds());
        if rect.is_empty() || !self.fits(picture) {
            return;
        }
        let (w, h) = (picture.width() as usize, picture.height() as usize);
        let cw = self.width;
        let x0 = rect.x as usize & !1;
        let y0 = rect.y as usize & !1;
        // Even ends, at most the padded size.
        let x1 = (rect.right() as usize + 1) & !1;
        let y1 = (rect.bottom() as usize + 1) & !1;
        // Columns with a source pixel of their own, and whether the padding
        // column (a copy of the last one) is in the rectangle.
        let inner = x1.min(w);
        let pad_col = x1 > w;
        for yy in (y0..y1).step_by(2) {
            let row0 = picture.row(yy as u32);
            let row1 = picture.row((yy + 1).min(h - 1) as u32);
            for (sy, src) in [(yy, row0), (yy + 1, row1)] {
                let dst = &mut self.y[sy * cw..(sy + 1) * cw];
                luma_row(&src[x0..inner], &mut dst[x0..inner]);
                if pad_col {
                    dst[w] = luma(src[w - 1]);
                }
            }
            let half = cw / 2;
            let crow = yy / 2 * half;
            let (c0, c1) = (x0 / 2, inner / 2);
            chroma_row(
                &row0[x0..inner & !1],
                &row1[x0..inner & !1],
                &mut self.u[crow + c0..crow + c1],
                &mut self.v[crow + c0..crow + c1],
            );
            if pad_col {
                // The last block: the last real column and its copy.
                let (a, b) = (row0[w - 1], row1[w - 1]);
                (self.u[crow + half - 1], self.v[crow + half - 1]) = chroma(a, a, b, b);
            }
        }
    }
}

impl YUVSource for I420 {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::formats::{BgraSliceU8, YUVBuffer};

    /// The reference: OpenH264's converter on the picture padded by
    /// repeating its last column and row.
    fn reference(p: &Framebuffer) -> YUVBuffer {
        let (w, h) = (p.width() as usize, p.height() as usize);
        let (cw, ch) = (even(w as u32) as usize, even(h as u32) as usize);
        let mut bgra = Vec::with_capacity(cw * ch * 4);
        for y in 0..ch {
            let row = p.row(y.min(h - 1) as u32);
            for x in 0..cw {
                bgra.extend_from_slice(&row[x.min(w - 1)].to_le_bytes());
            }
        }
        let mut yuv = YUVBuffer::new(cw, ch);
        yuv.read_bgra8(BgraSliceU8::new(&bgra, (cw, ch)));
        yuv
    }

    fn random(w: u32, h: u32, seed: u32) -> Framebuffer {
        let mut s = seed | 1;
        let px = (0..w * h)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // Extremes too: black, white and saturated channels.
                match i % 7 {
                    0 => 0,
                    1 => 0xFF_FFFF,
                    2 => s & 0xFF_0000,
                    _ => s & 0xFF_FFFF,
                }
            })
            .collect();
        Framebuffer::from_pixels(w, h, px).unwrap()
    }

    fn same(a: &I420, b: &YUVBuffer) {
        assert_eq!(a.dimensions(), b.dimensions());
        assert!(a.y() == b.y(), "Y differs");
        assert!(a.u() == b.u(), "U differs");
        assert!(a.v() == b.v(), "V differs");
    }

    #[test]
    fn the_conversion_matches_openh264s_for_even_and_odd_sizes() {
        for (w, h) in [(64, 32), (1920, 8), (33, 17), (1, 1), (2, 3), (161, 99)] {
            let p = random(w, h, w * 31 + h);
            let mut mine = I420::new(w, h);
            mine.convert_all(&p);
            same(&mine, &reference(&p));
        }
    }

    #[test]
    fn converting_the_changed_rectangles_equals_converting_everything() {
        for (w, h) in [(97, 63), (128, 64)] {
            let before = random(w, h, 1);
            let mut planes = I420::new(w, h);
            planes.convert_all(&before);
            let mut after = before.clone();
            let changes = [
                Rect::new(3, 5, 10, 7),
                Rect::new(0, 0, 1, 1),
                Rect::new(w - 1, h - 1, 1, 1),
                Rect::new(40, 20, 57, 43),
            ];
            for (i, r) in changes.iter().enumerate() {
                after.fill(*r, 0x12_3456 * (i as u32 + 1)).unwrap();
                planes.convert_rect(&after, *r);
            }
            // Out of the picture: ignored.
            planes.convert_rect(&after, Rect::new(w + 5, 0, 4, 4));
            same(&planes, &reference(&after));
        }
    }
}
