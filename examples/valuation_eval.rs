//! Measures the valuation model on real sales and prints a markdown report.
//!
//! ```text
//! cargo run --release --example valuation_eval [path/to/sales.csv]
//! ```
//!
//! Defaults to the shipped Windsor 1987 data. Every figure is measured in this run: 10-fold
//! cross-validation (seed fixed before any result was seen) of the OLS baseline, the robust
//! hedonic formula alone and the full model, all on the same folds; interval coverage at 80%
//! and 90%; and, because one fold split is one draw, how often the model beats the baseline
//! over further seeds.

use roomkeeper::services::valuation::{
    evaluate_with, parse_sales_csv, Evaluation, FitConfig, Model, Scores,
};
use std::process::ExitCode;
use std::time::Instant;

/// Fold seed of the headline table (the data's year; also used by the unit tests).
const SEED: u64 = 1987;
/// Folds of the cross-validation.
const FOLDS: usize = 10;
/// Further fold seeds for the robustness check.
const EXTRA_SEEDS: std::ops::RangeInclusive<u64> = 1..=20;

fn main() -> ExitCode {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/windsor-housing-1987.csv").to_string()
    });
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (sales, errors) = parse_sales_csv(&text);
    for e in &errors {
        eprintln!("refused {e} ({})", e.code);
    }
    match report(&path, &sales, errors.len()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evaluation failed: {e} ({})", e.code());
            ExitCode::FAILURE
        }
    }
}

fn report(
    path: &str,
    sales: &[roomkeeper::services::valuation::Sale],
    refused: usize,
) -> Result<(), roomkeeper::services::valuation::FitError> {
    println!("# Valuation model: measured\n");
    println!(
        "Data: `{path}` — {} sales imported, {refused} rows refused.\n",
        sales.len()
    );

    let mut timings = Vec::new();
    let mut model = None;
    for _ in 0..5 {
        let start = Instant::now();
        model = Some(Model::fit(sales)?);
        timings.push(start.elapsed().as_secs_f64() * 1e3);
    }
    timings.sort_by(f64::total_cmp);
    let model = model.expect("fitted five times");
    let d = model.diagnostics();
    println!(
        "Fit on all {} sales: {:.1} ms (median of 5). Chosen: ridge λ = {}, comparables kernel \
         discrete = {}, bandwidth = {:.3}, blend = {}; version `{}`.\n",
        d.sales,
        timings[2],
        d.ridge_lambda,
        d.kernel.discrete,
        d.kernel.bandwidth,
        d.kernel.blend,
        model.version()
    );

    let full = evaluate_with(sales, FOLDS, SEED, &FitConfig::default())?;
    let hedonic_only = evaluate_with(
        sales,
        FOLDS,
        SEED,
        &FitConfig {
            comparables: false,
            ..FitConfig::default()
        },
    )?;
    let at_90 = evaluate_with(
        sales,
        FOLDS,
        SEED,
        &FitConfig {
            level: 0.9,
            ..FitConfig::default()
        },
    )?;

    println!("OLS baseline (log price on log lot size and the other facts), in-sample R² of log price: **{:.3}**\n", full.baseline_ols_r2_in_sample);
    println!("{FOLDS}-fold cross-validation, seed {SEED}, same folds for every row:\n");
    println!("| method | CV MdAPE | CV MAPE | CV RMSE (log) | CV R² (log) | coverage of 80% interval | mean 80% width (log) | coverage of 90% interval |");
    println!("|---|---|---|---|---|---|---|---|");
    row(
        "OLS baseline",
        &full.baseline_ols,
        at_90.baseline_ols.coverage,
    );
    row("robust ridge hedonic only", &hedonic_only.model, f64::NAN);
    row(
        "**chosen model** (robust ridge + comparables)",
        &full.model,
        at_90.model.coverage,
    );
    println!(
        "\nHeld-out sales outside their fold model's fitted range (the API would refuse them; scored anyway): {}.\n",
        full.outside_fitted_range
    );

    let mut wins = 0;
    let mut differences = Vec::new();
    for seed in EXTRA_SEEDS {
        let e: Evaluation = evaluate_with(sales, FOLDS, seed, &FitConfig::default())?;
        wins += usize::from(e.model.mdape < e.baseline_ols.mdape);
        differences.push(e.model.mdape - e.baseline_ols.mdape);
    }
    differences.sort_by(f64::total_cmp);
    let mean = differences.iter().sum::<f64>() / differences.len() as f64;
    println!(
        "Robustness over {} further fold seeds ({}..={}): the model's CV MdAPE is below the baseline's in {wins}/{}; \
         difference (model − baseline) mean {:+.2} pp, range {:+.2} to {:+.2} pp.",
        differences.len(),
        EXTRA_SEEDS.start(),
        EXTRA_SEEDS.end(),
        differences.len(),
        mean * 100.0,
        differences[0] * 100.0,
        differences[differences.len() - 1] * 100.0
    );
    Ok(())
}

fn row(name: &str, s: &Scores, coverage_90: f64) {
    let at_90 = if coverage_90.is_nan() {
        "—".to_string()
    } else {
        format!("{:.1}%", coverage_90 * 100.0)
    };
    println!(
        "| {name} | {:.2}% | {:.2}% | {:.4} | {:.3} | {:.1}% | {:.3} | {at_90} |",
        s.mdape * 100.0,
        s.mape * 100.0,
        s.rmse_log,
        s.r2_log,
        s.coverage * 100.0,
        s.mean_width_log
    );
}
