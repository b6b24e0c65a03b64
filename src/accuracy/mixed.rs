//! Automatic mixed precision: which quantized layers to keep float so that the model meets an
//! accuracy target, with as few float layers as possible.
//!
//! The caller supplies `evaluate(float_layers) → Score`: it re-plans the model with those layers
//! kept float, rebuilds it from the statistics already gathered and measures it on held-out
//! samples (inference only). Every strategy orders the candidates one way, keeps the shortest
//! prefix that meets the target, then prunes that set backwards (a layer turned back to int8
//! if the target still holds without it):
//!
//! - `sensitivity`: the layers whose quantization *alone* hurts the output most go first;
//! - `leave-one-out`: the layers whose float-ness *alone* helps the fully quantized model
//!   most go first (catches layers that only hurt in combination);
//! - `greedy`: at each step, of the best few candidates by the leave-one-out order, the one
//!   that helps most given the layers already float (costlier, best when errors interact).
//!
//! `All` runs the three and keeps the one with the fewest float layers (ties: the better score).
//! Pure: no I/O, deterministic given the evaluator.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::Error;

/// What a configuration measured on the held-out samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    /// Worst output SQNR in dB (`None`: identical to float).
    pub sqnr_db: Option<f64>,
    /// Top-1 points lost against the float model (with labels).
    pub top1_drop: Option<f64>,
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "output SQNR {} dB", crate::accuracy::db(self.sqnr_db))?;
        if let Some(d) = self.top1_drop {
            write!(f, ", top-1 drop {:.2} points", d + 0.0)?;
        }
        Ok(())
    }
}

/// The accuracy to reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Worst output SQNR at least this many dB.
    Sqnr(f64),
    /// Top-1 accuracy drop at most this many points (needs labels).
    Top1Drop(f64),
}

impl Target {
    pub fn met(self, s: &Score) -> bool {
        match self {
            Target::Sqnr(db) => s.sqnr_db.is_none_or(|v| v >= db),
            Target::Top1Drop(p) => s.top1_drop.is_some_and(|d| d <= p),
        }
    }

    /// How bad a score is for this target: larger is worse (compares configurations).
    fn badness(self, s: &Score) -> (f64, f64) {
        let sqnr = -s.sqnr_db.unwrap_or(f64::INFINITY);
        match self {
            Target::Sqnr(_) => (sqnr, 0.0),
            Target::Top1Drop(_) => (s.top1_drop.unwrap_or(f64::INFINITY), sqnr),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Target::Sqnr(db) => format!("output SQNR >= {db} dB"),
            Target::Top1Drop(p) => format!("top-1 drop <= {p} points"),
        }
    }
}

/// Which strategies to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Sensitivity,
    LeaveOneOut,
    Greedy,
    All,
}

/// Candidates the greedy strategy tries at each step.
const GREEDY_WIDTH: usize = 8;

/// One layer's effect, measured alone.
#[derive(Clone, Debug, Serialize)]
pub struct LayerEffect {
    pub layer: String,
    /// Only this layer quantized.
    pub alone: Score,
    /// Everything quantized but this layer (run by leave-one-out and greedy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_but: Option<Score>,
}

/// What one strategy found.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub strategy: &'static str,
    /// Layers kept float, in the order they were chosen.
    pub float: Vec<String>,
    pub score: Score,
    pub met: bool,
    /// Configurations this strategy evaluated that no earlier strategy had.
    pub evaluations: usize,
}

/// The whole search.
#[derive(Clone, Debug, Serialize)]
pub struct Search {
    pub target: String,
    pub candidates: usize,
    /// Every layer quantized.
    pub baseline: Score,
    /// Per layer, most harmful first (by `alone`).
    pub effects: Vec<LayerEffect>,
    pub outcomes: Vec<Outcome>,
    /// Index into `outcomes` of the one applied.
    pub chosen: usize,
    pub evaluations: usize,
    /// Held-out samples each configuration was measured on (set by the caller).
    pub samples: usize,
    /// What the chosen layers become (`float`, or `int16`; set by the caller).
    pub fallback: &'static str,
}

impl Search {
    pub fn chosen(&self) -> &Outcome {
        &self.outcomes[self.chosen]
    }
}

/// Memoized evaluation of float-layer sets.
struct Evaluator<'a> {
    eval: &'a mut dyn FnMut(&[String]) -> Result<Score, Error>,
    cache: BTreeMap<BTreeSet<String>, Score>,
}

impl Evaluator<'_> {
    fn score(&mut self, float: &[String]) -> Result<Score, Error> {
        let key: BTreeSet<String> = float.iter().cloned().collect();
        if let Some(s) = self.cache.get(&key) {
            return Ok(*s);
        }
        let mut sorted: Vec<String> = key.iter().cloned().collect();
        sorted.sort();
        let s = (self.eval)(&sorted)?;
        self.cache.insert(key, s);
        Ok(s)
    }
}

/// Orders `units` by the key, stable (ties keep graph order).
fn ordered(units: &[String], key: impl Fn(&str) -> (f64, f64)) -> Vec<String> {
    let mut v: Vec<String> = units.to_vec();
    v.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    v
}

/// The shortest prefix of `order` meeting `target`, then pruned backwards.
fn prefix_then_prune(
    ev: &mut Evaluator,
    order: &[String],
    target: Target,
) -> Result<(Vec<String>, Score), Error> {
    let mut float: Vec<String> = Vec::new();
    let mut score = ev.score(&float)?;
    for u in order {
        if target.met(&score) {
            break;
        }
        float.push(u.clone());
        score = ev.score(&float)?;
    }
    prune(ev, float, score, target)
}

/// Turns float layers back to int8, latest choice first, while the target holds.
fn prune(
    ev: &mut Evaluator,
    mut float: Vec<String>,
    mut score: Score,
    target: Target,
) -> Result<(Vec<String>, Score), Error> {
    if !target.met(&score) {
        return Ok((float, score));
    }
    let mut i = float.len();
    while i > 0 {
        i -= 1;
        let mut without = float.clone();
        without.remove(i);
        let s = ev.score(&without)?;
        if target.met(&s) {
            float = without;
            score = s;
        }
    }
    Ok((float, score))
}

fn greedy(
    ev: &mut Evaluator,
    order: &[String],
    target: Target,
) -> Result<(Vec<String>, Score), Error> {
    let mut float: Vec<String> = Vec::new();
    let mut score = ev.score(&float)?;
    while !target.met(&score) && float.len() < order.len() {
        let candidates: Vec<&String> = order
            .iter()
            .filter(|u| !float.contains(u))
            .take(GREEDY_WIDTH)
            .collect();
        let mut best: Option<(String, Score)> = None;
        for c in candidates {
            let mut trial = float.clone();
            trial.push(c.clone());
            let s = ev.score(&trial)?;
            if best
                .as_ref()
                .is_none_or(|(_, b)| target.badness(&s) < target.badness(b))
            {
                best = Some((c.clone(), s));
            }
        }
        let (u, s) = best.expect("at least one candidate while some layer is quantized");
        float.push(u);
        score = s;
    }
    prune(ev, float, score, target)
}

/// Every layer quantized, then each layer alone and (with `all_but`) all but each layer.
fn measure(
    ev: &mut Evaluator,
    units: &[String],
    all_but: bool,
) -> Result<(Score, Vec<LayerEffect>), Error> {
    let baseline = ev.score(&[])?;
    let mut effects: Vec<LayerEffect> = Vec::new();
    for u in units {
        let others: Vec<String> = units.iter().filter(|o| *o != u).cloned().collect();
        effects.push(LayerEffect {
            layer: u.clone(),
            alone: ev.score(&others)?,
            all_but: None,
        });
    }
    if all_but {
        for e in &mut effects {
            e.all_but = Some(ev.score(std::slice::from_ref(&e.layer))?);
        }
    }
    Ok((baseline, effects))
}

/// Orders effects most harmful first (by `alone`: top-1 drop, then SQNR), ties by name.
fn rank(effects: &mut [LayerEffect]) {
    let key = |s: &Score| {
        (
            s.top1_drop.unwrap_or(0.0),
            -s.sqnr_db.unwrap_or(f64::INFINITY),
        )
    };
    effects.sort_by(|a, b| {
        let (ka, kb) = (key(&a.alone), key(&b.alone));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.total_cmp(&ka.1))
            .then(a.layer.cmp(&b.layer))
    });
}

/// Sensitivity analysis: the score with every layer quantized, with each layer alone
/// quantized and with all but each layer quantized, most harmful layer first; and the number of
/// configurations measured.
pub fn sensitivity(
    units: &[String],
    eval: &mut dyn FnMut(&[String]) -> Result<Score, Error>,
) -> Result<(Score, Vec<LayerEffect>, usize), Error> {
    let mut ev = Evaluator {
        eval,
        cache: BTreeMap::new(),
    };
    let (baseline, mut effects) = measure(&mut ev, units, true)?;
    rank(&mut effects);
    Ok((baseline, effects, ev.cache.len()))
}

/// Searches which of `units` (quantized layers, graph order) to keep float to meet `target`.
pub fn search(
    units: &[String],
    target: Target,
    strategy: Strategy,
    eval: &mut dyn FnMut(&[String]) -> Result<Score, Error>,
) -> Result<Search, Error> {
    let mut ev = Evaluator {
        eval,
        cache: BTreeMap::new(),
    };
    let runs = |s: Strategy| strategy == s || strategy == Strategy::All;
    let (baseline, mut effects) = measure(
        &mut ev,
        units,
        runs(Strategy::LeaveOneOut) || runs(Strategy::Greedy),
    )?;
    let effect = |u: &str| effects.iter().find(|e| e.layer == u).expect("a unit");
    // most harmful alone first
    let by_alone = ordered(units, |u| {
        let b = target.badness(&effect(u).alone);
        (-b.0, -b.1)
    });
    // most helpful when float first
    let by_loo = ordered(units, |u| {
        effect(u).all_but.map_or((0.0, 0.0), |s| target.badness(&s))
    });
    let mut outcomes = Vec::new();
    let mut seen = ev.cache.len();
    let mut record = |name: &'static str, r: (Vec<String>, Score), ev: &Evaluator| {
        outcomes.push(Outcome {
            strategy: name,
            met: target.met(&r.1),
            float: r.0,
            score: r.1,
            evaluations: ev.cache.len() - seen,
        });
        seen = ev.cache.len();
    };
    if runs(Strategy::Sensitivity) {
        let r = prefix_then_prune(&mut ev, &by_alone, target)?;
        record("sensitivity", r, &ev);
    }
    if runs(Strategy::LeaveOneOut) {
        let r = prefix_then_prune(&mut ev, &by_loo, target)?;
        record("leave-one-out", r, &ev);
    }
    if runs(Strategy::Greedy) {
        let r = greedy(&mut ev, &by_loo, target)?;
        record("greedy", r, &ev);
    }
    let chosen = (0..outcomes.len())
        .min_by(|&a, &b| {
            let (x, y) = (&outcomes[a], &outcomes[b]);
            (!x.met)
                .cmp(&!y.met)
                .then(x.float.len().cmp(&y.float.len()))
                .then(
                    target
                        .badness(&x.score)
                        .partial_cmp(&target.badness(&y.score))
                        .unwrap_or(std::cmp::Ordering::Equal),
                )
        })
        .expect("at least one strategy ran");
    rank(&mut effects);
    Ok(Search {
        fallback: "float",
        target: target.describe(),
        candidates: units.len(),
        baseline,
        effects,
        outcomes,
        chosen,
        evaluations: ev.cache.len(),
        samples: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("l{i}")).collect()
    }

    /// Noise adds up over quantized layers: SQNR = -10 log10(Σ noise of int8 layers).
    fn additive(noise: &[f64]) -> impl FnMut(&[String]) -> Result<Score, Error> + '_ {
        move |float: &[String]| {
            let total: f64 = noise
                .iter()
                .enumerate()
                .filter(|(i, _)| !float.contains(&format!("l{i}")))
                .map(|(_, n)| n)
                .sum();
            Ok(Score {
                sqnr_db: (total > 0.0).then(|| -10.0 * total.log10()),
                top1_drop: None,
            })
        }
    }

    #[test]
    fn keeps_the_noisiest_layers_float() {
        // one layer dominates: keeping it float reaches 30 dB
        let noise = [1e-4, 1e-1, 2e-4, 1e-4];
        let mut f = additive(&noise);
        let s = search(&units(4), Target::Sqnr(30.0), Strategy::All, &mut f).unwrap();
        assert!((s.baseline.sqnr_db.unwrap() - 9.98).abs() < 0.1);
        for o in &s.outcomes {
            assert!(o.met, "{o:?}");
            assert_eq!(o.float, vec!["l1".to_string()], "{}", o.strategy);
        }
        assert_eq!(s.effects[0].layer, "l1");
        assert_eq!(s.chosen().float.len(), 1);
    }

    #[test]
    fn pruning_drops_layers_the_target_does_not_need() {
        // the target needs l0 and l1 float; l2 alone is harmless
        let noise = [1e-2, 1e-2, 1e-6];
        let mut f = additive(&noise);
        let s = search(&units(3), Target::Sqnr(50.0), Strategy::Sensitivity, &mut f).unwrap();
        let o = s.chosen();
        assert!(o.met);
        let mut got = o.float.clone();
        got.sort();
        assert_eq!(got, ["l0", "l1"]);
    }

    #[test]
    fn interactions_favour_leave_one_out_and_greedy() {
        // l0 and l1 are each harmless alone but wreck the output together (an error one
        // amplifies in the other); l2 is mildly noisy alone
        let mut f = |float: &[String]| -> Result<Score, Error> {
            let q = |l: &str| !float.iter().any(|x| x == l);
            let mut noise = 0.0;
            if q("l0") && q("l1") {
                noise += 1e-1;
            } else if q("l0") || q("l1") {
                noise += 1e-7;
            }
            if q("l2") {
                noise += 1e-3;
            }
            Ok(Score {
                sqnr_db: (noise > 0.0).then(|| -10.0 * f64::log10(noise)),
                top1_drop: None,
            })
        };
        let s = search(&units(3), Target::Sqnr(25.0), Strategy::All, &mut f).unwrap();
        let by = |name: &str| s.outcomes.iter().find(|o| o.strategy == name).unwrap();
        assert_eq!(by("leave-one-out").float.len(), 1);
        assert_eq!(by("greedy").float.len(), 1);
        assert!(!by("sensitivity").float.is_empty());
        assert_eq!(s.chosen().float.len(), 1);
    }

    #[test]
    fn top1_target_needs_labels() {
        let mut f = |_: &[String]| -> Result<Score, Error> {
            Ok(Score {
                sqnr_db: Some(20.0),
                top1_drop: None,
            })
        };
        let s = search(
            &units(2),
            Target::Top1Drop(0.5),
            Strategy::Sensitivity,
            &mut f,
        )
        .unwrap();
        assert!(!s.chosen().met);
    }
}
