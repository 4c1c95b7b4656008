//! Ridge regression of a run's outcome on its features, fitted with smartcore.
//!
//! smartcore does the fit (standardised columns, Cholesky solve); the result is kept as plain coefficients so a
//! prediction is a dot product (no allocation, no smartcore types on the hot path, and serde without smartcore's
//! serde feature). Columns that are constant in the training data (e.g. the same requested limit on every run)
//! carry no information and would make the standardisation divide by zero, so they are dropped before the fit.
//!
//! Limits: linear in the raw features; the caller guards against nonsense extrapolation (see `model.rs`).

use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::ridge_regression::{RidgeRegression, RidgeRegressionParameters};

/// Number of features (see [`crate::model::features`]).
pub const N_FEATURES: usize = 6;

/// Errors of the regression fit.
#[derive(Debug, thiserror::Error)]
pub enum RegressionError {
    /// Fewer usable rows than columns + 2.
    #[error("regression needs more runs than features: {rows} rows, {cols} informative columns")]
    TooFewRows {
        /// Rows.
        rows: usize,
        /// Informative columns.
        cols: usize,
    },
    /// No feature varies: a regression cannot beat the baseline.
    #[error("no feature varies across the training runs")]
    NoInformativeColumn,
    /// smartcore failed.
    #[error("smartcore ridge fit")]
    Fit(#[source] smartcore::error::Failed),
    /// A non-finite coefficient came out of the fit.
    #[error("ridge fit produced a non-finite coefficient")]
    NonFinite,
}

/// A fitted linear model over a subset of the feature columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// Indices of the feature columns used.
    pub columns: Vec<usize>,
    /// One coefficient per used column.
    pub coef: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
}

impl LinearModel {
    /// Fits `y ~ x` with ridge penalty `alpha` (in standardised units).
    pub fn fit(x: &[[f64; N_FEATURES]], y: &[f64], alpha: f64) -> Result<Self, RegressionError> {
        Self::fit_on(x, y, alpha, &[0, 1, 2, 3, 4, 5])
    }

    /// [`LinearModel::fit`] on the feature columns `allowed` only (those that vary).
    pub fn fit_on(
        x: &[[f64; N_FEATURES]],
        y: &[f64],
        alpha: f64,
        allowed: &[usize],
    ) -> Result<Self, RegressionError> {
        let n = x.len().min(y.len());
        let columns: Vec<usize> = (0..N_FEATURES)
            .filter(|c| allowed.contains(c))
            .filter(|&c| {
                let mean = x[..n].iter().map(|r| r[c]).sum::<f64>() / n.max(1) as f64;
                let var =
                    x[..n].iter().map(|r| (r[c] - mean).powi(2)).sum::<f64>() / n.max(1) as f64;
                var.sqrt() > 1e-9 * (mean.abs() + 1.0)
            })
            .collect();
        if columns.is_empty() {
            return Err(RegressionError::NoInformativeColumn);
        }
        if n < columns.len() + 2 {
            return Err(RegressionError::TooFewRows {
                rows: n,
                cols: columns.len(),
            });
        }
        let mut values = Vec::with_capacity(n * columns.len());
        for &c in &columns {
            values.extend(x[..n].iter().map(|r| r[c]));
        }
        let xm = DenseMatrix::new(n, columns.len(), values, true).map_err(RegressionError::Fit)?;
        let yv: Vec<f64> = y[..n].to_vec();
        let params = RidgeRegressionParameters::default()
            .with_alpha(alpha)
            .with_normalize(true);
        let fitted: RidgeRegression<f64, f64, DenseMatrix<f64>, Vec<f64>> =
            RidgeRegression::fit(&xm, &yv, params).map_err(RegressionError::Fit)?;
        let coef: Vec<f64> = (0..columns.len())
            .map(|i| *fitted.coefficients().get((i, 0)))
            .collect();
        let intercept = *fitted.intercept();
        if !intercept.is_finite() || coef.iter().any(|c| !c.is_finite()) {
            return Err(RegressionError::NonFinite);
        }
        Ok(Self {
            columns,
            coef,
            intercept,
        })
    }

    /// The model's value at `x`.
    pub fn predict(&self, x: &[f64; N_FEATURES]) -> f64 {
        self.intercept
            + self
                .columns
                .iter()
                .zip(&self.coef)
                .map(|(&c, w)| w * x[c])
                .sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_relation_and_drops_constant_columns() {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..50 {
            let a = f64::from(i);
            let b = f64::from((i * 7) % 11);
            x.push([a, 3.0, b, 0.0, 1.0, 5.0]);
            y.push(100.0 + 2.0 * a - 4.0 * b);
        }
        let m = LinearModel::fit(&x, &y, 1e-6).expect("fits");
        assert_eq!(m.columns, vec![0, 2]);
        let p = m.predict(&[10.0, 3.0, 5.0, 0.0, 1.0, 5.0]);
        assert!((p - (100.0 + 20.0 - 20.0)).abs() < 0.01, "{p}");
    }

    #[test]
    fn refuses_when_nothing_varies_or_too_few_rows() {
        let x = vec![[1.0; N_FEATURES]; 10];
        let y = vec![1.0; 10];
        assert!(matches!(
            LinearModel::fit(&x, &y, 1.0),
            Err(RegressionError::NoInformativeColumn)
        ));
        let x = vec![
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            [2.0, 1.0, 0.0, 4.0, 5.0, 7.0],
        ];
        assert!(matches!(
            LinearModel::fit(&x, &[1.0, 2.0], 1.0),
            Err(RegressionError::TooFewRows { .. })
        ));
    }
}
