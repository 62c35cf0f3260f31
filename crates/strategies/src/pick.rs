//! Selection helpers shared by the strategies: one pass, no allocation per candidate.

use crate::candidates::{Candidates, METRICS, TRIES, metric_weight};
use crate::{Rng, Target, UsageView};

/// The candidate with the lowest `score` among those `keep` accepts; ties broken uniformly at
/// random by reservoir sampling (LiteLLM's least-busy picked the first of equals, #39322).
///
/// The score is read first: a candidate scoring above the best so far cannot be the answer,
/// so its limits (`keep`, the dearer check) are not read. The decisions and the random draws
/// are those of checking `keep` first.
pub(crate) fn lowest<'t>(
    eligible: impl IntoIterator<Item = &'t Target>,
    rng: &Rng,
    mut keep: impl FnMut(&Target) -> bool,
    mut score: impl FnMut(&Target) -> f64,
) -> Option<&'t Target> {
    let mut best: Option<(&'t Target, f64)> = None;
    let mut ties = 0usize;
    for target in eligible {
        let value = score(target);
        if best.is_some_and(|(_, b)| value > b) || !keep(target) {
            continue;
        }
        match best {
            Some((_, b)) if value > b => {}
            Some((_, b)) if value == b => {
                ties += 1;
                if rng.below(ties) == 0 {
                    best = Some((target, value));
                }
            }
            _ => {
                best = Some((target, value));
                ties = 1;
            }
        }
    }
    best.map(|(t, _)| t)
}

/// A uniformly random candidate among those `keep` accepts (reservoir sampling).
pub(crate) fn uniform<'t>(
    eligible: impl IntoIterator<Item = &'t Target>,
    rng: &Rng,
    mut keep: impl FnMut(&Target) -> bool,
) -> Option<&'t Target> {
    let mut chosen = None;
    let mut seen = 0usize;
    for target in eligible {
        if keep(target) {
            seen += 1;
            if rng.below(seen) == 0 {
                chosen = Some(target);
            }
        }
    }
    chosen
}

/// A candidate drawn with probability proportional to `weight` among those `keep` accepts;
/// `None` when no accepted candidate has a positive weight.
pub(crate) fn weighted<'t>(
    eligible: Candidates<'t, '_>,
    rng: &Rng,
    keep: impl Fn(&Target) -> bool,
    weight: impl Fn(&Target) -> f64,
) -> Option<&'t Target> {
    let w = |t: &Target| if keep(t) { weight(t).max(0.0) } else { 0.0 };
    let total: f64 = eligible.iter().map(w).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let mut draw = rng.unit() * total;
    let mut last = None;
    for target in eligible.iter() {
        let weight = w(target);
        if weight > 0.0 {
            if draw < weight {
                return Some(target);
            }
            draw -= weight;
            last = Some(target);
        }
    }
    last // rounding left the draw past the end
}

/// Whether the target fits in the view (shorthand for the closures above).
pub(crate) fn fits<'v>(
    view: &'v UsageView<'_>,
    input_tokens: u64,
) -> impl Fn(&Target) -> bool + 'v {
    move |t| view.fits(t, input_tokens)
}

/// A candidate drawn with probability proportional to its weight under simple-shuffle's static
/// metric `metric` among those `keep` accepts, by rejection: a member is drawn from the pool's
/// running weights (binary search) and taken if it is a candidate that `keep` accepts; up to
/// [`TRIES`] draws, `None` when none was taken (the caller then scans). Drawing from the
/// pool's distribution and keeping only accepted members is drawing from that distribution
/// conditioned on acceptance: each accepted member with probability `w / (sum of accepted w)`,
/// exactly [`weighted`]'s distribution over the same set.
pub(crate) fn draw_weighted<'t>(
    eligible: Candidates<'t, '_>,
    rng: &Rng,
    metric: usize,
    keep: impl Fn(&Target) -> bool,
) -> Option<&'t Target> {
    debug_assert!(metric < METRICS);
    let cumulative = eligible.pool().cumulative(metric)?;
    let total = *cumulative.last()?;
    if !total.is_finite() {
        return None;
    }
    (0..TRIES).find_map(|_| {
        let draw = rng.unit() * total;
        let position = cumulative
            .partition_point(|c| *c <= draw)
            .min(cumulative.len() - 1);
        eligible
            .at(position)
            .filter(|t| metric_weight(t, metric) > 0.0 && keep(t))
    })
}
