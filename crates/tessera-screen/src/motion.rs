//! Copy detection: finding the parts of a changed area that are the old
//! picture moved (a terminal scrolling, a window dragged), so the viewer
//! copies them from its own picture instead of receiving the pixels.
//!
//! Candidates are cheap guesses: vertical shifts voted by hashes of row
//! segments in 64-pixel column bands (scrolls, by any number of lines and
//! of any part of the area: a terminal beside a clock, two panes), and 2-D
//! shifts voted by short row segments of the new picture found in the old
//! one (moves). Every candidate is then checked pixel by pixel: a copy is
//! only ever emitted where the new picture equals the old one shifted, so a
//! wrong guess costs time, never correctness.

use std::collections::HashMap;

use crate::framebuffer::Framebuffer;
use crate::geom::{CopyRect, Rect, TILE};

/// Smallest copy worth its bytes on the wire.
const MIN_COPY_WIDTH: u32 = 16;
const MIN_COPY_HEIGHT: u32 = 4;
const MIN_COPY_AREA: u64 = 2048;
/// Candidates tried per area.
const MAX_CANDIDATES: usize = 4;
/// Copies per frame (keeps frames small and the check bounded).
pub(crate) const MAX_COPIES: usize = 64;
/// Width of the column bands whose row segments vote for vertical shifts
/// (the tiles', so bands line up with what changed); narrower remnants at
/// the area's edges are left out.
const BAND: u32 = TILE;
const MIN_BAND: u32 = 16;
/// Old rows a new row segment may match that vote (the nearest ones): a
/// terminal repeats lines, a page repeats rules and blank lines.
const MAX_OCCURRENCES: usize = 8;
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

fn mix(h: u64, p: u64) -> u64 {
    (h.rotate_left(5) ^ p).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// A hash of a run of pixels, two at a time.
fn hash_span(span: &[u32]) -> u64 {
    let mut pairs = span.chunks_exact(2);
    let mut h = pairs.by_ref().fold(0xcbf2_9ce4_8422_2325, |h, p| {
        mix(h, u64::from(p[0]) | u64::from(p[1]) << 32)
    });
    if let [p] = pairs.remainder() {
        h = mix(h, u64::from(*p) | 1 << 63);
    }
    h
}

fn uniform(span: &[u32]) -> bool {
    span.iter().all(|&p| p == span[0])
}

/// The column bands of `area`: aligned to multiples of [`BAND`], clipped
/// to the area, remnants narrower than [`MIN_BAND`] left out.
fn bands(area: Rect) -> impl Iterator<Item = (u32, u32)> {
    let right = area.right() as u32;
    let mut x = area.x;
    std::iter::from_fn(move || {
        while x < right {
            let x0 = x;
            let x1 = ((x0 / BAND + 1) * BAND).min(right);
            x = x1;
            if x1 - x0 >= MIN_BAND {
                return Some((x0, x1 - x0));
            }
        }
        None
    })
}

/// Vertical shifts (dy: new row y shows old row y + dy) voted by the row
/// segments of each column band. Returns how many segments voted.
fn vertical_votes(
    old: &Framebuffer,
    new: &Framebuffer,
    area: Rect,
    votes: &mut HashMap<(i32, i32), u32>,
) -> u32 {
    let mut old_rows: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut voters = 0;
    for (x, width) in bands(area) {
        old_rows.clear();
        for y in area.y..area.y + area.height {
            let span = old.span(x, y, width);
            if !uniform(span) {
                // Rows go in ascending, so each list is sorted.
                old_rows.entry(hash_span(span)).or_default().push(y);
            }
        }
        for y in area.y..area.y + area.height {
            let span = new.span(x, y, width);
            if uniform(span) {
                continue;
            }
            let Some(ys) = old_rows.get(&hash_span(span)) else {
                continue;
            };
            voters += 1;
            // The nearest occurrences, outwards from y.
            let split = ys.partition_point(|&oy| oy < y);
            let (mut below, mut above) = (split, split);
            let mut taken = 0;
            while taken < MAX_OCCURRENCES && (below > 0 || above < ys.len()) {
                let up = below.checked_sub(1).map(|i| y - ys[i]);
                let down = ys.get(above).map(|&oy| oy - y);
                let oy = match (up, down) {
                    (Some(u), Some(d)) if u < d => {
                        below -= 1;
                        ys[below]
                    }
                    (Some(_), None) => {
                        below -= 1;
                        ys[below]
                    }
                    _ => {
                        above += 1;
                        ys[above - 1]
                    }
                };
                if oy != y {
                    *votes.entry((0, oy as i32 - y as i32)).or_default() += 1;
                }
                taken += 1;
            }
        }
    }
    voters
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
/// Each with the number of pixels it fixes.
fn copies_for(
    old: &Framebuffer,
    new: &Framebuffer,
    area: Rect,
    dx: i32,
    dy: i32,
    out: &mut Vec<(CopyRect, u64)>,
) {
    let runs: Vec<Option<(u32, u32)>> = (area.y..area.y + area.height)
        .map(|y| longest_run(old, new, area, y, dx, dy).filter(|(a, b)| b - a >= MIN_COPY_WIDTH))
        .collect();
    // Rows of text alternate between runs of the text's width and wider
    // ones (blank rows): narrowing a group to what they share loses little.
    // A window under rows of exposed background is the opposite: its rows
    // must not be narrowed to those rows' runs. Both ways, the one that
    // explains more wins.
    let narrowing = group_runs(&runs, area.y, (dx, dy), false);
    let splitting = group_runs(&runs, area.y, (dx, dy), true);
    // Worth counting: the pixels a copy fixes (those that changed).
    let worth = |v: Vec<CopyRect>| -> (u64, Vec<(CopyRect, u64)>) {
        let v: Vec<(CopyRect, u64)> = v
            .into_iter()
            .map(|c| (c, changed_pixels(old, new, &c.dst)))
            .collect();
        (v.iter().map(|(_, n)| n).sum(), v)
    };
    if splitting == narrowing {
        out.extend(worth(narrowing).1);
        return;
    }
    let (a, narrowing) = worth(narrowing);
    let (b, splitting) = worth(splitting);
    out.extend(if b > a { splitting } else { narrowing });
}

/// Copies of consecutive rows whose runs (`runs[i]`: row `y0 + i`) line
/// up. A group narrows to what its rows share while that keeps most of
/// its width; with `split`, a row whose run starts or ends elsewhere (by
/// more than a little) starts a group of its own instead.
fn group_runs(
    runs: &[Option<(u32, u32)>],
    y0: u32,
    (dx, dy): (i32, i32),
    split: bool,
) -> Vec<CopyRect> {
    let mut out = Vec::new();
    let flush = |g: Option<(u32, u32, u32, u32)>, out: &mut Vec<CopyRect>| {
        if let Some((x0, x1, gy, rows)) = g {
            let dst = Rect::new(x0, gy, x1 - x0, rows);
            if dst.width >= MIN_COPY_WIDTH
                && dst.height >= MIN_COPY_HEIGHT
                && dst.area() >= MIN_COPY_AREA
            {
                out.push(CopyRect {
                    src_x: (i64::from(x0) + i64::from(dx)) as u32,
                    src_y: (i64::from(gy) + i64::from(dy)) as u32,
                    dst,
                });
            }
        }
    };
    // x0, x1, first row, rows
    let mut group: Option<(u32, u32, u32, u32)> = None;
    for (y, run) in (y0..).zip(runs) {
        group = match (group, *run) {
            (None, None) => None,
            (None, Some((a, b))) => Some((a, b, y, 1)),
            (Some(g), None) => {
                flush(Some(g), &mut out);
                None
            }
            (Some((gx0, gx1, gy, rows)), Some((a, b))) => {
                let (ix0, ix1) = (gx0.max(a), gx1.min(b));
                let tol = MIN_COPY_WIDTH.max((gx1 - gx0) / 16);
                let lined_up = !split || (gx0.abs_diff(a) <= tol && gx1.abs_diff(b) <= tol);
                if lined_up
                    && ix1 > ix0
                    && (ix1 - ix0) * 4 >= (gx1 - gx0) * 3
                    && ix1 - ix0 >= MIN_COPY_WIDTH
                {
                    Some((ix0, ix1, gy, rows + 1))
                } else {
                    flush(Some((gx0, gx1, gy, rows)), &mut out);
                    Some((a, b, y, 1))
                }
            }
        };
    }
    flush(group, &mut out);
    out
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
    let segments = vertical_votes(old, new, area, &mut votes);
    // A shift most row segments (and rows) agree on is a scroll: no need
    // to look for moves.
    let strong = votes
        .values()
        .any(|&v| u64::from(v) * 4 >= u64::from(segments.max(area.height)));
    let mut moves = HashMap::new();
    if !strong {
        segment_votes(old, new, area, &mut moves);
    }
    // The best guesses of each kind in turn, so that rows repeated in a
    // window's title bar cannot crowd out the window's move.
    let rank = |votes: HashMap<(i32, i32), u32>| {
        let mut ranked: Vec<((i32, i32), u32)> =
            votes.into_iter().filter(|&(_, v)| v >= MIN_VOTES).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.into_iter().map(|(shift, _)| shift)
    };
    let (mut vertical, mut moved) = (rank(votes), rank(moves));
    let mut ranked: Vec<(i32, i32)> = Vec::new();
    while ranked.len() < MAX_CANDIDATES {
        let (v, m) = (vertical.next(), moved.next());
        if v.is_none() && m.is_none() {
            break;
        }
        for shift in [m, v].into_iter().flatten() {
            if !ranked.contains(&shift) && ranked.len() < MAX_CANDIDATES {
                ranked.push(shift);
            }
        }
    }
    // Each candidate's verified pieces, worth keeping: where pixels changed.
    let mut tried: Vec<(u64, Vec<CopyRect>)> = Vec::new();
    let mut total = None;
    for (dx, dy) in ranked {
        let mut found = Vec::new();
        copies_for(old, new, area, dx, dy, &mut found);
        // Only worth it where the copy replaces pixels that changed.
        found.retain(|&(_, fixed)| fixed * 2 >= MIN_COPY_AREA);
        // Pieces of one shift are applied away from where they read: top
        // first when they read below, bottom first when they read above.
        if dy < 0 {
            found.reverse();
        }
        let explained: u64 = found.iter().map(|(_, fixed)| fixed).sum();
        let found: Vec<CopyRect> = found.into_iter().map(|(c, _)| c).collect();
        tried.push((explained, found));
        // A guess that explains nearly every change needs no other.
        if explained * 10 >= *total.get_or_insert_with(|| changed_pixels(old, new, &area)) * 9 {
            break;
        }
    }
    // The guesses that explain most go first: a wrong one that happens to
    // fit a few rows must not shut out the true one.
    tried.sort_by_key(|t| std::cmp::Reverse(t.0));
    let mut accepted: Vec<CopyRect> = Vec::new();
    for c in tried.into_iter().flat_map(|(_, found)| found) {
        if accepted.len() >= MAX_COPIES {
            break;
        }
        if may_follow(&accepted, &c) {
            accepted.push(c);
        }
    }
    accepted
}

/// Whether `c` may be applied after `earlier`: it reads nothing they wrote
/// (it was checked against the old picture) and writes nothing they wrote.
pub(crate) fn may_follow(earlier: &[CopyRect], c: &CopyRect) -> bool {
    earlier
        .iter()
        .all(|a| !overlaps(&a.dst, &c.dst) && !overlaps(&a.dst, &c.src()))
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

    const BG: u32 = 0x1D1F21;

    /// One 16-pixel line of text-like dots, `cols` characters long.
    fn draw_line(fb: &mut Framebuffer, x: u32, y: u32, cols: u32, seed: u32) {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        fb.fill(Rect::new(x, y, cols * 8, 16), BG).unwrap();
        for c in 0..cols {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            for gy in 3..14 {
                for gx in 1..7 {
                    if (s >> ((gy * 7 + gx) % 31)) & 1 == 1 {
                        fb.fill(Rect::new(x + c * 8 + gx, y + gy, 1, 1), 0xC5C8C6)
                            .unwrap();
                    }
                }
            }
        }
    }

    /// A desktop with a terminal of `lines` lines of text at (`x`, `y`),
    /// 90 columns wide; line `i` shows text `seed(i)`.
    fn terminal(x: u32, y: u32, lines: u32, seed: impl Fn(u32) -> u32) -> Framebuffer {
        let mut fb = Framebuffer::new(1024, 768).unwrap();
        fb.fill(fb.bounds(), 0x2E3440).unwrap();
        for i in 0..lines {
            draw_line(&mut fb, x, y + i * 16, 90, seed(i));
        }
        fb
    }

    /// `new` scrolled by `by` pixels inside `region` (text moves up), the
    /// freed rows filled with fresh text.
    fn scrolled(old: &Framebuffer, region: Rect, by: u32, fresh: u32) -> Framebuffer {
        let mut new = old.clone();
        new.copy_within(&CopyRect {
            src_x: region.x,
            src_y: region.y + by,
            dst: Rect::new(region.x, region.y, region.width, region.height - by),
        })
        .unwrap();
        let freed = Rect::new(region.x, region.bottom() as u32 - by, region.width, by);
        new.fill(freed, BG).unwrap();
        let mut y = freed.y;
        while y + 16 <= freed.bottom() as u32 {
            draw_line(&mut new, freed.x, y, region.width / 8, fresh + y);
            y += 16;
        }
        new
    }

    /// The copies, applied to `old`, give `new` wherever they write; they
    /// write at least `min_area` pixels; and each reads nothing an earlier
    /// one wrote.
    fn check(old: &Framebuffer, new: &Framebuffer, copies: &[CopyRect], min_area: u64) {
        for (i, c) in copies.iter().enumerate() {
            assert!(may_follow(&copies[..i], c), "{copies:?}");
        }
        let applied = apply(old, copies);
        for c in copies {
            for y in c.dst.y..c.dst.bottom() as u32 {
                assert_eq!(
                    applied.span(c.dst.x, y, c.dst.width),
                    new.span(c.dst.x, y, c.dst.width),
                    "{c:?}"
                );
            }
        }
        let covered: u64 = copies.iter().map(|c| c.dst.area()).sum();
        assert!(
            covered >= min_area,
            "covered {covered} < {min_area}: {copies:?}"
        );
    }

    /// The smallest box holding every pixel that differs (what the encoder
    /// hands `find_copies`).
    fn changed(old: &Framebuffer, new: &Framebuffer) -> Rect {
        let mut r = Rect::default();
        for y in 0..old.height() {
            for x in 0..old.width() {
                if old.pixel(x, y) != new.pixel(x, y) {
                    r = r.union(&Rect::new(x, y, 1, 1));
                }
            }
        }
        r
    }

    #[test]
    fn scrolls_of_1_7_and_40_lines_inside_a_sub_rectangle_are_copies() {
        // A 90-column terminal of 40 lines at (200, 60): 720×640.
        let old = terminal(200, 60, 40, |i| 100 + i);
        let region = Rect::new(200, 60, 720, 640);
        for (by, min_rows) in [(1, 600), (7, 580), (40, 560), (16 * 7, 500), (16 * 25, 230)] {
            let new = scrolled(&old, region, by, 9000 + by);
            let copies = find_copies(&old, &new, changed(&old, &new));
            assert!(
                copies
                    .iter()
                    .all(|c| c.src_y as i64 - c.dst.y as i64 == by as i64 && c.src_x == c.dst.x),
                "{by}: {copies:?}"
            );
            check(&old, &new, &copies, 700 * min_rows);
        }
    }

    #[test]
    fn a_scroll_down_is_a_copy_too() {
        let old = terminal(100, 100, 30, |i| 7 * i + 1);
        let mut new = old.clone();
        new.copy_within(&CopyRect {
            src_x: 100,
            src_y: 100,
            dst: Rect::new(100, 148, 720, 432),
        })
        .unwrap();
        for l in 0..3 {
            draw_line(&mut new, 100, 100 + l * 16, 90, 555 + l);
        }
        let copies = find_copies(&old, &new, changed(&old, &new));
        check(&old, &new, &copies, 700 * 400);
    }

    #[test]
    fn a_terminal_of_repeated_lines_still_scrolls_as_a_copy() {
        // Four distinct lines over and over (a log, `yes`): every row has
        // many twins above and below.
        let old = terminal(100, 40, 44, |i| i % 4);
        let region = Rect::new(100, 40, 720, 704);
        for by in [16, 48, 3] {
            let new = scrolled(&old, region, by, 4242);
            let copies = find_copies(&old, &new, changed(&old, &new));
            check(&old, &new, &copies, 700 * 600);
        }
    }

    #[test]
    fn a_scroll_beside_an_unrelated_change_in_the_same_rows_is_found() {
        // The terminal scrolls; to its right, in the same rows, a panel is
        // redrawn with new content (so whole rows of the area never match).
        let mut old = terminal(40, 40, 40, |i| 3 * i + 11);
        for l in 0..40 {
            draw_line(&mut old, 800, 40 + l * 16, 20, 70_000 + l);
        }
        let mut new = scrolled(&old, Rect::new(40, 40, 720, 640), 32, 123);
        for l in 0..40 {
            draw_line(&mut new, 800, 40 + l * 16, 20, 80_000 + l);
        }
        let copies = find_copies(&old, &new, changed(&old, &new));
        check(&old, &new, &copies, 700 * 580);
        // The panel (its first column is background) is never a copy.
        assert!(copies.iter().all(|c| c.dst.right() <= 801), "{copies:?}");
    }

    #[test]
    fn a_window_moved_diagonally_is_one_shift() {
        let mut old = terminal(0, 0, 0, |i| i);
        let window = textured(300, 200, 3);
        let put = |fb: &mut Framebuffer, x: u32, y: u32| {
            for r in 0..200 {
                fb.span_mut(x, y + r, 300).copy_from_slice(window.row(r));
            }
        };
        put(&mut old, 200, 150);
        for (dx, dy) in [(8i32, 4i32), (-5, 9), (40, -30)] {
            let mut new = terminal(0, 0, 0, |i| i);
            put(&mut new, (200 + dx) as u32, (150 + dy) as u32);
            let copies = find_copies(&old, &new, changed(&old, &new));
            assert!(
                copies.iter().all(|c| (
                    c.dst.x as i32 - c.src_x as i32,
                    c.dst.y as i32 - c.src_y as i32
                ) == (dx, dy)),
                "{copies:?}"
            );
            check(&old, &new, &copies, 280 * 180);
        }
    }

    #[test]
    fn nothing_moved_nothing_found() {
        let old = terminal(100, 40, 30, |i| i);
        assert!(find_copies(&old, &old, old.bounds()).is_empty());
        // A few glyphs typed: a change, but no move.
        let mut new = old.clone();
        draw_line(&mut new, 100, 40 + 29 * 16, 3, 999);
        assert!(find_copies(&old, &new, changed(&old, &new)).is_empty());
    }

    #[test]
    fn noise_gives_no_false_copy() {
        for seed in 1..6 {
            let old = textured(400, 300, seed);
            let new = textured(400, 300, seed + 100);
            let copies = find_copies(&old, &new, new.bounds());
            // Whatever is found must be true (and on noise nothing is).
            check(&old, &new, &copies, 0);
            assert!(copies.is_empty(), "{copies:?}");
        }
    }
}
