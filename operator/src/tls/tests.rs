use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};
use kube::client::Body;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);
const SERVICE_NAME: &str = "procwatch-operator.procwatch-system.svc";

fn sans() -> Sans {
    Sans {
        dns_names: vec![
            SERVICE_NAME.to_string(),
            format!("{SERVICE_NAME}.cluster.local"),
        ],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    }
}

fn fresh(now: SystemTime) -> (CaMaterial, TlsMaterial) {
    let ca = issue_ca(now).unwrap();
    let material = issue_serving(&ca, &sans(), now).unwrap();
    (ca, material)
}

#[test]
fn issued_material_verifies_for_its_names_only() {
    let now = SystemTime::now();
    let (_, material) = fresh(now);
    reload::certified_key(&material).unwrap();
    verify(&material, &sans(), now).unwrap();
    verify(&material, &sans(), now + 300 * DAY).unwrap();
    let other = Sans {
        dns_names: vec!["other.procwatch-system.svc".to_string()],
        ip_addresses: vec![],
    };
    assert!(matches!(
        verify(&material, &other, now),
        Err(TlsError::Untrusted { .. })
    ));
    let other_ip = Sans {
        dns_names: vec![],
        ip_addresses: vec!["10.0.0.1".parse().unwrap()],
    };
    assert!(verify(&material, &other_ip, now).is_err());
    // Expired a year from now.
    assert!(verify(&material, &sans(), now + 366 * DAY).is_err());
}

#[test]
fn another_ca_does_not_vouch_for_the_certificate() {
    let now = SystemTime::now();
    let (_, material) = fresh(now);
    let stranger = issue_ca(now).unwrap();
    let forged = TlsMaterial {
        ca_pem: stranger.cert_pem,
        ..material
    };
    assert!(verify(&forged, &sans(), now).is_err());
}

#[test]
fn serving_certificate_needs_names() {
    let now = SystemTime::now();
    let ca = issue_ca(now).unwrap();
    let none = Sans {
        dns_names: vec![],
        ip_addresses: vec![],
    };
    assert!(matches!(
        issue_serving(&ca, &none, now),
        Err(TlsError::NoNames)
    ));
    let bad = Sans {
        dns_names: vec!["not a name".to_string()],
        ip_addresses: vec![],
    };
    assert!(matches!(
        issue_serving(&ca, &bad, now),
        Err(TlsError::InvalidName(_))
    ));
}

#[test]
fn renewal_keeps_the_ca_that_agents_already_trust() {
    let then = SystemTime::now() - 340 * DAY;
    let (ca, old) = fresh(then);
    let now = SystemTime::now();
    let renewed = issue_serving(&ca, &sans(), now).unwrap();
    assert_eq!(renewed.ca_pem, old.ca_pem);
    assert_ne!(renewed.cert_chain_pem, old.cert_chain_pem);
    verify(&renewed, &sans(), now + 300 * DAY).unwrap();
}

#[test]
fn stored_material_round_trips_through_the_secret() {
    let now = SystemTime::now();
    let (ca, material) = fresh(now);
    let secret = to_secret("procwatch-serving-cert", &ca, &material, &sans(), None);
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let stored = from_secret(&secret);
    assert_eq!(stored.ca.as_ref().unwrap().cert_pem, ca.cert_pem);
    assert_eq!(stored.ca.as_ref().unwrap().not_after, ca.not_after);
    assert_eq!(stored.serving.as_ref(), Some(&material));
    assert_eq!(plan(&stored, &sans(), now), Plan::Keep);
}

#[test]
fn plan_renews_what_is_missing_expiring_or_renamed() {
    let now = SystemTime::now();
    let (ca, material) = fresh(now);
    let stored = |ca: Option<CaMaterial>, serving: Option<TlsMaterial>, names: &Sans| Stored {
        ca,
        serving,
        sans: Some(names.canonical()),
    };
    let renew_serving = |p: Plan| matches!(p, Plan::RenewServing(_));
    let renew_all = |p: Plan| matches!(p, Plan::RenewAll(_));

    assert!(renew_all(plan(&stored(None, None, &sans()), &sans(), now)));
    assert!(renew_serving(plan(
        &stored(Some(ca.clone()), None, &sans()),
        &sans(),
        now
    )));

    // A name added, and a name removed.
    let mut more = sans();
    more.dns_names.push("procwatch.example".to_string());
    let current = stored(Some(ca.clone()), Some(material.clone()), &sans());
    assert!(renew_serving(plan(&current, &more, now)));
    let mut fewer = sans();
    fewer.ip_addresses.clear();
    assert!(renew_serving(plan(&current, &fewer, now)));
    // Order and case do not count as a change.
    let mut shuffled = sans();
    shuffled.dns_names.reverse();
    shuffled.dns_names[0] = shuffled.dns_names[0].to_uppercase();
    assert_eq!(plan(&current, &shuffled, now), Plan::Keep);

    // Issued 320 days ago: under 60 days left.
    let old_time = now - 320 * DAY;
    let old = issue_serving(&ca, &sans(), old_time).unwrap();
    assert!(renew_serving(plan(
        &stored(Some(ca.clone()), Some(old), &sans()),
        &sans(),
        now
    )));

    // A CA with less than a year left is replaced, with everything it signed.
    let mut ageing = ca.clone();
    ageing.not_after = now + 200 * DAY;
    assert!(renew_all(plan(
        &stored(Some(ageing), Some(material.clone()), &sans()),
        &sans(),
        now
    )));

    // A serving certificate of some other CA.
    let (other_ca, _) = fresh(now);
    let foreign = issue_serving(&other_ca, &sans(), now).unwrap();
    assert!(renew_serving(plan(
        &stored(Some(ca.clone()), Some(foreign), &sans()),
        &sans(),
        now
    )));

    // A key that is not the certificate's.
    let (_, other) = fresh(now);
    let mismatched = TlsMaterial {
        key_pem: other.key_pem,
        ..material
    };
    assert!(renew_serving(plan(
        &stored(Some(ca), Some(mismatched), &sans()),
        &sans(),
        now
    )));
}

#[test]
fn ca_bundle_patch_updates_only_stale_webhooks() {
    let webhook = |name: &str, bundle: Option<&str>| MutatingWebhook {
        name: name.to_string(),
        admission_review_versions: vec!["v1".to_string()],
        side_effects: "None".to_string(),
        client_config: WebhookClientConfig {
            ca_bundle: bundle.map(|b| ByteString(b.as_bytes().to_vec())),
            url: Some("https://127.0.0.1:9443/mutate".to_string()),
            ..WebhookClientConfig::default()
        },
        ..MutatingWebhook::default()
    };
    let ca = "-----BEGIN CERTIFICATE-----\nnew\n-----END CERTIFICATE-----\n";
    let config = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("procwatch".to_string()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            webhook("pods.procwatch.dev", None),
            webhook("current.procwatch.dev", Some(ca)),
            webhook("old.procwatch.dev", Some("old")),
        ]),
    };
    let patch = ca_bundle_patch(&config, ca);
    assert_eq!(patch.0.len(), 4, "a test and an add for each stale webhook");
    let mut doc = serde_json::to_value(&config).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    let patched: MutatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
    for webhook in patched.webhooks.as_ref().unwrap() {
        assert_eq!(
            webhook.client_config.ca_bundle.as_ref().unwrap().0,
            ca.as_bytes()
        );
    }
    assert!(ca_bundle_patch(&patched, ca).0.is_empty());

    // If the list changed meanwhile, the test operation refuses the patch.
    let mut reordered = serde_json::to_value(&config).unwrap();
    reordered["webhooks"].as_array_mut().unwrap().reverse();
    assert!(json_patch::patch(&mut reordered, &patch).is_err());
}

/// Starts `serve_listener` on 127.0.0.1:0 with a tiny app; returns its address, the
/// shutdown trigger and the server task.
async fn start(
    material: &TlsMaterial,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (config, _) = reloadable_server_config(material).unwrap();
    let server = tokio::spawn(serve_listener(listener, config, app, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

async fn get_over_tls(
    addr: SocketAddr,
    ca_pem: &str,
    name: ServerName<'static>,
    path: &str,
) -> std::io::Result<String> {
    let connector = crate::fixtures::tls_connector_trusting(ca_pem);
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector.connect(name, tcp).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {SERVICE_NAME}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn real_handshake_by_service_name_and_by_ip() {
    let (_, material) = fresh(SystemTime::now());
    let (addr, stop, server) = start(&material).await;

    let by_name = ServerName::try_from(SERVICE_NAME).unwrap();
    let response = get_over_tls(addr, &material.ca_pem, by_name, "/hello")
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("hello"), "{response}");

    let by_ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let response = get_over_tls(addr, &material.ca_pem, by_ip, "/hello")
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");

    // A client that trusts another CA, or asks for another name, refuses the server.
    let stranger = issue_ca(SystemTime::now()).unwrap();
    let by_name = ServerName::try_from(SERVICE_NAME).unwrap();
    assert!(
        get_over_tls(addr, &stranger.cert_pem, by_name, "/hello")
            .await
            .is_err()
    );
    let wrong = ServerName::try_from("evil.example").unwrap();
    assert!(
        get_over_tls(addr, &material.ca_pem, wrong, "/hello")
            .await
            .is_err()
    );

    // The server is still up after failed handshakes.
    let by_name = ServerName::try_from(SERVICE_NAME).unwrap();
    assert!(
        get_over_tls(addr, &material.ca_pem, by_name, "/hello")
            .await
            .is_ok()
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

/// A client holding many connections open (never finishing a handshake) takes only the
/// connection slots; once one is given back, the server answers again.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed() {
    let (_, material) = fresh(SystemTime::now());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (config, _) = reloadable_server_config(&material).unwrap();
    let app = Router::new().route("/hello", get(|| async { "hello" }));
    let limits = crate::tls::Limits { connections: 2 };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(crate::tls::serve_with_limits(
        listener,
        config,
        app,
        async {
            let _ = stopped.await;
        },
        limits,
    ));
    let idle_one = TcpStream::connect(addr).await.unwrap();
    let _idle_two = TcpStream::connect(addr).await.unwrap();
    let name = || ServerName::try_from(SERVICE_NAME).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        get_over_tls(addr, &material.ca_pem, name(), "/hello")
            .await
            .is_err(),
        "a third connection is closed"
    );
    drop(idle_one);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = get_over_tls(addr, &material.ca_pem, name(), "/hello")
        .await
        .unwrap();
    assert!(response.ends_with("hello"), "{response}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let (_, material) = fresh(SystemTime::now());
    let (addr, stop, server) = start(&material).await;
    let ca = material.ca_pem.clone();
    let slow = tokio::spawn(async move {
        let name = ServerName::try_from(SERVICE_NAME).unwrap();
        get_over_tls(addr, &ca, name, "/slow").await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let response = slow.await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("slow"), "{response}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn replaced_certificate_is_served_from_the_next_handshake() {
    let (_, first) = fresh(SystemTime::now());
    let (_, second) = fresh(SystemTime::now());
    let (config, handle) = reloadable_server_config(&first).unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hello", get(|| async { "hello" }));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_listener(listener, config, app, async {
        let _ = stopped.await;
    }));
    let name = || ServerName::try_from(SERVICE_NAME).unwrap();

    assert!(
        get_over_tls(addr, &first.ca_pem, name(), "/hello")
            .await
            .is_ok()
    );
    assert!(handle.replace(second.clone()).unwrap());
    assert!(
        !handle.replace(second.clone()).unwrap(),
        "same again: no change"
    );
    assert!(
        get_over_tls(addr, &second.ca_pem, name(), "/hello")
            .await
            .is_ok()
    );
    assert!(
        get_over_tls(addr, &first.ca_pem, name(), "/hello")
            .await
            .is_err()
    );

    // A key that is not the certificate's is refused and the current one stays.
    let broken = TlsMaterial {
        key_pem: first.key_pem.clone(),
        ..second.clone()
    };
    assert!(handle.replace(broken).is_err());
    assert_eq!(handle.material(), second);
    assert!(
        get_over_tls(addr, &second.ca_pem, name(), "/hello")
            .await
            .is_ok()
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn rotated_files_are_picked_up() {
    let (_, first) = fresh(SystemTime::now());
    let (_, second) = fresh(SystemTime::now());
    let dir = std::env::temp_dir().join(format!("procwatch-tls-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |material: &TlsMaterial| {
        for (name, text) in [
            ("tls.crt", &material.cert_chain_pem),
            ("tls.key", &material.key_pem),
            ("ca.crt", &material.ca_pem),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
    };
    write(&first);
    let source = TlsSource::Files {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca: dir.join("ca.crt"),
    };
    let (client, _api) = mock_client();
    let (_, handle) = reloadable_server_config(&first).unwrap();
    let refresher = tokio::spawn(keep_fresh(
        client,
        source,
        handle.clone(),
        Duration::from_millis(20),
    ));
    write(&second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handle.material() != second {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotation not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    refresher.abort();
    std::fs::remove_dir_all(&dir).unwrap();
}

type Handle = tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>;

fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    (Client::new(service, "procwatch-system"), handle)
}

fn status(code: u16, reason: &str) -> http::Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code,
    });
    http::Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(object: &impl serde::Serialize) -> http::Response<Body> {
    http::Response::builder()
        .status(200)
        .body(Body::from(serde_json::to_vec(object).unwrap()))
        .unwrap()
}

fn self_managed_source() -> TlsSource {
    let s = sans();
    TlsSource::SelfManaged {
        namespace: "procwatch-system".to_string(),
        secret_name: "procwatch-serving-cert".to_string(),
        dns_names: s.dns_names,
        ip_addresses: s.ip_addresses,
    }
}

const SECRET_PATH: &str = "/api/v1/namespaces/procwatch-system/secrets/procwatch-serving-cert";

#[tokio::test]
async fn self_managed_creates_the_secret_when_absent() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        let (request, send) = api.next_request().await.unwrap();
        assert_eq!(
            (request.method().as_str(), request.uri().path()),
            ("GET", SECRET_PATH)
        );
        send.send_response(status(404, "NotFound"));
        let (request, send) = api.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/procwatch-system/secrets"
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let secret: Secret = serde_json::from_slice(&body).unwrap();
        send.send_response(ok(&secret));
        secret
    });
    let material = load(client, &self_managed_source()).await.unwrap();
    let created = server.await.unwrap();
    verify(&material, &sans(), SystemTime::now()).unwrap();
    assert_eq!(from_secret(&created).serving, Some(material));
}

#[tokio::test]
async fn losing_the_create_race_uses_the_winners_secret() {
    let now = SystemTime::now();
    let (ca, winners) = fresh(now);
    let mut stored = to_secret("procwatch-serving-cert", &ca, &winners, &sans(), None);
    stored.metadata.resource_version = Some("7".to_string());
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        let (_, send) = api.next_request().await.unwrap();
        send.send_response(status(404, "NotFound"));
        let (request, send) = api.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::POST);
        send.send_response(status(409, "AlreadyExists"));
        let (request, send) = api.next_request().await.unwrap();
        assert_eq!(
            (request.method().as_str(), request.uri().path()),
            ("GET", SECRET_PATH)
        );
        send.send_response(ok(&stored));
    });
    let material = load(client, &self_managed_source()).await.unwrap();
    server.await.unwrap();
    assert_eq!(material, winners);
}

#[tokio::test]
async fn renaming_reissues_the_serving_certificate_under_the_same_ca() {
    let now = SystemTime::now();
    let old_names = Sans {
        dns_names: vec![SERVICE_NAME.to_string()],
        ip_addresses: vec![],
    };
    let ca = issue_ca(now).unwrap();
    let old = issue_serving(&ca, &old_names, now).unwrap();
    let mut stored = to_secret("procwatch-serving-cert", &ca, &old, &old_names, None);
    stored.metadata.resource_version = Some("7".to_string());
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        let (_, send) = api.next_request().await.unwrap();
        send.send_response(ok(&stored));
        let (request, send) = api.next_request().await.unwrap();
        assert_eq!(
            (request.method().as_str(), request.uri().path()),
            ("PUT", SECRET_PATH)
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let replaced: Secret = serde_json::from_slice(&body).unwrap();
        // Optimistic concurrency: the write names the version it read.
        assert_eq!(replaced.metadata.resource_version.as_deref(), Some("7"));
        send.send_response(ok(&replaced));
        replaced
    });
    let material = load(client, &self_managed_source()).await.unwrap();
    let replaced = server.await.unwrap();
    assert_eq!(material.ca_pem, ca.cert_pem);
    assert_ne!(material.cert_chain_pem, old.cert_chain_pem);
    verify(&material, &sans(), now).unwrap();
    assert_eq!(from_secret(&replaced).sans, Some(sans().canonical()));
}

#[tokio::test]
async fn files_are_read_and_checked() {
    let (_, material) = fresh(SystemTime::now());
    let dir = std::env::temp_dir().join(format!("procwatch-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let source = TlsSource::Files {
        cert: write("tls.crt", &material.cert_chain_pem),
        key: write("tls.key", &material.key_pem),
        ca: write("ca.crt", &material.ca_pem),
    };
    let (client, _api) = mock_client();
    let loaded = load(client.clone(), &source).await.unwrap();
    assert_eq!(loaded, material);

    let missing = TlsSource::Files {
        cert: dir.join("absent.crt"),
        key: dir.join("tls.key"),
        ca: dir.join("ca.crt"),
    };
    assert!(matches!(
        load(client, &missing).await,
        Err(TlsError::Read { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_name_each_cause_once() {
    use crate::errors::assert_each_cause_once;

    let now = SystemTime::now();
    let (_, material) = fresh(now);
    let elsewhere = Sans {
        dns_names: vec!["other.procwatch-system.svc".to_string()],
        ip_addresses: vec![],
    };
    assert_each_cause_once(&verify(&material, &elsewhere, now).unwrap_err());
    let no_key = TlsMaterial {
        key_pem: "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n".into(),
        ..material.clone()
    };
    assert_each_cause_once(&reload::certified_key(&no_key).unwrap_err());
    let mismatched_key = TlsMaterial {
        key_pem: fresh(now).1.key_pem,
        ..material
    };
    assert_each_cause_once(&reload::certified_key(&mismatched_key).unwrap_err());
    assert_each_cause_once(&TlsError::Read {
        path: "/tls/tls.crt".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    });
    assert_each_cause_once(&TlsError::Kube(kube::Error::TlsRequired));
}

#[test]
fn reissue_keeps_a_ca_that_signs_and_replaces_one_that_cannot() {
    let now = SystemTime::now();
    let (ca, _) = fresh(now);
    let (kept, material) = reissue(Some(ca.clone()), &sans(), now, "serving").unwrap();
    assert_eq!(kept, ca);
    assert_eq!(material.ca_pem, ca.cert_pem);

    let broken = CaMaterial {
        key_pem: "not a key".into(),
        ..ca.clone()
    };
    let (replaced, material) = reissue(Some(broken), &sans(), now, "serving").unwrap();
    assert_ne!(replaced.cert_pem, ca.cert_pem);
    verify(&material, &sans(), now).unwrap();
    assert_eq!(material.ca_pem, replaced.cert_pem);
}
