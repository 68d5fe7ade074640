//! `procwatch-operator`: wires the caches, the HTTPS servers (webhook, report endpoint), the
//! metrics server, leader election and, whenever this replica leads, the controller. Each step is a function
//! of [`procwatch_operator::startup`].

use std::io::IsTerminal;

use clap::Parser;
use procwatch_operator::cli::{Cli, LogFormat};
use procwatch_operator::errors::Chain;
use procwatch_operator::startup::{
    ControllerSetup, Shared, Shutdown, StartError, admission_routes, connect, injection_settings,
    join_election, lead, load_certificate, report_routes, serve_admission_and_reports,
    serve_metrics, start_caches, stop,
};
use tracing_subscriber::EnvFilter;

/// mimalloc, not glibc's malloc: see BENCHMARKS.md, "The operator under load".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if let Err(error) = run(cli).await {
        tracing::error!(error = %Chain(&error), "procwatch-operator stopped");
        std::process::exit(1);
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in collected logs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> Result<(), StartError> {
    // One crypto provider for kube's client and our server; an error means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = Shutdown::on_signals();

    let api = connect().await?;
    let serving = load_certificate(&api.client, &cli).await?;
    let settings = injection_settings(&cli, api.native_sidecars)?;
    let shared = Shared::default();
    let caches = start_caches(&api.client, &shared);
    let mut election = join_election(&api.client, &cli);

    let webhook = admission_routes(settings, &serving, &shared, &caches);
    let reports = report_routes(&cli, &api.client, &shared, &caches, &election.leadership);
    let [admission, reporting] = serve_admission_and_reports(
        &cli,
        serving.config,
        webhook,
        reports,
        &shutdown,
        &shared.readiness,
    )
    .await?;
    let metrics = serve_metrics(cli.metrics_addr, &shared, &election.leadership, &shutdown).await?;

    let controller = ControllerSetup {
        client: api.client,
        pods: caches.pods,
        namespaces: caches.namespaces,
        shared,
        status_budget_bytes: cli.status_budget_bytes,
    };
    let led = lead(&mut election, &shutdown, controller).await;
    stop(&shutdown, election, [admission, reporting, metrics]).await;
    led
}
