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
    let args = match cli.command {
        Command::Chat(args) => args,
        Command::Cluster(args) => return cluster_main(&args),
    };
    if let Err(message) = args.validate() {
        eprintln!("error: {message}\n\nFor more information, try 'loadtest chat --help'.");
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
            outcome = chat::run(&args, &resources) => outcome,
            signal = shutdown_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
        };
        let (code, keep_log) = match &outcome {
            Ok(report) => {
                let errors = report.errors.get("total").copied().unwrap_or(0);
                (if report.turns > 0 { 0 } else { 1 }, errors > 0)
            }
            Err(_) => (1, true),
        };
        if resources.log_path().is_some() {
            eprintln!("loadtest: cleaning up");
        }
        for problem in resources.release(keep_log).await {
            eprintln!("warning: {problem}");
        }
        match outcome {
            Ok(report) => {
                let summary = report.markdown();
                if let Some(path) = &args.report {
                    match report.write(path) {
                        Ok(md) => {
                            eprintln!("loadtest: wrote {} and {}", path.display(), md.display())
                        }
                        Err(error) => {
                            eprintln!("error: {error:#}");
                            println!("{summary}");
                            return 1;
                        }
                    }
                }
                println!("{summary}");
                if code != 0 {
                    eprintln!("error: no turn succeeded in the measured window");
                }
                code
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                1
            }
        }
    });
    // Connection tasks abandoned on an error or interrupt must not hold the exit.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// `loadtest cluster`: exit 0 when the run proved what it should (no event
/// lost, requests answered), 1 when it did not or failed, 2 on usage errors.
fn cluster_main(args: &cli::ClusterArgs) -> ExitCode {
    if let Err(message) = args.validate() {
        eprintln!("error: {message}\n\nFor more information, try 'loadtest cluster --help'.");
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
            outcome = cluster::run(args, &resources) => outcome,
            signal = shutdown_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
        };
        let keep_logs = !matches!(&outcome, Ok(o) if o.problems.is_empty());
        eprintln!("loadtest: stopping the cluster");
        for problem in resources.release(keep_logs).await {
            eprintln!("warning: {problem}");
        }
        match outcome {
            Ok(outcome) => {
                let summary = outcome.report.markdown();
                if let Some(path) = &args.report {
                    match outcome.report.write(path) {
                        Ok(md) => {
                            eprintln!("loadtest: wrote {} and {}", path.display(), md.display())
                        }
                        Err(error) => {
                            eprintln!("error: {error:#}");
                            println!("{summary}");
                            return 1;
                        }
                    }
                }
                println!("{summary}");
                for problem in &outcome.problems {
                    eprintln!("error: {problem}");
                }
                u8::from(!outcome.problems.is_empty())
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                1
            }
        }
    });
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
