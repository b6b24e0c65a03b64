//! How far a quantized model is from its float original: error statistics of outputs and of
//! every quantized tensor, top-1 agreement and accuracy against labels, accumulated sample by
//! sample (constant memory) and mergeable across threads.
//!
//! Pure: fed float values by whoever runs the models (`pipeline::evaluate` through
//! `calib::run_models`).

pub mod compare;
mod exact;
pub mod mixed;
mod plot;
pub mod simulate;

pub use plot::layers_svg;

use serde::Serialize;

use exact::ExactSum;

/// Error of one tensor against its reference, accumulated over samples: each sample's sums in
/// f64 in a fixed order, then added exactly, so that the figures do not depend on how samples
/// were spread over threads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// Σ r² (the reference's energy).
    signal: ExactSum,
    /// Σ (r - t)².
    noise: ExactSum,
    /// Σ r·t and Σ t², for the cosine.
    dot: ExactSum,
    test_energy: ExactSum,
    pub max_abs: f64,
    pub count: u64,
}

impl ErrorStats {
    /// Folds in one sample (`reference` and `test` of equal length).
    pub fn add(&mut self, reference: &[f32], test: &[f32]) {
        let (mut signal, mut noise, mut dot, mut test_energy) = (0.0, 0.0, 0.0, 0.0);
        for (&r, &t) in reference.iter().zip(test) {
            let (r, t) = (f64::from(r), f64::from(t));
            let d = r - t;
            signal += r * r;
            noise += d * d;
            dot += r * t;
            test_energy += t * t;
            self.max_abs = self.max_abs.max(d.abs());
        }
        self.signal.add(signal);
        self.noise.add(noise);
        self.dot.add(dot);
        self.test_energy.add(test_energy);
        self.count += reference.len().min(test.len()) as u64;
    }

    pub fn merge(&mut self, o: &ErrorStats) {
        self.signal.merge(&o.signal);
        self.noise.merge(&o.noise);
        self.dot.merge(&o.dot);
        self.test_energy.merge(&o.test_energy);
        self.max_abs = self.max_abs.max(o.max_abs);
        self.count += o.count;
    }

    /// Signal-to-quantization-noise ratio in dB; `None` when the two are identical.
    pub fn sqnr_db(&self) -> Option<f64> {
        let (signal, noise) = (self.signal.value(), self.noise.value());
        if noise == 0.0 {
            return None;
        }
        Some(10.0 * (signal / noise).log10())
    }

    /// Cosine similarity of the two, over all samples (1 when both are zero).
    pub fn cosine(&self) -> f64 {
        let (signal, test_energy) = (self.signal.value(), self.test_energy.value());
        let den = (signal * test_energy).sqrt();
        if den == 0.0 {
            return if signal == test_energy { 1.0 } else { 0.0 };
        }
        self.dot.value() / den
    }
}

/// Index of the largest value of each row of `data` (rows of `width`), first one on ties.
pub fn argmax_rows(data: &[f32], width: usize) -> impl Iterator<Item = usize> + '_ {
    data.chunks_exact(width.max(1)).map(|row| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    })
}

/// Top-1 agreement between reference and test rows, and accuracy of both against labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Top1 {
    pub rows: u64,
    pub agree: u64,
    pub labelled: u64,
    pub reference_correct: u64,
    pub test_correct: u64,
}

impl Top1 {
    /// Folds in one sample's rows; `labels` (one per row) when known.
    pub fn add(&mut self, reference: &[f32], test: &[f32], width: usize, labels: Option<&[i64]>) {
        let r: Vec<usize> = argmax_rows(reference, width).collect();
        let t: Vec<usize> = argmax_rows(test, width).collect();
        self.rows += r.len() as u64;
        self.agree += r.iter().zip(&t).filter(|(a, b)| a == b).count() as u64;
        if let Some(labels) = labels {
            for ((&a, &b), &l) in r.iter().zip(&t).zip(labels) {
                self.labelled += 1;
                self.reference_correct += u64::from(a as i64 == l);
                self.test_correct += u64::from(b as i64 == l);
            }
        }
    }

    pub fn merge(&mut self, o: &Top1) {
        self.rows += o.rows;
        self.agree += o.agree;
        self.labelled += o.labelled;
        self.reference_correct += o.reference_correct;
        self.test_correct += o.test_correct;
    }

    fn percent(n: u64, of: u64) -> Option<f64> {
        (of > 0).then(|| 100.0 * n as f64 / of as f64)
    }

    pub fn agreement(&self) -> Option<f64> {
        Self::percent(self.agree, self.rows)
    }

    pub fn reference_accuracy(&self) -> Option<f64> {
        Self::percent(self.reference_correct, self.labelled)
    }

    pub fn test_accuracy(&self) -> Option<f64> {
        Self::percent(self.test_correct, self.labelled)
    }

    /// Points of top-1 accuracy lost (negative: gained).
    pub fn drop(&self) -> Option<f64> {
        Some(self.reference_accuracy()? - self.test_accuracy()?)
    }
}

/// The metrics of one model output.
#[derive(Clone, Debug, Serialize)]
pub struct OutputMetrics {
    pub name: String,
    /// `null` when the outputs are identical.
    pub sqnr_db: Option<f64>,
    pub cosine: f64,
    pub max_abs_error: f64,
    pub elements: u64,
    /// Percent of rows whose arg-max agrees (outputs whose last axis has 2+ entries).
    pub top1_agreement: Option<f64>,
}

impl OutputMetrics {
    pub fn new(name: &str, e: &ErrorStats, top1: Option<&Top1>) -> Self {
        OutputMetrics {
            name: name.to_string(),
            sqnr_db: e.sqnr_db(),
            cosine: e.cosine(),
            max_abs_error: e.max_abs,
            elements: e.count,
            top1_agreement: top1.and_then(Top1::agreement),
        }
    }
}

/// Accuracy against labels (of the first output).
#[derive(Clone, Debug, Serialize)]
pub struct LabelMetrics {
    pub rows: u64,
    pub fp32_top1: f64,
    pub quantized_top1: f64,
    /// Points lost (fp32 minus quantized).
    pub top1_drop: f64,
}

impl LabelMetrics {
    pub fn new(t: &Top1) -> Option<Self> {
        Some(LabelMetrics {
            rows: t.labelled,
            fp32_top1: t.reference_accuracy()?,
            quantized_top1: t.test_accuracy()?,
            top1_drop: t.drop()?,
        })
    }
}

/// The error of one quantized tensor.
#[derive(Clone, Debug, Serialize)]
pub struct LayerMetrics {
    /// The float tensor quantized, and the QuantizeLinear node doing it.
    pub tensor: String,
    pub node: String,
    /// Its simulated (dequantized) value against the float model's: everything upstream
    /// included. `null`: identical.
    pub sqnr_db: Option<f64>,
    /// Its own rounding and clipping only: the dequantized value against the value it
    /// quantized, in the same simulated run.
    pub local_sqnr_db: Option<f64>,
}

/// Orders layers worst first: lowest SQNR first, identical (`None`) last, then by name.
pub fn sort_worst_first(layers: &mut [LayerMetrics]) {
    let key = |s: Option<f64>| s.unwrap_or(f64::INFINITY);
    layers.sort_by(|a, b| {
        key(a.sqnr_db)
            .total_cmp(&key(b.sqnr_db))
            .then_with(|| a.tensor.cmp(&b.tensor))
    });
}

/// dB for text: `inf` when identical.
pub fn db(v: Option<f64>) -> String {
    v.map_or("inf".into(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqnr_and_cosine_of_known_noise() {
        let mut e = ErrorStats::default();
        // signal energy 4, noise energy 0.04: 20 dB
        e.add(&[2.0, 0.0], &[2.2, 0.0]);
        assert!((e.sqnr_db().unwrap() - 20.0).abs() < 1e-4, "{e:?}"); // 2.2 is not exact in f32
        assert!((e.cosine() - 1.0).abs() < 1e-12);
        assert!((e.max_abs - 0.2).abs() < 1e-6);
        let mut same = ErrorStats::default();
        same.add(&[1.0, -1.0], &[1.0, -1.0]);
        assert_eq!(same.sqnr_db(), None);
        let mut opposite = ErrorStats::default();
        opposite.add(&[1.0, 0.0], &[-1.0, 0.0]);
        assert!((opposite.cosine() + 1.0).abs() < 1e-12);
        // merging equals one pass
        let mut a = ErrorStats::default();
        a.add(&[2.0], &[2.2]);
        let mut b = ErrorStats::default();
        b.add(&[0.0], &[0.0]);
        a.merge(&b);
        assert_eq!(a, e);
    }

    #[test]
    fn top1_counts_agreement_and_accuracy() {
        let mut t = Top1::default();
        // rows: [0.1, 0.9] -> 1, [0.8, 0.2] -> 0; test flips the second row
        t.add(
            &[0.1, 0.9, 0.8, 0.2],
            &[0.2, 0.8, 0.1, 0.3],
            2,
            Some(&[1, 0]),
        );
        assert_eq!(t.rows, 2);
        assert_eq!(t.agreement(), Some(50.0));
        assert_eq!(t.reference_accuracy(), Some(100.0));
        assert_eq!(t.test_accuracy(), Some(50.0));
        assert_eq!(t.drop(), Some(50.0));
    }

    #[test]
    fn worst_layers_first() {
        let l = |t: &str, s: Option<f64>| LayerMetrics {
            tensor: t.into(),
            node: String::new(),
            sqnr_db: s,
            local_sqnr_db: None,
        };
        let mut v = vec![l("a", None), l("b", Some(30.0)), l("c", Some(10.0))];
        sort_worst_first(&mut v);
        let order: Vec<&str> = v.iter().map(|x| x.tensor.as_str()).collect();
        assert_eq!(order, ["c", "b", "a"]);
    }
}
