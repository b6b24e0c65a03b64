//! How a linear layer's weight meets its input: which entries form an output row, which input
//! channel each reads. One description for GPTQ (rows against input patch entries), bias
//! correction (the mean output shift per row) and cross-layer equalization (output and input
//! channels).

/// The layout of a Conv, Gemm or MatMul weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Conv `[M, C/g, k...]` in `groups`: row `o` is contiguous, of `C/g · taps` entries,
    /// starting at patch entry `(o / (M/g)) · C/g · taps`.
    Conv { groups: usize },
    /// `[N, K]` (Gemm with `transB`): row `n` contiguous.
    Transposed,
    /// `[K, N]` (Gemm, MatMul): row `n` is column `n`.
    Matrix,
}

impl Rows {
    /// (output channels, input channels) of a weight of `dims`, `None` when `dims` cannot be
    /// such a weight (a Conv of rank < 3 or whose groups do not divide it, a matrix not 2-D).
    pub fn channels(self, dims: &[usize]) -> Option<(usize, usize)> {
        match (self, dims) {
            (Rows::Conv { groups }, [m, cpg, _, ..]) => {
                (groups > 0 && m % groups == 0).then_some((*m, cpg * groups))
            }
            (Rows::Transposed, [n, k]) => Some((*n, *k)),
            (Rows::Matrix, [k, n]) => Some((*n, *k)),
            _ => None,
        }
    }

    /// The entries of the input patch all rows together read (each group's for a Conv).
    pub fn entries(self, dims: &[usize]) -> Option<usize> {
        let (_, per_row) = self.shape(dims);
        self.channels(dims)?;
        Some(match self {
            Rows::Conv { groups } => per_row * groups,
            _ => per_row,
        })
    }

    /// (rows, entries per row) of a weight of `dims`.
    pub fn shape(self, dims: &[usize]) -> (usize, usize) {
        match self {
            Rows::Conv { .. } => (dims[0], dims[1..].iter().product()),
            Rows::Transposed => (dims[0], dims[1]),
            Rows::Matrix => (dims[1], dims[0]),
        }
    }

    /// The flat index of entry `j` of row `o`.
    pub fn at(self, dims: &[usize], o: usize, j: usize) -> usize {
        match self {
            Rows::Conv { .. } | Rows::Transposed => o * self.shape(dims).1 + j,
            Rows::Matrix => j * dims[1] + o,
        }
    }

    /// The first patch entry row `o` reads.
    pub fn first_entry(self, dims: &[usize], o: usize) -> usize {
        match self {
            Rows::Conv { groups } => {
                let per_group = dims[0] / groups.max(1);
                (o / per_group.max(1)) * self.shape(dims).1
            }
            _ => 0,
        }
    }
}
