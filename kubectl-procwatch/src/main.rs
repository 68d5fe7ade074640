//! `kubectl-procwatch`: the kubectl plugin. Reads ProcessWatches (and, for the notes, the pods
//! their selectors match) with kube's client, renders them with the pure library, prints.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Selector;
use kube::{Client, Config, ResourceExt};
use kubectl_procwatch::create::{self, Kind, Workload};
use kubectl_procwatch::table::Width;
use kubectl_procwatch::view::{Filter, Input, Watch};
use kubectl_procwatch::{files, message, ps, sockets, top};
use procwatch_crds::{Interval, ProcessWatch};

/// What runs in the pods a ProcessWatch selects, from its status: ps, sockets, files, top.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl procwatch",
    bin_name = "kubectl procwatch",
    version,
    disable_version_flag = true
)]
struct Cli {
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One row per process, like `ps`: pod, container, pid, user, CPU, memory, command line.
    Ps {
        #[command(flatten)]
        target: Target,
        /// Each pod's processes as a forest, children under their parent, like `ps axf`.
        #[arg(long)]
        tree: bool,
        /// `wide` adds the WATCH column and never cuts lines; `json` and `yaml` print the rows.
        #[arg(short = 'o', long)]
        output: Option<PsOutput>,
    },
    /// Listening TCP/UDP and unix sockets, with the path another container connects to.
    Sockets {
        #[command(flatten)]
        target: Target,
    },
    /// Requested file fingerprints, marking pods whose sha256 differs from the majority.
    Files {
        #[command(flatten)]
        target: Target,
    },
    /// Pods by CPU, then memory, as the agents measured them.
    Top {
        #[command(flatten)]
        target: Target,
        /// One line per container instead of per pod.
        #[arg(long)]
        containers: bool,
    },
    /// Write a ProcessWatch over the pods of a workload.
    Create {
        /// Name of the ProcessWatch.
        name: String,
        /// The workload: deployment/NAME, statefulset/NAME, daemonset/NAME or job/NAME.
        #[arg(long = "for", value_name = "KIND/NAME")]
        workload: Workload,
        /// A file to fingerprint in each container (absolute path; repeatable).
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<String>,
        /// Sampling period, 1s..1h.
        #[arg(long, default_value = "15s")]
        interval: Interval,
        /// Give the agent CAP_SYS_PTRACE (to read processes of other users).
        #[arg(long)]
        ptrace: bool,
        /// `client`: print or show the object without creating it.
        #[arg(long, value_name = "STRATEGY", default_value = "none", default_missing_value = "client", num_args = 0..=1, require_equals = true)]
        dry_run: DryRun,
        /// Print the object as yaml or json.
        #[arg(short = 'o', long)]
        output: Option<ObjectOutput>,
    },
    /// The plugin's version, and the operator's from its Deployment.
    Version,
}

#[derive(Args, Debug)]
struct Target {
    /// A ProcessWatch; without it, every watch of the namespace.
    watch: Option<String>,
    /// Only this pod.
    #[arg(long)]
    pod: Option<String>,
    /// Only this container.
    #[arg(short = 'c', long)]
    container: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PsOutput {
    Wide,
    Json,
    Yaml,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ObjectOutput {
    Json,
    Yaml,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DryRun {
    None,
    Client,
}

/// Field manager of what `create` writes.
const FIELD_MANAGER: &str = "kubectl-procwatch";
/// The operator's Deployment carries this label (config/manager).
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=procwatch-operator";
/// Where config/ installs it.
const OPERATOR_NAMESPACE: &str = "procwatch-system";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // kubectl exits 1 on bad flags too; help goes to stdout and exits 0.
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", message::kubectl_error(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Version = cli.command {
        print(&format!(
            "kubectl-procwatch: {}\n",
            env!("CARGO_PKG_VERSION")
        ))?;
    }
    let (client, default_namespace) = connect(&cli).await?;
    let namespace = cli.namespace.clone().unwrap_or(default_namespace);
    let all = cli.all_namespaces;
    let watches = match cli.command.target() {
        Some(target) => read(&client, all, &namespace, target).await?,
        None => Vec::new(),
    };
    let input = Input {
        watches: &watches,
        now: Timestamp::now(),
        all_namespaces: all,
    };
    match cli.command {
        Command::Ps {
            target,
            tree,
            output,
        } => {
            let options = ps::Options {
                filter: filter(&target),
                tree,
                wide: output == Some(PsOutput::Wide),
            };
            match output {
                Some(PsOutput::Json) => {
                    print(&(serde_json::to_string_pretty(&ps::rows(&input, &options))? + "\n"))
                }
                Some(PsOutput::Yaml) => print(&serde_yaml::to_string(&ps::rows(&input, &options))?),
                _ => print(&ps::render(&input, &options, terminal_width())),
            }
        }
        Command::Sockets { target } => {
            print(&sockets::render(&input, &filter(&target), terminal_width()))
        }
        Command::Files { target } => {
            print(&files::render(&input, &filter(&target), terminal_width()))
        }
        Command::Top { target, containers } => print(&top::render(
            &input,
            &filter(&target),
            containers,
            terminal_width(),
        )),
        Command::Create {
            name,
            workload,
            files,
            interval,
            ptrace,
            dry_run,
            output,
        } => {
            let settings = create::Settings {
                files,
                interval,
                ptrace,
            };
            create(
                &client, &namespace, &name, &workload, &settings, dry_run, output,
            )
            .await
        }
        Command::Version => version(&client).await,
    }
}

impl Command {
    /// The watches a reading command covers.
    fn target(&self) -> Option<&Target> {
        match self {
            Command::Ps { target, .. }
            | Command::Sockets { target }
            | Command::Files { target }
            | Command::Top { target, .. } => Some(target),
            Command::Create { .. } | Command::Version => None,
        }
    }
}

/// The client and the kubeconfig context's namespace, as kubectl picks them.
async fn connect(cli: &Cli) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        cluster: None,
        user: None,
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => match Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            // Inside a pod, as kubectl does: the service account, when no kubeconfig exists.
            Err(err) if cli.context.is_none() => Config::incluster().map_err(|_| err)?,
            Err(err) => return Err(err.into()),
        },
    };
    // One rustls crypto provider (ring), as the operator; an error means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let namespace = config.default_namespace.clone();
    Ok((Client::try_from(config)?, namespace))
}

/// The watch named in `target`, or every watch of the namespace (or cluster, with `-A`), each
/// with the names of the pods its selector matches (for the notes about missing pods).
async fn read(
    client: &Client,
    all_namespaces: bool,
    namespace: &str,
    target: &Target,
) -> anyhow::Result<Vec<Watch>> {
    let watches: Vec<ProcessWatch> = match (&target.watch, all_namespaces) {
        (Some(_), true) => bail!("a resource cannot be retrieved by name across all namespaces"),
        (Some(name), false) => vec![Api::namespaced(client.clone(), namespace).get(name).await?],
        (None, all) => {
            let api = if all {
                Api::all(client.clone())
            } else {
                Api::namespaced(client.clone(), namespace)
            };
            let list = api.list(&ListParams::default()).await?.items;
            // kubectl's words and exit code for an empty list.
            if list.is_empty() && all {
                eprintln!("No resources found");
            } else if list.is_empty() {
                eprintln!("No resources found in {namespace} namespace.");
            }
            list
        }
    };
    let mut out = Vec::with_capacity(watches.len());
    for watch in &watches {
        let selected = selected_pods(client, watch).await;
        out.push(Watch::new(watch, selected));
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// Names of the live pods the watch's selector matches; `None` when they cannot be listed (an
/// invalid selector, no right to list pods): the notes then give counts instead of names.
async fn selected_pods(client: &Client, watch: &ProcessWatch) -> Option<Vec<String>> {
    let selector = Selector::try_from(watch.spec.selector.clone()).ok()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &watch.namespace()?);
    let list = pods
        .list(&ListParams::default().labels_from(&selector))
        .await
        .ok()?;
    Some(
        list.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .map(|p| p.name_any())
            .collect(),
    )
}

fn filter(target: &Target) -> Filter {
    Filter {
        pod: target.pod.clone(),
        container: target.container.clone(),
    }
}

/// `ps`'s rule: to a terminal, lines are cut to its width (`COLUMNS` first); to a pipe, never.
fn terminal_width() -> Width {
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return Width::Unlimited;
    }
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .or_else(|| terminal_size::terminal_size_of(&stdout).map(|(w, _)| usize::from(w.0)));
    Width::Cut(columns.unwrap_or(80))
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the output quietly, as for kubectl.
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn create(
    client: &Client,
    namespace: &str,
    name: &str,
    workload: &Workload,
    settings: &create::Settings,
    dry_run: DryRun,
    output: Option<ObjectOutput>,
) -> anyhow::Result<()> {
    for file in &settings.files {
        if !file.starts_with('/') {
            bail!("--file {file:?}: the path must be absolute (a path inside each container)");
        }
    }
    let selector = workload_selector(client, namespace, workload).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let existing = pods
        .list(&ListParams::default().labels_from(&Selector::try_from(selector.clone())?))
        .await?
        .items;
    let mut watch = create::watch(name, namespace, selector, settings);
    let suffix = if dry_run == DryRun::Client {
        " (dry run)"
    } else {
        let api: Api<ProcessWatch> = Api::namespaced(client.clone(), namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        watch = api.create(&params, &watch).await?;
        ""
    };
    match output {
        Some(ObjectOutput::Yaml) => print(&serde_yaml::to_string(&watch)?)?,
        Some(ObjectOutput::Json) => print(&(serde_json::to_string_pretty(&watch)? + "\n"))?,
        None => print(&format!(
            "processwatch.procwatch.dev/{name} created{suffix}\n"
        ))?,
    }
    // On stderr: stdout may be piped into `kubectl apply -f -`.
    eprintln!("{}", create::restart_advice(workload, namespace, &existing));
    Ok(())
}

async fn workload_selector(
    client: &Client,
    namespace: &str,
    workload: &Workload,
) -> anyhow::Result<LabelSelector> {
    let name = workload.name.as_str();
    let selector = match workload.kind {
        Kind::Deployment => {
            let d: Deployment = Api::namespaced(client.clone(), namespace).get(name).await?;
            d.spec.map(|s| s.selector)
        }
        Kind::StatefulSet => {
            let s: StatefulSet = Api::namespaced(client.clone(), namespace).get(name).await?;
            s.spec.map(|s| s.selector)
        }
        Kind::DaemonSet => {
            let d: DaemonSet = Api::namespaced(client.clone(), namespace).get(name).await?;
            d.spec.map(|s| s.selector)
        }
        Kind::Job => {
            let j: Job = Api::namespaced(client.clone(), namespace).get(name).await?;
            j.spec.and_then(|s| s.selector)
        }
    };
    selector
        .filter(|s| s.match_labels.is_some() || s.match_expressions.is_some())
        .with_context(|| format!("{workload} has no pod selector"))
}

async fn version(client: &Client) -> anyhow::Result<()> {
    let params = ListParams::default().labels(OPERATOR_SELECTOR);
    let found = match Api::<Deployment>::all(client.clone()).list(&params).await {
        Ok(list) => list.items,
        // Without the right to list Deployments everywhere: the operator's default namespace.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            Api::<Deployment>::namespaced(client.clone(), OPERATOR_NAMESPACE)
                .list(&params)
                .await?
                .items
        }
        Err(err) => return Err(err.into()),
    };
    if found.is_empty() {
        bail!("no operator Deployment (label {OPERATOR_SELECTOR}) in the cluster");
    }
    for d in &found {
        let image = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let version = d
            .labels()
            .get("app.kubernetes.io/version")
            .cloned()
            .or_else(|| {
                // The tag, not a registry's port: after the last `/`.
                let last = image.rsplit('/').next()?;
                last.split_once(':').map(|(_, tag)| tag.to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        print(&format!(
            "operator: {version} (deployment {}/{}, image {image})\n",
            d.namespace().unwrap_or_default(),
            d.name_any()
        ))?;
    }
    Ok(())
}
