//! What the benches share: the median of alternating rounds.

/// The round whose `key` is the median. On a shared two-core machine one run
/// of a path drifts by more than the gaps being measured, so every path runs
/// several rounds, the paths taking turns, and the median round is shown.
pub fn median<T>(mut rounds: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    rounds.sort_by(|a, b| key(a).total_cmp(&key(b)));
    rounds.swap_remove(rounds.len() / 2)
}
