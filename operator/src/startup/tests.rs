use std::time::Duration;

use futures::stream;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::controller::triggers::PodEvents;
use crate::errors::{Chain, assert_each_cause_once};
use crate::fixtures::{findings, pod, watch};
use crate::health::Part;
use crate::leader::Leadership;
use crate::metrics::{ContainerFigures, ContainerLabels};
use crate::report::store::PodKey;

const LOOPBACK: &str = "127.0.0.1:0";

fn figures(watch: &str) -> ContainerFigures {
    ContainerFigures {
        labels: ContainerLabels {
            namespace: "shop".into(),
            watch: watch.into(),
            pod: "web-1".into(),
            container: "nginx".into(),
        },
        processes: 1,
        cpu_millicores: 1,
        memory_bytes: 1,
    }
}

fn exposition(shared: &Shared) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &shared.registry).unwrap();
    text
}

#[tokio::test]
async fn shutdown_reaches_every_waiter() {
    let shutdown = Shutdown::default();
    let waiting = tokio::spawn(shutdown.clone().wait());
    let late = shutdown.wait();
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("an early waiter is woken")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), late)
        .await
        .expect("a waiter made before the trigger is woken");
    tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
        .await
        .expect("a waiter made after the trigger resolves at once");
}

#[test]
fn identity_keeps_the_pod_name_and_is_unique_per_call() {
    let first = identity(Some("procwatch-operator-7d9f".into()));
    let second = identity(Some("procwatch-operator-7d9f".into()));
    assert!(first.starts_with("procwatch-operator-7d9f_"), "{first}");
    assert_ne!(first, second);
    // An empty POD_NAME falls back to the host name.
    assert!(!identity(Some(String::new())).starts_with('_'));
}

#[tokio::test]
async fn a_relist_forgets_watches_deleted_while_the_stream_was_down() {
    let shared = Shared::default();
    shared
        .metrics
        .set_containers("shop", "kept", &[figures("kept")]);
    shared
        .metrics
        .set_containers("shop", "gone", &[figures("gone")]);
    let events = vec![
        Ok(Event::Init),
        Ok(Event::InitApply(watch("kept"))),
        Ok(Event::InitDone),
    ];
    follow_watches(stream::iter(events), shared.clone()).await;
    assert!(shared.readiness.is_set(Part::WatchesSynced));
    let text = exposition(&shared);
    assert!(text.contains(r#"watch="kept""#), "{text}");
    assert!(!text.contains(r#"watch="gone""#), "{text}");

    follow_watches(
        stream::iter(vec![Ok(Event::Delete(watch("kept")))]),
        shared.clone(),
    )
    .await;
    assert!(!exposition(&shared).contains(r#"watch="kept""#));
}

#[tokio::test]
async fn pod_events_sync_the_cache_and_drop_deleted_pods_findings() {
    let shared = Shared::default();
    let (watches, _writer) = reflector::store();
    let events = PodEvents::new(
        shared.triggers.clone(),
        watches,
        shared.findings.clone(),
        shared.pod_names.clone(),
    );
    let (name, found) = findings("web-1", k8s_openapi::jiff::Timestamp::now(), vec![]);
    shared.findings.insert(PodKey::new("shop", &name), found);
    let deleted = pod("web-1", "web", true);
    let stream = stream::iter(vec![
        Ok(Event::Init),
        Ok(Event::InitDone),
        Ok(Event::Delete(deleted)),
    ]);
    follow_pods(stream, events, &shared.readiness).await;
    assert!(shared.readiness.is_set(Part::PodsSynced));
    assert!(shared.findings.is_empty());
}

/// One plain HTTP/1.1 GET over loopback; the whole response as text.
async fn get(address: std::net::SocketAddr, path: &str) -> String {
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    connection.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_server_serves_until_shutdown() {
    let shared = Shared::default();
    let shutdown = Shutdown::default();
    let (_leader, leadership) = Leadership::channel();
    let server = serve_metrics(LOOPBACK.parse().unwrap(), &shared, &leadership, &shutdown)
        .await
        .unwrap();
    let address = server.address;
    assert!(get(address, "/healthz").await.ends_with("ok\n"));
    assert!(get(address, "/readyz").await.contains("503"));

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), server.stopped())
        .await
        .expect("the server stops on shutdown");
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

#[tokio::test]
async fn a_taken_address_names_the_flag_and_the_cause_once() {
    let taken = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
    let address = taken.local_addr().unwrap();
    let (_leader, leadership) = Leadership::channel();
    let Err(error) = serve_metrics(
        address,
        &Shared::default(),
        &leadership,
        &Shutdown::default(),
    )
    .await
    else {
        panic!("{address} is taken");
    };
    assert!(matches!(error, StartError::Listen { .. }), "{error:?}");
    assert_each_cause_once(&error);
    let shown = Chain(&error).to_string();
    assert!(shown.starts_with(&format!("cannot listen on {address} (--metrics-addr): ")));
}

#[test]
fn start_errors_name_each_cause_once() {
    let unreadable = StartError::LoadCertificate {
        from: Box::new(TlsSource::Files {
            cert: "/tls/tls.crt".into(),
            key: "/tls/tls.key".into(),
            ca: "/tls/ca.crt".into(),
        }),
        source: TlsError::Read {
            path: "/tls/tls.crt".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        },
    };
    assert_each_cause_once(&unreadable);
}

/// One HTTPS POST of an empty body to `path` on `address`, trusting `ca_pem`; the status line.
async fn post_over_tls(address: std::net::SocketAddr, ca_pem: &str, path: &str) -> String {
    use rustls::pki_types::ServerName;
    let connector = crate::fixtures::tls_connector_trusting(ca_pem);
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::IpAddress(address.ip().into());
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

/// The webhook and the report endpoint listen on ports of their own (`--admission-addr`,
/// `--report-addr`), and each port serves its own path only; readiness waits for both.
#[tokio::test]
async fn admission_and_reports_are_served_on_their_own_ports() {
    use axum::routing::post;
    use clap::Parser;
    let now = std::time::SystemTime::now();
    let ca = crate::tls::issue_ca(now).unwrap();
    let sans = crate::tls::Sans {
        dns_names: vec![],
        ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
    };
    let material = crate::tls::issue_serving(&ca, &sans, now).unwrap();
    let (config, _) = crate::tls::reloadable_server_config(&material).unwrap();
    let cli = crate::cli::Cli::try_parse_from([
        "procwatch-operator",
        "--admission-addr=127.0.0.1:0",
        "--report-addr=127.0.0.1:0",
    ])
    .unwrap();
    let admission = axum::Router::new().route("/mutate", post(|| async { "reviewed" }));
    let reports = axum::Router::new().route("/report/v1", post(|| async { "reported" }));
    let shutdown = Shutdown::default();
    let readiness = crate::health::Readiness::default();
    let [webhook, reporting] =
        serve_admission_and_reports(&cli, config, admission, reports, &shutdown, &readiness)
            .await
            .unwrap();
    assert!(readiness.is_set(Part::HttpsListening));
    assert_ne!(webhook.address, reporting.address);

    let ok = "HTTP/1.1 200 OK";
    let missing = "HTTP/1.1 404 Not Found";
    let ca_pem = &material.ca_pem;
    assert_eq!(post_over_tls(webhook.address, ca_pem, "/mutate").await, ok);
    assert_eq!(
        post_over_tls(webhook.address, ca_pem, "/report/v1").await,
        missing
    );
    assert_eq!(
        post_over_tls(reporting.address, ca_pem, "/report/v1").await,
        ok
    );
    assert_eq!(
        post_over_tls(reporting.address, ca_pem, "/mutate").await,
        missing
    );

    shutdown.trigger();
    for server in [webhook, reporting] {
        tokio::time::timeout(Duration::from_secs(5), server.stopped())
            .await
            .expect("each server stops on shutdown");
    }
}
