//! Copy detection: finding the parts of a changed area that are the old
//! picture moved (a terminal scrolling, a window dragged), so the viewer
//! copies them from its own picture instead of receiving the pixels.
//!
//! Candidates are cheap guesses: vertical shifts voted by whole-row hashes
//! (scrolls), and 2-D shifts voted by short row segments of the new picture
//! found in the old one (moves). Every candidate is then checked pixel by
//! pixel: a copy is only ever emitted where the new picture equals the old
//! one shifted, so a wrong guess costs time, never correctness.

use std::collections::HashMap;

use crate::framebuffer::Framebuffer;
use crate::geom::{CopyRect, Rect};

/// Smallest copy worth its bytes on the wire.
const MIN_COPY_WIDTH: u32 = 16;
const MIN_COPY_HEIGHT: u32 = 4;
const MIN_COPY_AREA: u64 = 2048;
/// Candidates tried per area.
const MAX_CANDIDATES: usize = 3;
/// Copies per frame (keeps frames small and the check bounded).
pub(crate) const MAX_COPIES: usize = 64;
/// Length of the row segments that vote for 2-D moves.
const SEGMENT: usize = 16;
/// One segment every this many pixels of a row of the new picture.
const SEGMENT_STEP: usize = 32;
/// The old picture is searched on one row in this many.
const SEARCH_ROW_STEP: u32 = 4;
/// Areas above this many pixels skip the 2-D search (full-screen motion is
/// not a move; the vertical search still runs).
const MAX_SEARCH_AREA: u64 = 1920 * 1200;
/// Fewest votes a candidate needs.
const MIN_VOTES: u32 = 3;

fn mix(h: u64, p: u32) -> u64 {
    (h.rotate_left(5) ^ u64::from(p)).wrapping_mul(0x517c_c1b7_2722_0a95)
}

fn hash_span(span: &[u32]) -> u64 {
    span.iter().fold(0xcbf2_9ce4_8422_2325, |h, &p| mix(h, p))
}

fn uniform(span: &[u32]) -> bool {
    span.iter().all(|&p| p == span[0])
}

/// Vertical shifts (dy: new row y shows old row y + dy) voted by rows.
fn vertical_votes(
    old: &Framebuffer,
    new: &Framebuffer,
    area: Rect,
    votes: &mut HashMap<(i32, i32), u32>,
) {
    let mut old_rows: HashMap<u64, Vec<u32>> = HashMap::new();
    for y in area.y..area.y + area.height {
        let span = old.span(area.x, y, area.width);
        if !uniform(span) {
            old_rows.entry(hash_span(span)).or_default().push(y);
        }
    }
    for y in area.y..area.y + area.height {
        let span = new.span(area.x, y, area.width);
        if uniform(span) {
            continue;
        }
        if let Some(ys) = old_rows.get(&hash_span(span)) {
            // A row repeated many times (a rule, a border) says nothing.
            if ys.len() > 4 {
                continue;
            }
            for &oy in ys {
                if oy != y {
                    *votes.entry((0, oy as i32 - y as i32)).or_default() += 1;
                }
            }
        }
    }
}

/// 2-D shifts voted by segments of the new picture found in the old one.
fn segment_votes(
    old: &Framebuffer,
    new: &Framebuffer,
    area: Rect,
    votes: &mut HashMap<(i32, i32), u32>,
) {
    if area.area() > MAX_SEARCH_AREA || (area.width as usize) < SEGMENT {
        return;
    }
    // Anchors: segments of the new picture, every row, sparse along it.
    let mut anchors: HashMap<u64, (u32, u32)> = HashMap::new();
    let mut repeated: Vec<u64> = Vec::new();
    for y in area.y..area.y + area.height {
        let mut x = area.x as usize;
        while x + SEGMENT <= area.right() as usize {
            let span = new.span(x as u32, y, SEGMENT as u32);
            if !uniform(span) {
                let h = hash_span(span);
                if anchors.insert(h, (x as u32, y)).is_some() {
                    repeated.push(h);
                }
            }
            x += SEGMENT_STEP;
        }
    }
    for h in repeated {
        anchors.remove(&h);
    }
    if anchors.is_empty() {
        return;
    }
    // Every segment of the old picture's searched rows, at every x.
    let mut y = area.y;
    while y < area.y + area.height {
        let row = old.span(area.x, y, area.width);
        for (i, window) in row.windows(SEGMENT).enumerate() {
            if let Some(&(ax, ay)) = anchors.get(&hash_span(window)) {
                let dx = (area.x as i64 + i as i64 - i64::from(ax)) as i32;
                let dy = y as i32 - ay as i32;
                if (dx, dy) != (0, 0) {
                    *votes.entry((dx, dy)).or_default() += 1;
                }
            }
        }
        y += SEARCH_ROW_STEP;
    }
}

/// The longest run of row `y` (inside `area`) where the new picture equals
/// the old one shifted by `(dx, dy)`.
fn longest_run(
    old: &Framebuffer,
    new: &Framebuffer,
    area: Rect,
    y: u32,
    dx: i32,
    dy: i32,
) -> Option<(u32, u32)> {
    let sy = i64::from(y) + i64::from(dy);
    if sy < 0 || sy >= i64::from(old.height()) {
        return None;
    }
    let x0 = i64::from(area.x).max(-i64::from(dx));
    let x1 = (area.right() as i64).min(i64::from(old.width()) - i64::from(dx));
    if x0 >= x1 {
        return None;
    }
    let len = (x1 - x0) as u32;
    let a = new.span(x0 as u32, y, len);
    let b = old.span((x0 + i64::from(dx)) as u32, sy as u32, len);
    let (mut best, mut start) = (None::<(u32, u32)>, None::<u32>);
    for i in 0..=len as usize {
        let same = i < len as usize && a[i] == b[i];
        match (same, start) {
            (true, None) => start = Some(i as u32),
            (false, Some(s)) => {
                let run = (s, i as u32);
                if best.is_none_or(|(bs, be)| run.1 - run.0 > be - bs) {
                    best = Some(run);
                }
                start = None;
            }
            _ => {}
        }
    }
    best.map(|(s, e)| (x0 as u32 + s, x0 as u32 + e))
}

/// Rectangles of `area` that the shift `(dx, dy)` explains exactly.
fn copies_for(
    old: &Framebuffer,
    new: &Framebuffer,
    area: Rect,
    dx: i32,
    dy: i32,
    out: &mut Vec<CopyRect>,
) {
    let mut group: Option<(u32, u32, u32, u32)> = None; // x0, x1, y0, rows
    let flush = |g: Option<(u32, u32, u32, u32)>, out: &mut Vec<CopyRect>| {
        if let Some((x0, x1, y0, rows)) = g {
            let dst = Rect::new(x0, y0, x1 - x0, rows);
            if dst.width >= MIN_COPY_WIDTH
                && dst.height >= MIN_COPY_HEIGHT
                && dst.area() >= MIN_COPY_AREA
            {
                out.push(CopyRect {
                    src_x: (i64::from(x0) + i64::from(dx)) as u32,
                    src_y: (i64::from(y0) + i64::from(dy)) as u32,
                    dst,
                });
            }
        }
    };
    for y in area.y..area.y + area.height {
        let run = longest_run(old, new, area, y, dx, dy).filter(|(a, b)| b - a >= MIN_COPY_WIDTH);
        group = match (group, run) {
            (None, None) => None,
            (None, Some((a, b))) => Some((a, b, y, 1)),
            (Some(g), None) => {
                flush(Some(g), out);
                None
            }
            (Some((gx0, gx1, gy, rows)), Some((a, b))) => {
                let (ix0, ix1) = (gx0.max(a), gx1.min(b));
                // Keep the group while the rows agree on most of its width.
                if ix1 > ix0 && (ix1 - ix0) * 4 >= (gx1 - gx0) * 3 && ix1 - ix0 >= MIN_COPY_WIDTH {
                    Some((ix0, ix1, gy, rows + 1))
                } else {
                    flush(Some((gx0, gx1, gy, rows)), out);
                    Some((a, b, y, 1))
                }
            }
        };
    }
    flush(group, out);
}

/// Number of pixels of `r` where the two pictures differ in place.
fn changed_pixels(old: &Framebuffer, new: &Framebuffer, r: &Rect) -> u64 {
    (r.y..r.y + r.height)
        .map(|y| {
            let a = old.span(r.x, y, r.width);
            let b = new.span(r.x, y, r.width);
            a.iter().zip(b).filter(|(p, q)| p != q).count() as u64
        })
        .sum()
}

fn overlaps(a: &Rect, b: &Rect) -> bool {
    !a.intersect(b).is_empty()
}

/// Copies that explain changes inside `area` of `new` from `old`, safe to
/// apply in order: no copy reads what an earlier one wrote, no two write
/// the same pixels.
pub(crate) fn find_copies(old: &Framebuffer, new: &Framebuffer, area: Rect) -> Vec<CopyRect> {
    if area.is_empty() || old.width() != new.width() || old.height() != new.height() {
        return Vec::new();
    }
    let mut votes = HashMap::new();
    vertical_votes(old, new, area, &mut votes);
    // A shift most rows agree on is a scroll: no need to look for moves.
    let strong = votes
        .values()
        .any(|&v| u64::from(v) * 4 >= u64::from(area.height));
    if !strong {
        segment_votes(old, new, area, &mut votes);
    }
    let mut ranked: Vec<((i32, i32), u32)> =
        votes.into_iter().filter(|&(_, v)| v >= MIN_VOTES).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut accepted: Vec<CopyRect> = Vec::new();
    for ((dx, dy), _) in ranked.into_iter().take(MAX_CANDIDATES) {
        let mut found = Vec::new();
        copies_for(old, new, area, dx, dy, &mut found);
        for c in found {
            let clash = accepted.iter().any(|a| {
                overlaps(&a.dst, &c.dst) || overlaps(&a.dst, &c.src()) || overlaps(&c.dst, &a.src())
            });
            if clash || accepted.len() >= MAX_COPIES {
                continue;
            }
            // Only worth it where the copy replaces pixels that changed.
            if changed_pixels(old, new, &c.dst) * 2 < MIN_COPY_AREA {
                continue;
            }
            accepted.push(c);
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture with distinct, textured rows (like text).
    fn textured(w: u32, h: u32, seed: u32) -> Framebuffer {
        let px = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ seed).wrapping_mul(97)
                    & 0xFF_FFFF
            })
            .collect();
        Framebuffer::from_pixels(w, h, px).unwrap()
    }

    fn apply(old: &Framebuffer, copies: &[CopyRect]) -> Framebuffer {
        let mut fb = old.clone();
        for c in copies {
            fb.copy_within(c).unwrap();
        }
        fb
    }

    #[test]
    fn scroll_is_found_as_one_copy() {
        let old = textured(320, 240, 1);
        let mut new = old.clone();
        // Scroll rows 20..220 up by 12: new row y shows old row y + 12.
        new.copy_within(&CopyRect {
            src_x: 0,
            src_y: 32,
            dst: Rect::new(0, 20, 320, 188),
        })
        .unwrap();
        let copies = find_copies(&old, &new, Rect::new(0, 20, 320, 200));
        assert!(!copies.is_empty());
        let covered: u64 = copies.iter().map(|c| c.dst.area()).sum();
        assert!(covered >= 320 * 180, "{copies:?}");
        let applied = apply(&old, &copies);
        for c in &copies {
            for y in c.dst.y..c.dst.bottom() as u32 {
                assert_eq!(
                    applied.span(c.dst.x, y, c.dst.width),
                    new.span(c.dst.x, y, c.dst.width)
                );
            }
        }
    }

    #[test]
    fn window_move_is_found() {
        let mut old = Framebuffer::new(400, 300).unwrap();
        old.fill(old.bounds(), 0x336699).unwrap();
        let window = textured(120, 80, 7);
        let put = |fb: &mut Framebuffer, x: u32, y: u32| {
            for r in 0..80 {
                fb.span_mut(x, y + r, 120).copy_from_slice(window.row(r));
            }
        };
        put(&mut old, 50, 40);
        let mut new = Framebuffer::new(400, 300).unwrap();
        new.fill(new.bounds(), 0x336699).unwrap();
        put(&mut new, 63, 49);
        let copies = find_copies(&old, &new, Rect::new(50, 40, 133, 89));
        let moved: Vec<_> = copies
            .iter()
            .filter(|c| c.src_x as i64 - c.dst.x as i64 == -13)
            .collect();
        assert!(!moved.is_empty(), "{copies:?}");
        assert!(moved.iter().map(|c| c.dst.area()).sum::<u64>() >= 120 * 70);
    }

    #[test]
    fn unrelated_change_gives_no_copy() {
        let old = textured(200, 200, 1);
        let new = textured(200, 200, 2);
        assert!(find_copies(&old, &new, new.bounds()).is_empty());
    }
}
