//! The `waggle` command.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "waggle",
    version,
    about = "Fresh canary metrics for Flagger, straight from Istio sidecars"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the backend: ingest, in-memory store, Prometheus API.
    Serve(waggle::config::ServeArgs),
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = match args.resolve() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("waggle serve: invalid configuration: {e}");
                    return std::process::ExitCode::from(64);
                }
            };
            init_logging(&settings.log_level, settings.log_json);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("waggle serve: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(waggle::serve::run(settings, None, waggle::serve::signal())) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("waggle serve: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
