//! `suite`: the whole benchmark (see `ringcast_bench::suite`); `bench/run.sh` wraps it.

use clap::Parser;
use ringcast_bench::suite::{self, SuiteOptions};

#[derive(Debug, Parser)]
#[command(about = "ringcast benchmark suite: shard counts × peers × scenarios, tables and charts")]
struct Cli {
    #[command(flatten)]
    options: SuiteOptions,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    suite::run(&cli.options)?;
    Ok(())
}
