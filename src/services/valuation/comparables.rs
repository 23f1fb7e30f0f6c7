//! The comparables part of the valuation: what an appraiser does after the formula.
//!
//! A hedonic formula prices each fact the same everywhere; an appraiser then looks at the
//! most similar recent sales and asks whether they sold above or below what the formula says.
//! Here that is a kernel smoother of the hedonic model's leave-one-out residuals: the
//! estimate is shifted by `blend ×` the kernel-weighted mean residual of the comparables.
//!
//! Similarity follows the mixed-data kernels of Racine and Li (2004): each unit of difference
//! in the discrete facts (a bedroom, a storey, a flag) multiplies a comparable's weight by
//! `discrete` ∈ (0, 1), and lot size enters through a Gaussian kernel on `ln(lotsize)`. This
//! is a nearest-neighbour rule with soft, data-chosen boundaries and one scale per kind of
//! fact, which in trials on the Windsor data beat a hard k-nearest-neighbour average in
//! equally weighted standardised space.
//!
//! The three hyper-parameters are chosen on the training sales only, by leave-one-out mean
//! absolute log error over a small fixed grid that includes `blend = 0` — so when comparables
//! do not help, the model falls back to the hedonic formula on its own.

use super::facts::{PropertyFacts, Sale, N_FACTS};
use super::linalg::mean_abs;
use serde::{Deserialize, Serialize};

/// Candidate weight factors per unit of discrete mismatch.
const DISCRETE_GRID: [f64; 5] = [0.02, 0.05, 0.1, 0.2, 0.35];
/// The widest candidate bandwidth on `ln(lotsize)`.
const WIDEST_BANDWIDTH: f64 = 0.5;
/// Candidate bandwidths are `WIDEST_BANDWIDTH / √k` for these `k`: a geometric grid (ratio
/// √2, from 0.5 down to 0.0625) whose Gaussian weights `exp(−2k·Δ²)` are successive squares of
/// one exponential per pair, which keeps tuning fast.
const BANDWIDTH_POWERS: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Candidate shares of the comparables' residual added to the hedonic estimate.
const BLEND_GRID: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

fn bandwidth(power: u32) -> f64 {
    WIDEST_BANDWIDTH / f64::from(power).sqrt()
}

/// The grids, for the model version hash: editing one changes every model's version.
pub(crate) fn grids() -> impl Iterator<Item = f64> {
    DISCRETE_GRID
        .into_iter()
        .chain(BANDWIDTH_POWERS.map(bandwidth))
        .chain(BLEND_GRID)
}

/// The comparables kernel and how much of its adjustment is applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    /// Factor (in (0, 1]) by which each unit of difference in the discrete facts multiplies
    /// a comparable's weight.
    pub discrete: f64,
    /// Gaussian bandwidth on `ln(lotsize)` (0.1 ≈ lots within about ±10% count fully).
    pub bandwidth: f64,
    /// Share of the comparables' weighted mean residual added to the hedonic log estimate
    /// (0 = hedonic formula only).
    pub blend: f64,
}

impl Kernel {
    /// The kernel used when comparables are switched off: no adjustment, but still a sensible
    /// ranking of the comparables reported with an estimate.
    pub(crate) const RANKING_ONLY: Kernel = Kernel {
        discrete: 0.1,
        bandwidth: 0.125,
        blend: 0.0,
    };

    /// Kernel distance between two properties: `mismatch · ln(1/discrete) + ½ (Δ ln lot /
    /// bandwidth)²`, so a comparable's weight is `exp(−distance)`. 0 for identical facts.
    pub fn distance(&self, a: &PropertyFacts, b: &PropertyFacts) -> f64 {
        let gap = (f64::from(a.lotsize).ln() - f64::from(b.lotsize).ln()) / self.bandwidth;
        mismatch(a, b) as f64 * -self.discrete.ln() + 0.5 * gap * gap
    }
}

/// Total absolute difference of the discrete facts (counts and 0/1 flags, everything but the
/// lot size).
pub(crate) fn mismatch(a: &PropertyFacts, b: &PropertyFacts) -> u64 {
    let (a, b) = (a.to_values(), b.to_values());
    a[1..]
        .iter()
        .zip(&b[1..])
        .map(|(x, y)| x.abs_diff(*y))
        .sum()
}

/// The weighted mean residual of the sales around `query` (unblended), and the kernel weights
/// of every sale (unnormalised, in sale order).
pub(crate) fn adjustment(
    kernel: &Kernel,
    sales: &[Sale],
    residuals: &[f64],
    query: &PropertyFacts,
) -> (f64, Vec<f64>) {
    let weights: Vec<f64> = sales
        .iter()
        .map(|s| (-kernel.distance(query, &s.facts)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let weighted: f64 = weights.iter().zip(residuals).map(|(w, r)| w * r).sum();
    let shift = if total > 0.0 { weighted / total } else { 0.0 };
    (shift, weights)
}

/// The chosen kernel and the leave-one-out adjustments it gives the training sales.
#[derive(Debug, Clone)]
pub(crate) struct Tuned {
    /// The chosen kernel.
    pub(crate) kernel: Kernel,
    /// For each training sale, the blended adjustment computed without that sale.
    pub(crate) loo_adjustment: Vec<f64>,
}

/// Chooses the kernel by leave-one-out mean absolute error of `residual − blend × adjustment`
/// over the grids. One pass over all pairs serves every grid point.
pub(crate) fn tune(facts: &[PropertyFacts], residuals: &[f64]) -> Tuned {
    const COMBOS: usize = BANDWIDTH_POWERS.len() * DISCRETE_GRID.len();
    let n = facts.len().min(residuals.len());
    let facts = &facts[..n];
    let residuals = &residuals[..n];
    let ln_lot: Vec<f64> = facts.iter().map(|f| f64::from(f.lotsize).ln()).collect();
    let discrete: Vec<[u64; N_FACTS]> = facts.iter().map(|f| f.to_values()).collect();
    let powers: Vec<Vec<f64>> = DISCRETE_GRID
        .iter()
        .map(|l| (0..=spread(facts)).map(|m| l.powi(m as i32)).collect())
        .collect();
    // num[i][c] = Σⱼ kᵢⱼ rⱼ and den[i][c] = Σⱼ kᵢⱼ over j ≠ i, for grid point c.
    let mut num = vec![[0.0; COMBOS]; n];
    let mut den = vec![[0.0; COMBOS]; n];
    for i in 0..n {
        for j in i + 1..n {
            let m = discrete[i][1..]
                .iter()
                .zip(&discrete[j][1..])
                .map(|(a, b)| a.abs_diff(*b))
                .sum::<u64>() as usize;
            let mut g = (-0.5 * (ln_lot[i] - ln_lot[j]).powi(2)
                / (WIDEST_BANDWIDTH * WIDEST_BANDWIDTH))
                .exp();
            for b in 0..BANDWIDTH_POWERS.len() {
                if b > 0 {
                    g *= g;
                }
                if g == 0.0 {
                    break;
                }
                for (d, p) in powers.iter().enumerate() {
                    let k = g * p[m];
                    let c = b * DISCRETE_GRID.len() + d;
                    num[i][c] += k * residuals[j];
                    den[i][c] += k;
                    num[j][c] += k * residuals[i];
                    den[j][c] += k;
                }
            }
        }
    }

    let mut best = (mean_abs(residuals), Kernel::RANKING_ONLY, vec![0.0; n]);
    for (b, &power) in BANDWIDTH_POWERS.iter().enumerate() {
        for (d, &discrete) in DISCRETE_GRID.iter().enumerate() {
            let c = b * DISCRETE_GRID.len() + d;
            let shift: Vec<f64> = num
                .iter()
                .zip(&den)
                .map(|(nu, de)| if de[c] > 0.0 { nu[c] / de[c] } else { 0.0 })
                .collect();
            for &blend in BLEND_GRID.iter().filter(|b| **b > 0.0) {
                let adjusted: Vec<f64> = shift.iter().map(|s| blend * s).collect();
                let criterion = mean_abs(
                    &residuals
                        .iter()
                        .zip(&adjusted)
                        .map(|(r, a)| r - a)
                        .collect::<Vec<_>>(),
                );
                if criterion < best.0 {
                    best = (
                        criterion,
                        Kernel {
                            discrete,
                            bandwidth: bandwidth(power),
                            blend,
                        },
                        adjusted,
                    );
                }
            }
        }
    }
    Tuned {
        kernel: best.1,
        loo_adjustment: best.2,
    }
}

/// An upper bound on the mismatch between any two of `facts`: the sum of each discrete
/// field's range.
fn spread(facts: &[PropertyFacts]) -> u64 {
    let values: Vec<[u64; N_FACTS]> = facts.iter().map(|f| f.to_values()).collect();
    (1..N_FACTS)
        .map(|f| {
            let lo = values.iter().map(|v| v[f]).min().unwrap_or(0);
            let hi = values.iter().map(|v| v[f]).max().unwrap_or(0);
            hi - lo
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::valuation::linalg::mean;

    fn house(lotsize: u32, bedrooms: u8, airco: bool) -> PropertyFacts {
        PropertyFacts {
            lotsize,
            bedrooms,
            bathrms: 1,
            stories: 2,
            driveway: true,
            recroom: false,
            fullbase: false,
            gashw: false,
            airco,
            garagepl: 1,
            prefarea: false,
        }
    }

    #[test]
    fn distance_counts_discrete_steps_and_log_lot_gaps() {
        let k = Kernel {
            discrete: 0.1,
            bandwidth: 0.2,
            blend: 1.0,
        };
        let a = house(5000, 3, false);
        assert_eq!(k.distance(&a, &a), 0.0);
        assert_eq!(mismatch(&a, &house(5000, 5, true)), 3);
        assert!((k.distance(&a, &house(5000, 5, true)) - 3.0 * 10f64.ln()).abs() < 1e-12);
        let gap = (6000f64 / 5000.0).ln() / 0.2;
        assert!((k.distance(&a, &house(6000, 3, false)) - 0.5 * gap * gap).abs() < 1e-12);
    }

    #[test]
    fn adjustment_is_the_kernel_weighted_mean_residual() {
        let k = Kernel {
            discrete: 0.1,
            bandwidth: 0.1,
            blend: 1.0,
        };
        let sales: Vec<Sale> = [house(5000, 3, false), house(5000, 4, false)]
            .iter()
            .map(|f| Sale {
                price: 1,
                facts: *f,
            })
            .collect();
        let (shift, weights) = adjustment(&k, &sales, &[0.2, -0.3], &house(5000, 3, false));
        assert_eq!(weights[0], 1.0);
        assert!((weights[1] - 0.1).abs() < 1e-12);
        assert!((shift - (0.2 - 0.03) / 1.1).abs() < 1e-12);
    }

    #[test]
    fn tuning_finds_structure_and_ignores_noise() {
        // Residuals that depend on air conditioning (a missed interaction) are worth
        // borrowing from comparables; alternating noise is not.
        let facts: Vec<PropertyFacts> = (0..120)
            .map(|i| house(3000 + 40 * i as u32, 2 + (i % 3) as u8, i % 2 == 0))
            .collect();
        let structured: Vec<f64> = facts
            .iter()
            .map(|f| if f.airco { 0.2 } else { -0.2 })
            .collect();
        let tuned = tune(&facts, &structured);
        assert!(tuned.kernel.blend > 0.5, "{:?}", tuned.kernel);
        let before = mean(&structured.iter().map(|r| r.abs()).collect::<Vec<_>>());
        let after = mean(
            &structured
                .iter()
                .zip(&tuned.loo_adjustment)
                .map(|(r, a)| (r - a).abs())
                .collect::<Vec<_>>(),
        );
        assert!(after < 0.5 * before, "{after} vs {before}");

        let noise: Vec<f64> = (0..120)
            .map(|i| if (i * 7919) % 5 < 2 { 0.1 } else { -0.1 })
            .collect();
        let shuffled: Vec<PropertyFacts> = (0..120).map(|i| facts[(i * 37) % 120]).collect();
        let tuned = tune(&shuffled, &noise);
        let after = mean(
            &noise
                .iter()
                .zip(&tuned.loo_adjustment)
                .map(|(r, a)| (r - a).abs())
                .collect::<Vec<_>>(),
        );
        assert!(after <= 0.1 + 1e-12, "{:?} {after}", tuned.kernel);
    }
}
