//! Packing tokenized conversations into fixed-length rows.
//!
//! Best-fit-decreasing: sequences are taken longest first and each goes into
//! the open row with the least room that still fits it, or a new row. It is
//! a classic bin-packing heuristic (never more than 11/9 OPT + 6/9 rows) and
//! leaves little padding when most sequences are shorter than the row.
//! Ties are broken by input order, so the packing is deterministic.
//!
//! A row holds whole sequences only. Per token it carries the input id, the
//! loss-mask bit, a segment id (1, 2, ... in placement order; 0 marks
//! padding) and the position within its segment (restarting at 0), so the
//! trainer can keep attention and RoPE inside each conversation.
use std::collections::BTreeSet;

/// Rows of `seq_len` tokens, row-major.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedRows {
    pub seq_len: usize,
    pub input_ids: Vec<i32>,
    pub loss_mask: Vec<u8>,
    pub segment_ids: Vec<i32>,
    pub positions: Vec<i32>,
}

impl PackedRows {
    pub fn num_rows(&self) -> usize {
        self.input_ids.len().checked_div(self.seq_len).unwrap_or(0)
    }
}

/// Assign items of the given lengths to bins of `capacity`, best fit
/// decreasing. Returns each bin's item indices in placement order.
/// Every length must be in `1..=capacity`.
pub fn best_fit_decreasing(lengths: &[usize], capacity: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort: equal lengths keep input order.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let mut bins: Vec<Vec<usize>> = Vec::new();
    // (room left, bin index): the first entry at or above a length is the
    // tightest fit, lowest bin index first among equals.
    let mut open: BTreeSet<(usize, usize)> = BTreeSet::new();
    for item in order {
        let len = lengths[item];
        assert!((1..=capacity).contains(&len), "item length {len} outside 1..={capacity}");
        match open.range((len, 0)..).next().copied() {
            Some((room, bin)) => {
                open.remove(&(room, bin));
                bins[bin].push(item);
                if room > len {
                    open.insert((room - len, bin));
                }
            }
            None => {
                bins.push(vec![item]);
                if capacity > len {
                    open.insert((capacity - len, bins.len() - 1));
                }
            }
        }
    }
    bins
}

/// Pack sequences (ids, loss mask) into rows of `seq_len`, padding with
/// `pad_id`. Every sequence must be non-empty and at most `seq_len` long.
pub fn pack(seqs: &[(&[u32], &[u8])], seq_len: usize, pad_id: u32) -> PackedRows {
    let lengths: Vec<usize> = seqs.iter().map(|(ids, _)| ids.len()).collect();
    let bins = best_fit_decreasing(&lengths, seq_len);
    let total = bins.len() * seq_len;
    let mut rows = PackedRows {
        seq_len,
        input_ids: Vec::with_capacity(total),
        loss_mask: Vec::with_capacity(total),
        segment_ids: Vec::with_capacity(total),
        positions: Vec::with_capacity(total),
    };
    let pad = i32::try_from(pad_id).expect("token id fits i32");
    for bin in bins {
        let mut used = 0;
        for (segment, &item) in (1..).zip(&bin) {
            let (ids, mask) = seqs[item];
            debug_assert_eq!(ids.len(), mask.len());
            rows.input_ids.extend(ids.iter().map(|&t| i32::try_from(t).expect("token id fits i32")));
            rows.loss_mask.extend_from_slice(mask);
            rows.segment_ids.extend(std::iter::repeat_n(segment, ids.len()));
            rows.positions.extend(0..i32::try_from(ids.len()).expect("length fits i32"));
            used += ids.len();
        }
        let padding = seq_len - used;
        rows.input_ids.extend(std::iter::repeat_n(pad, padding));
        rows.loss_mask.extend(std::iter::repeat_n(0, padding));
        rows.segment_ids.extend(std::iter::repeat_n(0, padding));
        rows.positions.extend(std::iter::repeat_n(0, padding));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_picks_the_tightest_row() {
        // 6 opens row 0 (room 4); 5 opens row 1 (room 5); 4 fits row 0 exactly
        // (tightest) rather than row 1; 3 goes to row 1; 2 goes to row 1.
        let bins = best_fit_decreasing(&[3, 6, 4, 5, 2], 10);
        assert_eq!(bins, vec![vec![1, 2], vec![3, 0, 4]]);
    }

    #[test]
    fn ties_keep_input_order_and_full_items_get_own_rows() {
        assert_eq!(best_fit_decreasing(&[4, 4, 4], 4), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(best_fit_decreasing(&[2, 2, 2], 4), vec![vec![0, 1], vec![2]]);
        assert!(best_fit_decreasing(&[], 4).is_empty());
    }

    #[test]
    fn rows_carry_segments_positions_and_padding() {
        let a: (&[u32], &[u8]) = (&[10, 11, 12], &[0, 1, 1]);
        let b: (&[u32], &[u8]) = (&[20, 21], &[0, 1]);
        let rows = pack(&[a, b], 6, 0);
        assert_eq!(rows.num_rows(), 1);
        assert_eq!(rows.input_ids, vec![10, 11, 12, 20, 21, 0]);
        assert_eq!(rows.loss_mask, vec![0, 1, 1, 0, 1, 0]);
        assert_eq!(rows.segment_ids, vec![1, 1, 1, 2, 2, 0]);
        assert_eq!(rows.positions, vec![0, 1, 2, 0, 1, 0]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn overlong_item_is_a_bug() {
        best_fit_decreasing(&[5], 4);
    }
}
