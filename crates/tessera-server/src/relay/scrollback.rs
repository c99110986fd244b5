//! The output a late-joining viewer is replayed: the last [`SCROLLBACK`]
//! bytes, kept as the pieces that were relayed.

use std::collections::VecDeque;

use bytes::Bytes;

use super::SCROLLBACK;

/// Pieces the scrollback keeps before it joins them into one (many small
/// pieces, a shell echoing keystrokes, would cost more than their bytes).
pub(super) const SCROLLBACK_PIECES: usize = 256;

/// The last [`SCROLLBACK`] bytes of output, kept as the pieces that were
/// relayed (shared with the viewer queues: bulk output is not copied).
#[derive(Default)]
pub(super) struct Scrollback {
    pieces: VecDeque<Bytes>,
    len: usize,
}

impl Scrollback {
    pub(super) fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        self.pieces.push_back(piece);
        while let Some(front) = self.pieces.front_mut() {
            let excess = self.len - SCROLLBACK.min(self.len);
            if excess == 0 {
                break;
            }
            if front.len() <= excess {
                self.len -= front.len();
                self.pieces.pop_front();
            } else {
                let _ = front.split_to(excess);
                self.len -= excess;
            }
        }
        if self.pieces.len() > SCROLLBACK_PIECES {
            let joined = Bytes::from(self.to_vec());
            self.pieces.clear();
            self.pieces.push_back(joined);
        }
    }

    pub(super) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            out.extend_from_slice(piece);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrollback_keeps_the_last_bytes_whatever_the_piece_sizes() {
        let mut sb = Scrollback::default();
        let mut all = Vec::new();
        for i in 0..5000usize {
            let piece: Vec<u8> = (0..(i * 37) % 3001).map(|j| (i + j) as u8).collect();
            all.extend_from_slice(&piece);
            sb.push(Bytes::from(piece));
            assert!(sb.pieces.len() <= SCROLLBACK_PIECES);
        }
        let want = &all[all.len() - SCROLLBACK..];
        assert_eq!(sb.to_vec(), want);
        assert_eq!(sb.len, SCROLLBACK);
    }
}
