//! `load`: drives one scenario against one running server and prints (and
//! optionally writes) what it measured. `load check` runs the join/message
//! check instead.

use clap::{Parser, Subcommand};
use ringcast_bench::scenario::{self, Common, Scenario};

#[derive(Debug, Parser)]
#[command(about = "Socket.IO load generator for ringcast and its peers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario.
    Run {
        // Boxed: the options are far bigger than the other command's.
        #[command(flatten)]
        common: Box<Common>,
        #[command(subcommand)]
        scenario: Scenario,
    },
    /// Verify a server implements join / message / environment broadcast.
    Check {
        #[arg(long, default_value = "http://127.0.0.1:4000/realtime/")]
        url: String,
        #[arg(long, default_value = r#"{"envId":"default","echoMessages":false}"#)]
        auth: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run { common, scenario } => {
            let report = scenario::run(&scenario, &common)?;
            if let Some(path) = &common.json {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
            }
            if !common.quiet {
                println!("{}", report.markdown());
            }
            Ok(())
        }
        Command::Check { url, auth } => {
            // The check speaks plain HTTP and WebSocket only.
            let target = scenario::parse_url(&url, None)?;
            ringcast_bench::check::run(&target, &auth)?;
            println!("check passed: {url}");
            Ok(())
        }
    }
}
