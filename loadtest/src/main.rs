//! `loadtest`: agentry's load generator.
//!
//! `loadtest chat` seeds a tenant through the HTTP API (or starts its own
//! agentry on a fresh database first), drives widget chat turns over
//! persistent connections in a closed loop, measures throughput, latency and
//! the cost of a turn in PostgreSQL transactions and CPU, compares it with a
//! bare axum handler, and writes a JSON report with a markdown summary.
//!
//! Exit codes: 0 done, 1 failed (or no turn succeeded), 2 usage error.

mod baseline;
mod chat;
mod cli;
mod client;
mod cluster;
mod corpus;
mod driver;
mod pg;
mod procstat;
mod prom;
mod report;
mod seed;
mod server;
mod sse;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::server::Resources;

fn main() -> ExitCode {
    // Clap prints usage errors and exits with 2 (0 for --help and --version).
    let cli = Cli::parse();
    match cli.command {
        Command::Chat(args) => execute(
            "chat",
            args.validate(),
            args.report.as_deref(),
            async |resources| {
                let report = chat::run(&args, resources).await?;
                let errors = report.errors.get("total").copied().unwrap_or(0);
                let problems = if report.turns > 0 {
                    Vec::new()
                } else {
                    vec!["no turn succeeded in the measured window".to_owned()]
                };
                Ok(Finished {
                    report,
                    problems,
                    keep_logs: errors > 0,
                })
            },
        ),
        Command::Cluster(args) => execute(
            "cluster",
            args.validate(),
            args.report.as_deref(),
            async |resources| {
                let outcome = cluster::run(&args, resources).await?;
                Ok(Finished {
                    keep_logs: !outcome.problems.is_empty(),
                    report: outcome.report,
                    problems: outcome.problems,
                })
            },
        ),
    }
}

/// What a scenario hands back: its report, what it failed to show (exit
/// code 1 unless empty), and whether to keep the servers' logs.
struct Finished {
    report: report::Report,
    problems: Vec<String>,
    keep_logs: bool,
}

/// Runs a scenario: usage errors exit 2; the run stops on Ctrl-C or
/// SIGTERM; whatever it started is released however it ended; the report
/// is written and printed.
fn execute(
    command: &str,
    validated: Result<(), String>,
    report_path: Option<&std::path::Path>,
    run: impl AsyncFnOnce(&Resources) -> anyhow::Result<Finished>,
) -> ExitCode {
    if let Err(message) = validated {
        eprintln!("error: {message}\n\nFor more information, try 'loadtest {command} --help'.");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let resources = Resources::default();
        let outcome = tokio::select! {
            outcome = run(&resources) => outcome,
            signal = shutdown_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
        };
        let keep_logs = outcome.as_ref().map_or(true, |finished| finished.keep_logs);
        eprintln!("loadtest: cleaning up");
        for problem in resources.release(keep_logs).await {
            eprintln!("warning: {problem}");
        }
        let finished = match outcome {
            Ok(finished) => finished,
            Err(error) => {
                eprintln!("error: {error:#}");
                return 1;
            }
        };
        let summary = finished.report.markdown();
        if let Some(path) = report_path {
            match finished.report.write(path) {
                Ok(md) => eprintln!("loadtest: wrote {} and {}", path.display(), md.display()),
                Err(error) => {
                    eprintln!("error: {error:#}");
                    println!("{summary}");
                    return 1;
                }
            }
        }
        println!("{summary}");
        for problem in &finished.problems {
            eprintln!("error: {problem}");
        }
        u8::from(!finished.problems.is_empty())
    });
    // Connection tasks abandoned on an error or interrupt must not hold the exit.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// Resolves on Ctrl-C or SIGTERM with the signal's name.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
                "SIGTERM"
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        name = ctrl_c => name,
        name = terminate => name,
    }
}
