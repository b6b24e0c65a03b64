//! The command line: its flags ([`args`]), how they become library settings (`settings`), what
//! commands write besides their model (`output`), and one module per command family.

pub mod args;
mod measure;
mod models;
mod output;
mod quantize;
mod settings;

use onnx_quant::error::Error;

use args::{Cli, Command};

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Quantize(args) => quantize::run_quantize(args),
        Command::Calibrate(args) => quantize::run_calibrate(args),
        Command::MergeStats(args) => quantize::run_merge_stats(args),
        Command::Run(args) => models::run_run(args),
        Command::Inspect(args) => models::run_inspect(args),
        Command::ShowConfig(args) => models::run_show_config(args),
        Command::Check(args) => models::run_check(args),
        Command::Explain(args) => models::run_explain(args, false),
        Command::InitConfig(args) => models::run_explain(args, true),
        Command::Eval(args) => measure::run_eval(args),
        Command::Sensitivity(args) => measure::run_sensitivity(args),
    }
}
