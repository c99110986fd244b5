//! The remote pointer's shape. X servers leave the pointer out of captured
//! pixels, so the agent sends its shape (`CursorShape`, after each change
//! and each keyframe) and the window makes it the local pointer's shape
//! over the picture — it moves with no round trip, as VNC viewers do with
//! a cursor pseudo-encoding. It is scaled with the picture.

use tessera_proto::v1::CursorShape;

/// Largest side of a pointer image made here.
const MAX_SIDE: u32 = 256;

/// A pointer image ready for the window: straight RGBA, hot spot inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CursorImage {
    pub(crate) rgba: Vec<u8>,
    pub(crate) width: u16,
    pub(crate) height: u16,
    pub(crate) hot_x: u16,
    pub(crate) hot_y: u16,
}

/// `shape` scaled by `shown / remote` (the picture's width in the window
/// over its width on the remote screen), by nearest pixel, at least 1 and
/// at most 256 pixels a side. `None` for a shape whose pixels do not match
/// its size, or an empty one.
pub(crate) fn scaled(shape: &CursorShape, shown: u32, remote: u32) -> Option<CursorImage> {
    let (w, h) = (shape.width, shape.height);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return None;
    }
    if shape.rgba.len() != (w * h * 4) as usize || remote == 0 || shown == 0 {
        return None;
    }
    let side = |v: u32| -> u32 {
        let s = (u64::from(v) * u64::from(shown)).div_ceil(u64::from(remote));
        s.clamp(1, u64::from(MAX_SIDE)) as u32
    };
    let (sw, sh) = (side(w), side(h));
    let mut rgba = Vec::with_capacity((sw * sh * 4) as usize);
    for y in 0..sh {
        let from_y = (u64::from(y) * u64::from(h) / u64::from(sh)) as u32;
        for x in 0..sw {
            let from_x = (u64::from(x) * u64::from(w) / u64::from(sw)) as u32;
            let at = ((from_y * w + from_x) * 4) as usize;
            rgba.extend_from_slice(&shape.rgba[at..at + 4]);
        }
    }
    let hot = |v: u32, from: u32, to: u32| -> u16 {
        let v = (u64::from(v.min(from - 1)) * u64::from(to) / u64::from(from)) as u32;
        v.min(to - 1) as u16
    };
    Some(CursorImage {
        rgba,
        width: sw as u16,
        height: sh as u16,
        hot_x: hot(shape.hot_x, w, sw),
        hot_y: hot(shape.hot_y, h, sh),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(w: u32, h: u32, hot: (u32, u32)) -> CursorShape {
        CursorShape {
            width: w,
            height: h,
            hot_x: hot.0,
            hot_y: hot.1,
            rgba: (0..w * h)
                .flat_map(|i| [i as u8, 0, 0, 255])
                .collect::<Vec<u8>>()
                .into(),
            serial: 1,
        }
    }

    #[test]
    fn at_full_size_the_shape_is_unchanged() {
        let s = shape(4, 3, (1, 2));
        let img = scaled(&s, 1280, 1280).unwrap();
        assert_eq!((img.width, img.height, img.hot_x, img.hot_y), (4, 3, 1, 2));
        assert_eq!(img.rgba, s.rgba.to_vec());
    }

    #[test]
    fn it_shrinks_and_grows_with_the_picture_by_nearest_pixel() {
        let s = shape(4, 4, (2, 2));
        let half = scaled(&s, 640, 1280).unwrap();
        assert_eq!(
            (half.width, half.height, half.hot_x, half.hot_y),
            (2, 2, 1, 1)
        );
        // Pixels 0, 2, 8, 10 of the original.
        let reds: Vec<u8> = half.rgba.chunks(4).map(|p| p[0]).collect();
        assert_eq!(reds, [0, 2, 8, 10]);
        let double = scaled(&s, 2560, 1280).unwrap();
        assert_eq!((double.width, double.height, double.hot_x), (8, 8, 4));
        let tiny = scaled(&shape(2, 2, (1, 1)), 1, 1280).unwrap();
        assert_eq!(
            (tiny.width, tiny.height, tiny.hot_x, tiny.hot_y),
            (1, 1, 0, 0)
        );
    }

    #[test]
    fn a_shape_that_does_not_add_up_is_not_used() {
        let mut s = shape(4, 4, (0, 0));
        s.rgba = vec![0u8; 10].into();
        assert!(scaled(&s, 1, 1).is_none());
        assert!(scaled(&shape(0, 4, (0, 0)), 1, 1).is_none());
        assert!(scaled(&shape(300, 1, (0, 0)), 1, 1).is_none());
        assert!(
            scaled(&shape(2, 2, (9, 9)), 1, 1).is_some(),
            "hot spot clamped"
        );
    }
}
