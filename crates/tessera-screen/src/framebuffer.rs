//! The picture both ends keep: 32-bit pixels `0x00RRGGBB`, row after row.
//!
//! That layout is X11's ZPixmap for depth 24 on a little-endian machine and
//! softbuffer's, so capture and display copy rows without reshuffling.

use crate::geom::{CopyRect, Rect};

/// Largest width or height accepted (a stream naming more is refused, so a
/// hostile format cannot make a viewer allocate gigabytes).
pub const MAX_DIMENSION: u32 = 16_384;

/// Why a picture of a given shape cannot be made or written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("screen size {width}x{height} is empty or above {MAX_DIMENSION}")]
    BadSize { width: u32, height: u32 },
    #[error("pixel buffer holds {got} pixels, {width}x{height} needs {need}")]
    WrongLength {
        width: u32,
        height: u32,
        got: usize,
        need: usize,
    },
    #[error("rectangle {0:?} is outside the picture")]
    OutOfBounds(Rect),
    #[error("source bytes too short for the rectangle")]
    ShortSource,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    pixels: Vec<u32>,
}

impl std::fmt::Debug for Framebuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framebuffer")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

fn check_size(width: u32, height: u32) -> Result<usize, FormatError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(FormatError::BadSize { width, height });
    }
    Ok(width as usize * height as usize)
}

impl Framebuffer {
    /// A black picture.
    pub fn new(width: u32, height: u32) -> Result<Framebuffer, FormatError> {
        let n = check_size(width, height)?;
        Ok(Framebuffer {
            width,
            height,
            pixels: vec![0; n],
        })
    }

    /// A picture from `0x00RRGGBB` pixels, row after row (the top byte is
    /// cleared so equal colours compare equal).
    pub fn from_pixels(
        width: u32,
        height: u32,
        mut pixels: Vec<u32>,
    ) -> Result<Framebuffer, FormatError> {
        let need = check_size(width, height)?;
        if pixels.len() != need {
            return Err(FormatError::WrongLength {
                width,
                height,
                got: pixels.len(),
                need,
            });
        }
        for p in &mut pixels {
            *p &= 0x00FF_FFFF;
        }
        Ok(Framebuffer {
            width,
            height,
            pixels,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The whole picture as a rectangle.
    pub fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }

    pub fn pixels(&self) -> &[u32] {
        &self.pixels
    }

    /// One pixel; `None` outside the picture.
    pub fn pixel(&self, x: u32, y: u32) -> Option<u32> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.pixels.get(self.index(x, y)).copied()
    }

    /// Row `y`, whole.
    pub fn row(&self, y: u32) -> &[u32] {
        let start = y as usize * self.width as usize;
        &self.pixels[start..start + self.width as usize]
    }

    /// The pixels of row `y` from `x` for `len` (caller keeps them inside).
    pub(crate) fn span(&self, x: u32, y: u32, len: u32) -> &[u32] {
        let start = self.index(x, y);
        &self.pixels[start..start + len as usize]
    }

    pub(crate) fn span_mut(&mut self, x: u32, y: u32, len: u32) -> &mut [u32] {
        let start = self.index(x, y);
        &mut self.pixels[start..start + len as usize]
    }

    fn index(&self, x: u32, y: u32) -> usize {
        y as usize * self.width as usize + x as usize
    }

    /// Paints `rect` one colour.
    pub fn fill(&mut self, rect: Rect, colour: u32) -> Result<(), FormatError> {
        if !rect.fits(self.width, self.height) {
            return Err(FormatError::OutOfBounds(rect));
        }
        for y in rect.y..rect.y + rect.height {
            self.span_mut(rect.x, y, rect.width)
                .fill(colour & 0x00FF_FFFF);
        }
        Ok(())
    }

    /// Writes `rect` from X11 ZPixmap bytes (depth 24/32, little-endian:
    /// B, G, R, pad per pixel), `stride` bytes per source row.
    pub fn write_bgrx(&mut self, rect: Rect, src: &[u8], stride: usize) -> Result<(), FormatError> {
        if !rect.fits(self.width, self.height) {
            return Err(FormatError::OutOfBounds(rect));
        }
        let row_bytes = rect.width as usize * 4;
        if rect.height > 0 {
            let need = stride * (rect.height as usize - 1) + row_bytes;
            if stride < row_bytes || src.len() < need {
                return Err(FormatError::ShortSource);
            }
        }
        for row in 0..rect.height {
            let from = &src[row as usize * stride..row as usize * stride + row_bytes];
            let to = self.span_mut(rect.x, rect.y + row, rect.width);
            for (px, b) in to.iter_mut().zip(from.chunks_exact(4)) {
                *px = u32::from(b[2]) << 16 | u32::from(b[1]) << 8 | u32::from(b[0]);
            }
        }
        Ok(())
    }

    /// Moves a region within the picture (overlap allowed).
    pub fn copy_within(&mut self, copy: &CopyRect) -> Result<(), FormatError> {
        let src = copy.src();
        if !src.fits(self.width, self.height) {
            return Err(FormatError::OutOfBounds(src));
        }
        if !copy.dst.fits(self.width, self.height) {
            return Err(FormatError::OutOfBounds(copy.dst));
        }
        let w = copy.dst.width as usize;
        let h = copy.dst.height;
        // Walk rows away from the overlap, like memmove.
        let rows: Box<dyn Iterator<Item = u32>> = if copy.dst.y > copy.src_y {
            Box::new((0..h).rev())
        } else {
            Box::new(0..h)
        };
        for r in rows {
            let s = self.index(copy.src_x, copy.src_y + r);
            let d = self.index(copy.dst.x, copy.dst.y + r);
            self.pixels.copy_within(s..s + w, d);
        }
        Ok(())
    }

    /// The picture as packed 8-bit RGB (for PNG files).
    pub fn to_rgb8(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pixels.len() * 3);
        for p in &self.pixels {
            out.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert!(Framebuffer::new(0, 10).is_err());
        assert!(Framebuffer::new(MAX_DIMENSION + 1, 10).is_err());
        assert!(Framebuffer::from_pixels(2, 2, vec![0; 3]).is_err());
        assert!(Framebuffer::from_pixels(2, 2, vec![0xFF00_0000; 4])
            .is_ok_and(|f| f.pixels() == [0; 4]));
    }

    #[test]
    fn copy_within_overlapping_down_and_up() {
        let mut fb = Framebuffer::from_pixels(1, 4, vec![1, 2, 3, 4]).unwrap();
        fb.copy_within(&CopyRect {
            src_x: 0,
            src_y: 0,
            dst: Rect::new(0, 1, 1, 3),
        })
        .unwrap();
        assert_eq!(fb.pixels(), [1, 1, 2, 3]);
        let mut fb = Framebuffer::from_pixels(1, 4, vec![1, 2, 3, 4]).unwrap();
        fb.copy_within(&CopyRect {
            src_x: 0,
            src_y: 1,
            dst: Rect::new(0, 0, 1, 3),
        })
        .unwrap();
        assert_eq!(fb.pixels(), [2, 3, 4, 4]);
        let mut fb = Framebuffer::from_pixels(4, 1, vec![1, 2, 3, 4]).unwrap();
        fb.copy_within(&CopyRect {
            src_x: 0,
            src_y: 0,
            dst: Rect::new(1, 0, 3, 1),
        })
        .unwrap();
        assert_eq!(fb.pixels(), [1, 1, 2, 3]);
    }

    #[test]
    fn copy_outside_is_refused_and_changes_nothing() {
        let mut fb = Framebuffer::from_pixels(2, 2, vec![1, 2, 3, 4]).unwrap();
        let bad = CopyRect {
            src_x: 1,
            src_y: 1,
            dst: Rect::new(0, 0, 2, 2),
        };
        assert!(fb.copy_within(&bad).is_err());
        assert_eq!(fb.pixels(), [1, 2, 3, 4]);
    }

    #[test]
    fn bgrx_rows_with_stride() {
        let mut fb = Framebuffer::new(2, 2).unwrap();
        let src = [0x33, 0x22, 0x11, 0xFF, 0x66, 0x55, 0x44, 0xFF, 0, 0];
        fb.write_bgrx(Rect::new(0, 1, 2, 1), &src, 10).unwrap();
        assert_eq!(fb.pixels(), [0, 0, 0x112233, 0x445566]);
        assert_eq!(
            fb.write_bgrx(Rect::new(0, 0, 2, 2), &src, 10),
            Err(FormatError::ShortSource)
        );
    }
}
