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
    Serve(Box<waggle::config::ServeArgs>),
    /// Run Flagger's canary analysis loop on a Canary and its MetricTemplates against a
    /// Prometheus-compatible backend, printing every metric's value and each decision.
    Analyze(AnalyzeArgs),
    /// The whole system on this machine: backend, the real filter, synthetic primary and
    /// canary traffic, and the analysis loop deciding live (runs the waggle-demo program).
    Demo {
        /// Passed to waggle-demo; see `waggle demo -- --help`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Canary and MetricTemplate manifests (YAML, several documents per file allowed).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<std::path::PathBuf>,
    /// Which Canary, when the files hold several.
    #[arg(long)]
    canary: Option<String>,
    /// Flagger's -metrics-server: where the built-in checks and inline queries go.
    #[arg(
        long,
        env = "WAGGLE_METRICS_SERVER",
        default_value = "http://127.0.0.1:9090"
    )]
    metrics_server: String,
    /// Send every prometheus MetricTemplate's query to --metrics-server, not its own address.
    #[arg(long)]
    templates_use_metrics_server: bool,
    /// Flagger's -mesh-provider: picks the observer whose built-in queries request-success-rate
    /// and request-duration run (istio, kuma); a Canary's spec.provider wins.
    #[arg(long, env = "WAGGLE_MESH_PROVIDER", default_value = "istio")]
    mesh_provider: String,
    /// Run the checks once, print values and queries, and exit (0 when all pass).
    #[arg(long, conflicts_with = "check")]
    once: bool,
    /// Check the Canary, its MetricTemplates and webhooks without running the loop: templates
    /// exist, queries render, parse and run once, windows and thresholds make sense, webhook
    /// addresses accept TCP connections (never POSTed). Exits 1 on any error.
    #[arg(long)]
    check: bool,
    /// Loop cadence instead of analysis.interval (query windows are unchanged), e.g. 5s.
    #[arg(long)]
    interval: Option<String>,
    /// Call no webhook: the loop runs as if the Canary had none.
    #[arg(long)]
    skip_webhooks: bool,
    /// NAME=URL: call the webhook NAME at URL instead (repeatable), e.g. a port-forwarded
    /// loadtester: --webhook-override load-test=http://127.0.0.1:8080/
    #[arg(long = "webhook-override", value_name = "NAME=URL")]
    webhook_overrides: Vec<String>,
    /// Flagger's -event-webhook: receives every event unless the Canary has an event webhook.
    #[arg(long, env = "EVENT_WEBHOOK_URL")]
    event_webhook: Option<String>,
}

fn analyze(a: AnalyzeArgs) -> Result<std::process::ExitCode, String> {
    use waggle::analyze::{Analysis, Manifests, Options, Outcome};
    let mut m = Manifests::default();
    for f in &a.files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        m.add_yaml(&f.display().to_string(), &text)
            .map_err(|e| e.to_string())?;
    }
    let interval = a
        .interval
        .as_deref()
        .map(waggle::config::parse_duration)
        .transpose()
        .map_err(|e| format!("--interval: {e}"))?;
    let webhook_overrides = a
        .webhook_overrides
        .iter()
        .map(|o| match o.split_once('=') {
            Some((name, url)) if !name.is_empty() && !url.is_empty() => {
                Ok((name.to_owned(), url.to_owned()))
            }
            _ => Err(format!("--webhook-override {o:?}: expected NAME=URL")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opts = Options {
        metrics_server: a.metrics_server.clone(),
        templates_use_metrics_server: a.templates_use_metrics_server,
        interval,
        mesh_provider: a.mesh_provider.clone(),
        skip_webhooks: a.skip_webhooks,
        webhook_overrides,
        event_webhook: a.event_webhook.clone(),
    };
    if a.check {
        let report = waggle::analyze::doctor::doctor(&m, a.canary.as_deref(), &opts);
        print!("{}", report.render());
        return Ok(
            if report.count(waggle::analyze::doctor::Level::Error) == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            },
        );
    }
    let mut analysis = Analysis::new(&m, a.canary.as_deref(), &opts).map_err(|e| e.to_string())?;
    for note in analysis.notes() {
        println!("{note}");
    }
    if a.once {
        if analysis.has_webhooks() {
            println!("--once runs the metric checks only: no webhook is called");
        }
        for (name, q) in analysis.queries() {
            println!(
                "{name}: {}",
                q.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
        let checks = analysis.check();
        let it = waggle::analyze::Iteration {
            number: 1,
            weight: analysis.weight(),
            decision: if checks.iter().any(|c| c.failure.is_some()) {
                waggle::analyze::Decision::Halt {
                    failed: 1,
                    threshold: 1,
                }
            } else {
                waggle::analyze::Decision::Advance { from: 0, to: 0 }
            },
            messages: checks.iter().filter_map(|c| c.failure.clone()).collect(),
            checks,
            hooks: Vec::new(),
        };
        println!("{}", it.line());
        let ok = it.checks.iter().all(|c| c.failure.is_none());
        return Ok(if ok {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::from(1)
        });
    }
    println!(
        "analysing against {} every {:?}",
        a.metrics_server,
        analysis.interval()
    );
    loop {
        let it = analysis.step();
        println!("{}", it.line());
        match analysis.outcome() {
            Some(Outcome::Promoted) => return Ok(std::process::ExitCode::SUCCESS),
            Some(Outcome::RolledBack) => return Ok(std::process::ExitCode::from(1)),
            None => std::thread::sleep(analysis.interval()),
        }
    }
}

/// `waggle demo` runs `waggle-demo`, built beside this binary from the test harness (it embeds
/// the wasmtime proxy-wasm host, which the server binary does not need).
fn demo(args: &[String]) -> std::process::ExitCode {
    let exe = std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name("waggle-demo"));
    let Some(path) = exe.filter(|p| p.is_file()) else {
        eprintln!("waggle demo: waggle-demo is not built beside this binary; run scripts/demo (or cargo build --release -p waggle-tests --bin waggle-demo)");
        return std::process::ExitCode::from(2);
    };
    match std::process::Command::new(&path).args(args).status() {
        Ok(s) if s.success() => std::process::ExitCode::SUCCESS,
        Ok(s) => {
            std::process::ExitCode::from(s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("waggle demo: cannot run {}: {e}", path.display());
            std::process::ExitCode::from(2)
        }
    }
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a pod's log (or a file) gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Flagger's flags are Go's, single-dashed (`-mesh-provider kuma`): accept them as written.
fn go_flags(args: impl Iterator<Item = String>) -> Vec<String> {
    const GO: [&str; 3] = ["-mesh-provider", "-metrics-server", "-event-webhook"];
    args.map(|a| {
        let name = a.split('=').next().unwrap_or_default();
        if GO.contains(&name) {
            format!("-{a}")
        } else {
            a
        }
    })
    .collect()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(go_flags(std::env::args()));
    match cli.command {
        Command::Analyze(a) => match analyze(a) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("waggle analyze: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Demo { args } => demo(&args),
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
