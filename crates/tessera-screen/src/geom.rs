//! Rectangles and copies in framebuffer pixels.

use tessera_proto::v1 as pb;

/// The side of the square tiles the raw-zstd encoder compares.
pub const TILE: u32 = 64;

/// A rectangle of pixels: `x`, `y` its top-left corner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Number of pixels covered.
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Right edge (exclusive), widened so it cannot overflow.
    pub fn right(&self) -> u64 {
        u64::from(self.x) + u64::from(self.width)
    }

    /// Bottom edge (exclusive), widened so it cannot overflow.
    pub fn bottom(&self) -> u64 {
        u64::from(self.y) + u64::from(self.height)
    }

    /// Whether the rectangle lies wholly inside a `width`×`height` picture.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.right() <= u64::from(width) && self.bottom() <= u64::from(height)
    }

    /// The part of `self` inside `other` (possibly empty).
    pub fn intersect(&self, other: &Rect) -> Rect {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = self.right().min(other.right());
        let y1 = self.bottom().min(other.bottom());
        if u64::from(x0) >= x1 || u64::from(y0) >= y1 {
            return Rect::default();
        }
        // Both edges come from u32 rectangles, so the differences fit.
        Rect::new(
            x0,
            y0,
            (x1 - u64::from(x0)) as u32,
            (y1 - u64::from(y0)) as u32,
        )
    }

    /// The smallest rectangle covering both (an empty one is ignored).
    pub fn union(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let x0 = self.x.min(other.x);
        let y0 = self.y.min(other.y);
        let x1 = self.right().max(other.right());
        let y1 = self.bottom().max(other.bottom());
        Rect::new(
            x0,
            y0,
            (x1 - u64::from(x0)) as u32,
            (y1 - u64::from(y0)) as u32,
        )
    }
}

impl From<pb::Rect> for Rect {
    fn from(r: pb::Rect) -> Rect {
        Rect::new(r.x, r.y, r.width, r.height)
    }
}

impl From<Rect> for pb::Rect {
    fn from(r: Rect) -> pb::Rect {
        pb::Rect {
            x: r.x,
            y: r.y,
            width: r.width,
            height: r.height,
        }
    }
}

/// A region that moved: the viewer copies `dst.width`×`dst.height` pixels
/// from `(src_x, src_y)` of its own picture to `dst` (overlap allowed, as
/// with `memmove`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CopyRect {
    pub src_x: u32,
    pub src_y: u32,
    pub dst: Rect,
}

impl CopyRect {
    /// The source rectangle.
    pub fn src(&self) -> Rect {
        Rect::new(self.src_x, self.src_y, self.dst.width, self.dst.height)
    }
}

impl From<pb::CopyRect> for CopyRect {
    fn from(c: pb::CopyRect) -> CopyRect {
        CopyRect {
            src_x: c.src_x,
            src_y: c.src_y,
            dst: c.dst.map(Rect::from).unwrap_or_default(),
        }
    }
}

impl From<CopyRect> for pb::CopyRect {
    fn from(c: CopyRect) -> pb::CopyRect {
        pb::CopyRect {
            src_x: c.src_x,
            src_y: c.src_y,
            dst: Some(c.dst.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersect_and_union() {
        let a = Rect::new(0, 0, 10, 10);
        let b = Rect::new(5, 5, 10, 10);
        assert_eq!(a.intersect(&b), Rect::new(5, 5, 5, 5));
        assert_eq!(a.union(&b), Rect::new(0, 0, 15, 15));
        assert!(a.intersect(&Rect::new(10, 0, 5, 5)).is_empty());
        assert_eq!(Rect::default().union(&b), b);
    }

    #[test]
    fn fits_does_not_overflow() {
        let r = Rect::new(u32::MAX, u32::MAX, u32::MAX, 1);
        assert!(!r.fits(100, 100));
        assert!(Rect::new(90, 90, 10, 10).fits(100, 100));
        assert!(!Rect::new(90, 90, 11, 10).fits(100, 100));
    }
}
