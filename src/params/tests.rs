//! Unit tests of `params`.

use super::*;
use proptest::prelude::*;

const S8: ActivationScheme = ActivationScheme {
    qtype: QType::Int8,
    symmetric: true,
};
const A8: ActivationScheme = ActivationScheme {
    qtype: QType::Int8,
    symmetric: false,
};
const AU8: ActivationScheme = ActivationScheme {
    qtype: QType::Uint8,
    symmetric: false,
};
const SU8: ActivationScheme = ActivationScheme {
    qtype: QType::Uint8,
    symmetric: true,
};

#[test]
fn float16_scales_round_up_to_representable_values() {
    use half::f16;
    for s in [1e-9f32, 3e-6, 6.1e-5, 0.01, 0.0123457, 1.0, 3.3, 70000.0] {
        let c = f16_ceil(s);
        assert_eq!(f16::from_f32(c).to_f32(), c, "{s} -> {c} is a float16");
        assert!(c >= s.min(f16::MAX.to_f32()), "{s} -> {c}");
        // the next float16 below is below s: c is the smallest such value
        let below = f16::from_bits(f16::from_f32(c).to_bits() - 1).to_f32();
        assert!(below < s || c == f16::from_bits(1).to_f32(), "{s} -> {c}");
    }
    // asymmetric: the zero-point follows the larger scale, the range still fits
    let a = ActivationScheme {
        qtype: QType::Uint8,
        symmetric: false,
    };
    let p = activation_params(-1.0, 3.0, a);
    let h = with_f16_scale(p, a, -1.0);
    assert!(h.scale >= p.scale);
    assert_eq!(quantize(-1.0, h, a.qtype.range()), 0);
    assert!(quantize(3.0, h, a.qtype.range()) <= 255);
    let w = quantize_weight(&[1e-3, -2e-3, 5e-4], &[3], None, &[], true);
    assert_eq!(f16::from_f32(w.scales[0]).to_f32(), w.scales[0]);
    assert_eq!(
        f32::from(w.values[1]),
        (-2e-3f32 / w.scales[0]).round_ties_even().max(-127.0)
    );
}

#[test]
fn symmetric_int8_maps_amax_to_127() {
    let p = activation_params(-2.0, 5.08, S8);
    assert_eq!(p.zero_point, 0);
    assert!((p.scale - 0.04).abs() < 1e-7);
    assert_eq!(quantize(5.08, p, QType::Int8.range()), 127);
    assert_eq!(quantize(-5.08, p, QType::Int8.range()), -127);
}

#[test]
fn asymmetric_matches_onnx_runtime_formula() {
    // ORT: scale = (max - min) / 255, zp = round(qmin - min / scale)
    let p = activation_params(-1.0, 3.0, AU8);
    assert!((p.scale - 4.0 / 255.0).abs() < 1e-9);
    assert_eq!(p.zero_point, 64);
    let p = activation_params(0.5, 3.0, A8); // widened to include 0
    assert!((p.scale - 3.0 / 255.0).abs() < 1e-9);
    assert_eq!(p.zero_point, -128);
}

#[test]
fn fast_rounding_matches_round_ties_even() {
    for i in -40_000..40_000 {
        let x = i as f32 * 0.0625 + 0.003 * (i % 7) as f32;
        assert_eq!(round_even_small(x), x.round_ties_even(), "{x}");
    }
    for x in [0.5f32, 1.5, 2.5, -0.5, -1.5, 126.5, -127.5, 4_194_303.5] {
        assert_eq!(round_even_small(x), x.round_ties_even(), "{x}");
    }
}

#[test]
fn rounding_is_half_to_even() {
    let p = QParams {
        scale: 1.0,
        zero_point: 0,
    };
    let r = QType::Int8.range();
    assert_eq!(
        [0.5, 1.5, 2.5, -0.5, -1.5].map(|x| quantize(x, p, r)),
        [0, 2, 2, 0, -2]
    );
}

#[test]
fn degenerate_ranges_get_scale_one() {
    for scheme in [S8, A8, AU8, SU8] {
        let p = activation_params(0.0, 0.0, scheme);
        assert_eq!(p.scale, 1.0);
        assert_eq!(dequantize(quantize(0.0, p, scheme.qtype.range()), p), 0.0);
    }
    assert_eq!(weight_params(1e-44).scale, 1.0);
    assert_eq!(weight_params(0.0).scale, 1.0);
}

#[test]
fn per_channel_weights_use_their_own_amax() {
    // dims [2, 3], axis 0: rows have amax 1 and 100
    let w = quantize_weight(
        &[1.0, -0.5, 0.0, 100.0, 50.0, -100.0],
        &[2, 3],
        Some(0),
        &[],
        false,
    );
    assert_eq!(w.values, vec![127, -64, 0, 127, 64, -127]);
    assert_eq!(w.scales.len(), 2);
    // axis 1 of [2, 3]: columns
    let w = quantize_weight(
        &[1.0, 2.0, 4.0, -1.0, -2.0, -4.0],
        &[2, 3],
        Some(1),
        &[],
        false,
    );
    assert_eq!(w.values, vec![127, 127, 127, -127, -127, -127]);
    let t = quantize_weight(
        &[1.0, 2.0, 4.0, -1.0, -2.0, -4.0],
        &[2, 3],
        None,
        &[],
        false,
    );
    assert_eq!(t.scales, vec![4.0 / 127.0]);
    assert_eq!(t.values, vec![32, 64, 127, -32, -64, -127]);
}

const S16: ActivationScheme = ActivationScheme {
    qtype: QType::Int16,
    symmetric: true,
};
const A16: ActivationScheme = ActivationScheme {
    qtype: QType::Int16,
    symmetric: false,
};

fn scheme() -> impl Strategy<Value = ActivationScheme> {
    prop_oneof![
        Just(S8),
        Just(A8),
        Just(AU8),
        Just(SU8),
        Just(S16),
        Just(A16)
    ]
}

#[test]
fn fp8_e4m3_rounds_to_nearest_even_and_saturates() {
    // every byte but NaN decodes and encodes back to itself
    for b in 0..=255u8 {
        let v = from_fp8(b);
        if v.is_nan() {
            continue;
        }
        let back = to_fp8(v);
        assert!(
            back == b || (v == 0.0 && back & 0x7f == 0),
            "{b:#04x} -> {v} -> {back:#04x}"
        );
    }
    assert_eq!(from_fp8(0x7e), 448.0);
    assert_eq!(to_fp8(1000.0), 0x7e);
    assert_eq!(to_fp8(-f32::INFINITY), 0xfe);
    assert_eq!(
        to_fp8(460.0),
        0x7e,
        "past 448 saturates rather than meeting NaN"
    );
    // 1 + 1/16 lies halfway between 1 and 1.125: even mantissa (1) wins
    assert_eq!(from_fp8(to_fp8(1.0625)), 1.0);
    assert_eq!(from_fp8(to_fp8(1.1875)), 1.25);
    // subnormals: steps of 2^-9
    assert_eq!(from_fp8(to_fp8(3.0 * 2f32.powi(-9))), 3.0 * 2f32.powi(-9));
    assert_eq!(from_fp8(to_fp8(2f32.powi(-11))), 0.0);
    let p = activation_params(
        -3.0,
        2.0,
        ActivationScheme {
            qtype: QType::Fp8,
            symmetric: false,
        },
    );
    assert_eq!(
        (p.scale, p.zero_point),
        (3.0 / 448.0, 0),
        "fp8 is symmetric"
    );
}

#[test]
fn int16_uses_its_whole_range() {
    let p = activation_params(-2.0, 3.0, S16);
    assert_eq!((p.scale, p.zero_point), ((3.0f64 / 32767.0) as f32, 0));
    assert_eq!(quantize(3.0, p, QType::Int16.range()), 32767);
    let a = activation_params(-1.0, 3.0, A16);
    assert_eq!(quantize(-1.0, a, QType::Int16.range()), -32768);
    assert_eq!(quantize(3.0, a, QType::Int16.range()), 32767);
}

/// A `[rows, cols]` weight of a smooth ramp with one outlier per 32-value block of each
/// column (row 0, 32, ...).
fn ramp_with_outliers(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            let v = ((r * 7 + c * 3) % 23) as f32 / 23.0 - 0.5;
            if r % 32 == 0 { v + 4.0 } else { v }
        })
        .collect()
}

#[test]
fn int4_blocks_have_one_scale_per_block_of_the_input_axis() {
    let (rows, cols) = (64, 3);
    let data = ramp_with_outliers(rows, cols);
    let layout = Int4Layout::Blocks { axis: 0, size: 16 };
    assert_eq!(layout.scale_dims(&[rows, cols]), vec![4, 3]);
    let q = quantize_weight_4bit(&data, &[rows, cols], layout, &[], false, false, false);
    assert_eq!((q.values.len(), q.scales.len()), (rows * cols, 12));
    for (i, (&x, &v)) in data.iter().zip(&q.values).enumerate() {
        let (r, c) = (i / cols, i % cols);
        let s = q.scales[(r / 16) * cols + c];
        // round to nearest: amax / 7 per block, nothing clipped
        assert!((-7..=7).contains(&v), "{v}");
        assert!(
            (f32::from(v) * s - x).abs() <= s * 0.5 + 1e-6,
            "{x} {v} {s}"
        );
    }
    // blocks without an outlier get a 4x finer scale than blocks with one
    assert!(q.scales[3] < q.scales[0] / 4.0, "{:?}", q.scales);
}

#[test]
fn int4_clip_search_lowers_the_error() {
    let (rows, cols) = (64, 4);
    let data = ramp_with_outliers(rows, cols);
    // one scale per column
    let err = |q: &QuantizedWeight| -> f64 {
        data.iter()
            .zip(&q.values)
            .enumerate()
            .map(|(i, (&x, &v))| {
                (f64::from(x) - f64::from(v) * f64::from(q.scales[i % cols])).powi(2)
            })
            .sum()
    };
    let layout = Int4Layout::PerChannel(1);
    let rtn = quantize_weight_4bit(&data, &[rows, cols], layout, &[], false, false, false);
    let searched = quantize_weight_4bit(&data, &[rows, cols], layout, &[], false, true, false);
    assert!(searched.values.iter().all(|v| (-8..=7).contains(v)));
    let (e_search, e_rtn) = (err(&searched), err(&rtn));
    assert!(
        e_search < 0.9 * e_rtn,
        "search {e_search} vs round-to-nearest {e_rtn}"
    );
    // every searched scale is one of the candidates: at most the absolute-maximum one
    for (s, r) in searched.scales.iter().zip(&rtn.scales) {
        assert!(s <= r && *s >= r * 0.5, "{s} {r}");
    }
}

proptest! {
    #[test]
    fn zero_is_exact_and_error_is_within_half_a_step(
        a in -1e6f32..1e6, b in -1e6f32..1e6, t in 0f32..=1.0, scheme in scheme()
    ) {
        let (min, max) = (a.min(b), a.max(b));
        let p = activation_params(min, max, scheme);
        let r = scheme.qtype.range();
        prop_assert!(p.scale.is_finite() && p.scale > 0.0);
        prop_assert!(p.zero_point >= r.0 && p.zero_point <= r.1);
        prop_assert_eq!(dequantize(quantize(0.0, p, r), p), 0.0);
        let x = min + (max - min) * t;
        let err = (dequantize(quantize(x, p, r), p) - x).abs();
        prop_assert!(err <= p.scale * 0.5 * (1.0 + 1e-4) + x.abs() * 1e-6,
            "x={} err={} scale={}", x, err, p.scale);
    }

    #[test]
    fn weights_stay_in_range_and_round_trip(
        data in prop::collection::vec(-50f32..50.0, 1..64), per_channel in any::<bool>()
    ) {
        let dims = [data.len()];
        let w = quantize_weight(&data, &dims, per_channel.then_some(0), &[], false);
        for (i, (&x, &q)) in data.iter().zip(&w.values).enumerate() {
            prop_assert!((-127..=127).contains(&q));
            let s = w.scales[if per_channel { i } else { 0 }];
            let back = f32::from(q) * s;
            prop_assert!((back - x).abs() <= s * 0.5 * (1.0 + 1e-4) + 1e-6, "x={} back={}", x, back);
        }
    }
}
