//! Reciprocal rank fusion: one ranking out of several (dense and full-text).
//!
//! RRF uses only ranks, not scores, so rankers with incomparable score scales
//! (cosine similarity, text-search rank) combine without calibration
//! (Cormack, Clarke and Büttcher, SIGIR 2009).

use std::collections::HashMap;

use uuid::Uuid;

/// The conventional smoothing constant: it damps the weight of the very top
/// ranks so that agreement between lists matters more than one list's first place.
pub const RRF_K: f32 = 60.0;

/// Fuses rankings (best first) into one, best first, scored
/// `Σ 1 / (k + rank)` with ranks from 1; an id missing from a list gets
/// nothing from it, and only its first occurrence in a list counts.
///
/// Equal scores are ordered by the best single rank, then by id, so the
/// result is deterministic. A negative or non-finite `k` would make scores
/// meaningless; [`RRF_K`] is used instead.
pub fn reciprocal_rank_fusion(ranked_lists: &[Vec<Uuid>], k: f32) -> Vec<(Uuid, f32)> {
    let k = if k.is_finite() && k >= 0.0 { k } else { RRF_K };
    let mut fused: HashMap<Uuid, Fused> = HashMap::new();
    for (list_index, list) in ranked_lists.iter().enumerate() {
        for (position, id) in list.iter().enumerate() {
            let rank = position + 1;
            let entry = fused.entry(*id).or_insert(Fused {
                score: 0.0,
                best_rank: rank,
                last_list: usize::MAX,
            });
            if entry.last_list == list_index {
                continue; // a repeat within one list
            }
            entry.last_list = list_index;
            // Ranks stay far below f32's exact-integer range for any real list.
            entry.score += 1.0 / (k + rank as f32);
            entry.best_rank = entry.best_rank.min(rank);
        }
    }
    let mut ranked: Vec<(Uuid, Fused)> = fused.into_iter().collect();
    ranked.sort_unstable_by(|(a_id, a), (b_id, b)| {
        b.score
            .total_cmp(&a.score)
            .then(a.best_rank.cmp(&b.best_rank))
            .then_with(|| a_id.cmp(b_id))
    });
    ranked
        .into_iter()
        .map(|(id, fused)| (id, fused.score))
        .collect()
}

/// One id's running total.
struct Fused {
    score: f32,
    best_rank: usize,
    /// The list that last scored this id, to skip repeats within a list.
    last_list: usize,
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    fn is_sorted_by_score(results: &[(Uuid, f32)]) -> bool {
        results
            .windows(2)
            .all(|w| w[0].1.total_cmp(&w[1].1) != Ordering::Less)
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn scores_are_sums_of_reciprocal_ranks() {
        let dense = vec![id(1), id(2), id(3)];
        let text = vec![id(3), id(1)];
        let fused = reciprocal_rank_fusion(&[dense, text], 60.0);
        let score = |n| fused.iter().find(|(i, _)| *i == id(n)).unwrap().1;
        assert!((score(1) - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-7);
        assert!((score(2) - 1.0 / 62.0).abs() < 1e-7);
        assert!((score(3) - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-7);
        assert_eq!(
            fused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![id(1), id(3), id(2)]
        );
        assert!(is_sorted_by_score(&fused));
    }

    #[test]
    fn agreement_beats_a_single_first_place() {
        let a = vec![id(10), id(20)];
        let b = vec![id(30), id(20)];
        let c = vec![id(40), id(20)];
        let fused = reciprocal_rank_fusion(&[a, b, c], RRF_K);
        assert_eq!(fused[0].0, id(20));
        assert_eq!(fused.len(), 4);
    }

    #[test]
    fn ties_break_by_best_rank_then_id() {
        // With k = 0: first place once scores 1, second place twice scores
        // 1/2 + 1/2 — an exact tie that the better single rank wins.
        let (lone_first, twice_second, other_first) = (id(99), id(1), id(50));
        let fused = reciprocal_rank_fusion(
            &[
                vec![lone_first, twice_second],
                vec![other_first, twice_second],
            ],
            0.0,
        );
        assert!(fused.iter().all(|(_, score)| *score == 1.0));
        // The two lone first places tie on rank too: the smaller id goes first.
        assert_eq!(
            fused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![other_first, lone_first, twice_second]
        );
    }

    #[test]
    fn results_do_not_depend_on_hash_order() {
        let lists: Vec<Vec<Uuid>> = (0..4)
            .map(|l| {
                (0..50)
                    .map(|r| id(((r * 7 + l * 13) % 60) as u128))
                    .collect()
            })
            .collect();
        let first = reciprocal_rank_fusion(&lists, RRF_K);
        for _ in 0..5 {
            assert_eq!(reciprocal_rank_fusion(&lists, RRF_K), first);
        }
        assert!(is_sorted_by_score(&first));
    }

    #[test]
    fn repeats_within_a_list_count_once() {
        let fused = reciprocal_rank_fusion(&[vec![id(1), id(1), id(2)]], RRF_K);
        assert_eq!(fused[0], (id(1), 1.0 / 61.0));
        assert_eq!(fused[1], (id(2), 1.0 / 63.0));
    }

    #[test]
    fn empty_input_and_bad_k() {
        assert!(reciprocal_rank_fusion(&[], RRF_K).is_empty());
        assert!(reciprocal_rank_fusion(&[vec![], vec![]], RRF_K).is_empty());
        for k in [f32::NAN, f32::INFINITY, -5.0] {
            let fused = reciprocal_rank_fusion(&[vec![id(1)]], k);
            assert_eq!(fused, vec![(id(1), 1.0 / 61.0)]);
        }
        let fused = reciprocal_rank_fusion(&[vec![id(1), id(2)]], 0.0);
        assert_eq!(fused, vec![(id(1), 1.0), (id(2), 0.5)]);
    }
}
