//! Unit tests of `range`.

use super::*;
use crate::params::{activation_params, dequantize, quantize};
use crate::stats::MinMax;

const SYM: ActivationScheme = ActivationScheme {
    qtype: QType::Int8,
    symmetric: true,
};
const ASYM: ActivationScheme = ActivationScheme {
    qtype: QType::Uint8,
    symmetric: false,
};

/// Deterministic N(0, 1) samples (Box-Muller over a small LCG).
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut u = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((-2.0 * u().ln()).sqrt() * (2.0 * std::f64::consts::PI * u()).cos()) as f32)
        .collect()
}

fn stats_of(values: &[f32], bins: usize) -> TensorStats {
    let mut minmax = MinMax::default();
    minmax.update(values).unwrap();
    let mut h = Histogram::new(bins);
    h.add(values);
    TensorStats {
        minmax,
        averaged: None,
        histogram: Some(h),
        non_finite: 0,
        channels: None,
    }
}

/// Gaussian data with a few huge outliers.
fn with_outliers() -> Vec<f32> {
    let mut v = gaussian(200_000, 7);
    v.extend([60.0, -55.0, 80.0, 75.0]);
    v
}

fn qdq_mse(values: &[f32], lo: f32, hi: f32, scheme: ActivationScheme) -> f64 {
    let p = activation_params(lo, hi, scheme);
    let r = scheme.qtype.range();
    values
        .iter()
        .map(|&x| (f64::from(dequantize(quantize(x, p, r), p)) - f64::from(x)).powi(2))
        .sum::<f64>()
        / values.len() as f64
}

#[test]
fn minmax_keeps_outliers_percentile_and_entropy_clip_them() {
    let s = stats_of(&with_outliers(), 4096);
    let mm = select_range(&s, Method::MinMax { averaged: false }, SYM).unwrap();
    assert_eq!(mm, (-55.0, 80.0));
    let (lo, hi) = select_range(&s, Method::Percentile { percentile: 99.99 }, SYM).unwrap();
    assert!(hi > 3.0 && hi < 5.0 && lo == -hi, "percentile {lo} {hi}");
    let (lo, hi) = select_range(&s, Method::Entropy, SYM).unwrap();
    assert!(hi > 2.0 && hi < 12.0 && lo == -hi, "entropy {lo} {hi}");
    // MSE weighs the four outliers' squared clipping error against everyone's rounding
    // noise: it clips less than percentile, but still clips
    let (lo, hi) = select_range(&s, Method::Mse, SYM).unwrap();
    assert!(hi > 8.0 && hi < 80.0 && lo == -hi, "mse {lo} {hi}");
}

#[test]
fn asymmetric_methods_follow_each_side() {
    // ReLU-like: half zeros, positive tail with outliers
    let mut v: Vec<f32> = gaussian(100_000, 3)
        .iter()
        .map(|x| x.max(0.0) * 2.0)
        .collect();
    v.extend([90.0, 70.0]);
    let s = stats_of(&v, 4096);
    for method in [
        Method::Percentile { percentile: 99.99 },
        Method::Entropy,
        Method::Mse,
    ] {
        let (lo, hi) = select_range(&s, method, ASYM).unwrap();
        assert_eq!(lo, 0.0, "{method:?}");
        assert!(hi > 3.0, "{method:?}: {hi}");
        // two outliers against 50 000 values: the squared error of clipping them outweighs
        // the rounding noise they add, so MSE keeps them; the other two methods clip
        assert!(hi < 30.0 || method == Method::Mse, "{method:?}: {hi}");
    }
}

#[test]
fn percentile_matches_the_sorted_data() {
    let v = gaussian(100_000, 11);
    let s = stats_of(&v, 4096);
    let mut mags: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    mags.sort_by(f32::total_cmp);
    let exact = mags[(0.999 * mags.len() as f64) as usize];
    let (_, t) = select_range(&s, Method::Percentile { percentile: 99.9 }, SYM).unwrap();
    assert!((t - exact).abs() < 0.01, "{t} vs {exact}");
    let mut sorted = v.clone();
    sorted.sort_by(f32::total_cmp);
    let (lo, hi) = select_range(&s, Method::Percentile { percentile: 99.0 }, ASYM).unwrap();
    let (elo, ehi) = (
        sorted[(0.01 * v.len() as f64) as usize],
        sorted[(0.99 * v.len() as f64) as usize],
    );
    assert!(
        (lo - elo).abs() < 0.01 && (hi - ehi).abs() < 0.01,
        "{lo} {hi} vs {elo} {ehi}"
    );
}

/// The reference algorithm: smoothed P and Q built bin by bin, O(bins²). Returns the
/// divergence of every candidate (index = bins kept).
fn reference_divergences(hist: &[u64]) -> Vec<f64> {
    fn smooth(p: &mut [f64]) {
        const EPS: f64 = 1e-4;
        let zeros = p.iter().filter(|&&v| v == 0.0).count();
        let nonzeros = p.len() - zeros;
        if zeros == 0 || nonzeros == 0 {
            return;
        }
        let take = EPS * zeros as f64 / nonzeros as f64;
        for v in p.iter_mut() {
            *v = if *v == 0.0 { EPS } else { *v - take };
        }
    }
    let n = hist.len();
    let mut out = vec![f64::INFINITY; n + 1];
    for i in ENTROPY_LEVELS..=n {
        let mut p: Vec<f64> = hist[..i].iter().map(|&c| c as f64).collect();
        p[i - 1] += hist[i..].iter().sum::<u64>() as f64;
        let mut q = vec![0f64; i];
        let merged = i / ENTROPY_LEVELS;
        for j in 0..ENTROPY_LEVELS {
            let start = j * merged;
            let stop = if j == ENTROPY_LEVELS - 1 {
                i
            } else {
                start + merged
            };
            let sum: f64 = hist[start..stop].iter().map(|&c| c as f64).sum();
            let nonzero = p[start..stop].iter().filter(|&&v| v != 0.0).count();
            for k in start..stop {
                if p[k] != 0.0 {
                    q[k] = sum / nonzero as f64;
                }
            }
        }
        smooth(&mut p);
        smooth(&mut q);
        let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
        let d: f64 = p
            .iter()
            .zip(&q)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, b)| (a / sp) * ((a / sp) / (b / sq)).ln())
            .sum();
        out[i] = d;
    }
    out
}

#[test]
fn fast_entropy_matches_the_smoothed_reference() {
    let relu: Vec<f32> = gaussian(60_000, 21)
        .iter()
        .map(|x| x.max(0.0))
        .chain([25.0, 31.0])
        .collect();
    let lognormal: Vec<f32> = gaussian(60_000, 5)
        .iter()
        .map(|x| x.exp())
        .chain([400.0])
        .collect();
    let uniform: Vec<f32> = (0..20_000).map(|k| (k % 1000) as f32 / 100.0).collect();
    for (name, v) in [
        ("gaussian", gaussian(60_000, 1)),
        ("relu", relu),
        ("lognormal", lognormal),
        ("uniform", uniform),
    ] {
        let s = stats_of(&v, 512);
        let h = s.histogram.as_ref().unwrap();
        let mags = h.magnitudes();
        let w = h.width().unwrap();
        let fast = entropy_threshold(&mags, Some(w), ENTROPY_LEVELS);
        let kl = reference_divergences(&mags);
        let best = kl.iter().copied().fold(f64::INFINITY, f64::min);
        let chosen = kl[(f64::from(fast) / w).round() as usize];
        // the same candidate, or one the reference scores within 1 % of its best
        assert!(
            chosen <= best * 1.01 + 1e-9,
            "{name}: fast picks {fast} with KL {chosen:e}, reference best {best:e}"
        );
    }
}

#[test]
fn entropy_keeps_the_range_of_discrete_values() {
    // five pixel levels on the negative side, the background one most frequent
    let mut v = Vec::new();
    for (level, count) in [
        (-0.75f32, 5000),
        (-0.59, 300),
        (-0.44, 200),
        (-0.28, 150),
        (-0.125, 100),
    ] {
        v.extend(std::iter::repeat_n(level, count));
    }
    v.extend(gaussian(20_000, 4).iter().map(|x| x.abs()));
    let s = stats_of(&v, 4096);
    let (lo, _) = select_range(&s, Method::Entropy, ASYM).unwrap();
    assert_eq!(lo, -0.75);
}

#[test]
fn entropy_differs_from_minmax_on_skewed_data() {
    let mut v: Vec<f32> = gaussian(50_000, 5).iter().map(|x| x.exp()).collect(); // log-normal
    v.push(400.0);
    let s = stats_of(&v, 4096);
    let (_, t) = select_range(&s, Method::Entropy, SYM).unwrap();
    assert!(t < 100.0, "entropy should clip the long tail: {t}");
}

#[test]
fn mse_is_within_five_percent_of_a_brute_force_search() {
    for (name, v, scheme) in [
        ("outliers", with_outliers(), SYM),
        ("gaussian", gaussian(100_000, 9), SYM),
        ("asymmetric", with_outliers(), ASYM),
    ] {
        let s = stats_of(&v, 4096);
        let (lo, hi) = select_range(&s, Method::Mse, scheme).unwrap();
        let ours = qdq_mse(&v, lo, hi, scheme);
        let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let best = (1..=400)
            .map(|k| amax * k as f32 / 400.0)
            .map(|t| {
                if scheme.symmetric {
                    qdq_mse(&v, -t, t, scheme)
                } else {
                    qdq_mse(&v, (-t).max(-55.0), t.min(80.0), scheme)
                }
            })
            .fold(f64::INFINITY, f64::min);
        assert!(
            ours <= best * 1.05,
            "{name}: ours {ours:e} vs brute force {best:e} (range {lo}..{hi})"
        );
    }
}

#[test]
fn averaged_minmax_and_missing_histograms() {
    let mut s = stats_of(&[1.0, -2.0], 64);
    s.averaged = Some(crate::stats::Averaged {
        min_sum: -3.0,
        max_sum: 5.0,
        batches: 2,
    });
    assert_eq!(
        select_range(&s, Method::MinMax { averaged: true }, SYM).unwrap(),
        (-1.5, 1.0)
    );
    s.histogram = None;
    assert!(
        select_range(&s, Method::Entropy, SYM)
            .unwrap_err()
            .contains("needs a histogram")
    );
}
