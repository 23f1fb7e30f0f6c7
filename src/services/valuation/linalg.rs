//! The little dense linear algebra the valuation needs, written out so the crate stays free of
//! a linear-algebra dependency and compiles unchanged to wasm32.
//!
//! Every system solved here is a small (a dozen unknowns) symmetric positive-definite normal
//! matrix, so a Cholesky factorisation is all that is required.

/// The Cholesky factor `L` (lower triangular, row-major) of a symmetric positive-definite
/// matrix `A = L Lᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cholesky {
    n: usize,
    l: Vec<f64>,
}

impl Cholesky {
    /// Factors the `n × n` row-major matrix `a`; `None` if it is not (numerically) positive
    /// definite or not square.
    pub(crate) fn new(mut a: Vec<f64>, n: usize) -> Option<Self> {
        if a.len() != n * n {
            return None;
        }
        for j in 0..n {
            let mut d = a[j * n + j];
            for k in 0..j {
                d -= a[j * n + k] * a[j * n + k];
            }
            if !d.is_finite() || d <= 0.0 {
                return None;
            }
            let d = d.sqrt();
            a[j * n + j] = d;
            for i in j + 1..n {
                let mut s = a[i * n + j];
                for k in 0..j {
                    s -= a[i * n + k] * a[j * n + k];
                }
                a[i * n + j] = s / d;
            }
            for k in j + 1..n {
                a[j * n + k] = 0.0;
            }
        }
        Some(Self { n, l: a })
    }

    /// Solves `A x = b` in place.
    pub(crate) fn solve(&self, b: &mut [f64]) {
        let (n, l) = (self.n, &self.l);
        debug_assert_eq!(b.len(), n);
        for i in 0..n {
            let mut s = b[i];
            for k in 0..i {
                s -= l[i * n + k] * b[k];
            }
            b[i] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = b[i];
            for k in i + 1..n {
                s -= l[k * n + i] * b[k];
            }
            b[i] = s / l[i * n + i];
        }
    }

    /// `xᵀ A⁻¹ x`: a point's leverage when `A` is a regression's normal matrix.
    pub(crate) fn inverse_quadratic(&self, x: &[f64]) -> f64 {
        let mut t = x.to_vec();
        self.solve(&mut t);
        t.iter().zip(x).map(|(a, b)| a * b).sum()
    }
}

/// Median of a slice (average of the middle two for even lengths); `NaN` when empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Arithmetic mean; `NaN` when empty.
pub(crate) fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean absolute value; `NaN` when empty.
pub(crate) fn mean_abs(values: &[f64]) -> f64 {
    values.iter().map(|v| v.abs()).sum::<f64>() / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_known_system() {
        // A = [[4,2,0],[2,5,1],[0,1,3]], x = [1,-2,3] → b = A x.
        let a = vec![4.0, 2.0, 0.0, 2.0, 5.0, 1.0, 0.0, 1.0, 3.0];
        let chol = Cholesky::new(a, 3).unwrap();
        let mut b = vec![0.0, -5.0, 7.0];
        chol.solve(&mut b);
        for (got, want) in b.iter().zip([1.0, -2.0, 3.0]) {
            assert!((got - want).abs() < 1e-12, "{b:?}");
        }
        // xᵀA⁻¹x for x = A·[1,-2,3] is [1,-2,3]·x = 0·1 + 10 + 21.
        assert!((chol.inverse_quadratic(&[0.0, -5.0, 7.0]) - 31.0).abs() < 1e-12);
    }

    #[test]
    fn refuses_matrices_that_are_not_positive_definite() {
        assert!(Cholesky::new(vec![1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(Cholesky::new(vec![1.0, 1.0, 1.0, 1.0], 2).is_none());
        assert!(Cholesky::new(vec![1.0; 3], 2).is_none());
        assert!(Cholesky::new(vec![f64::NAN], 1).is_none());
    }

    #[test]
    fn median_and_mean() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        assert_eq!(mean_abs(&[-1.0, 2.0, -6.0]), 3.0);
    }
}
