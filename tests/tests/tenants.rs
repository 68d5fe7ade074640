//! End to end on a real cluster: what tenants and network clients can and cannot do to the
//! operator. A ptrace watch in a namespace that enforces Pod Security `baseline` gets the
//! agent without ptrace; a pod that says `shareProcessNamespace: false` gets no agent and is
//! listed as opted out; a flood of forged tokens costs the API server a bounded number of
//! TokenReviews while a real agent's reports go on and the leader keeps its lease; connections
//! that trickle their bodies into the webhook's port do not keep a pod from its agent.
//!
//! Needs the image `localhost/procwatch:dev` and a cluster where the loopback overlay works
//! (tests/README.md). The flood and trickle tests print their figures (tests/README.md keeps
//! them); no test asserts a duration.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use procwatch_crds::ProcessWatch;
use procwatch_crds::constants::AGENT_CONTAINER_NAME;
use procwatch_e2e::processwatch::{
    apply_watch, busybox_pod, describe_status, has_agent, metric_value, wait_for_watch,
};
use procwatch_e2e::{
    ADMISSION_URL, Cluster, OPERATOR_NAMESPACE, Operator, REPORT_URL, TestNamespace, Wait,
    wait_for, webhook_injects,
};
use sha2::{Digest, Sha256};

const SCRIPT: &str = "sleep 3600 & sleep 3601 & wait";
/// The lease of the loopback overlay (`--leader-election-lease`).
const LEASE: &str = "procwatch-operator";
/// The operator's bounds on TokenReviews for one source address (README, Security): 20
/// refusals per 10 s window, then 429 unheard, and at most 8 reviews in flight when the limit
/// is reached.
const REFUSALS_PER_WINDOW: u64 = 20;
const REVIEWS_IN_FLIGHT: u64 = 8;
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

fn watch_yaml(ptrace: bool) -> String {
    format!(
        r#"
apiVersion: procwatch.dev/v1alpha1
kind: ProcessWatch
metadata: {{name: tenants}}
spec:
  selector: {{matchLabels: {{app: tenant}}}}
  interval: 2s
  agent: {{ptrace: {ptrace}}}
"#
    )
}

async fn operator_watching(
    prefix: &str,
    ptrace: bool,
    namespace_labels: &[(&str, &str)],
) -> anyhow::Result<(Cluster, Operator, TestNamespace)> {
    let cluster = Cluster::connect().await?;
    let operator = Operator::deploy(&cluster).await?;
    let ns = cluster.namespace(prefix).await?;
    for (key, value) in namespace_labels {
        cluster
            .kubectl(&["label", "namespace", ns.name(), &format!("{key}={value}")])
            .await?;
    }
    apply_watch(&ns, &watch_yaml(ptrace), "tenants").await?;
    Ok((cluster, operator, ns))
}

async fn running(ns: &TestNamespace, name: &str) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = ns.api();
    wait_for(
        &format!("pod {name} running"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await?;
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            Ok(if phase == "Running" {
                Wait::Done(pod)
            } else {
                Wait::not_yet(phase)
            })
        },
    )
    .await
}

/// The reasons of the events about the watch `tenants`.
async fn watch_event_reasons(ns: &TestNamespace) -> anyhow::Result<Vec<String>> {
    let events: Api<Event> = ns.api();
    let list = events.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("tenants"))
        .filter_map(|e| e.reason)
        .collect())
}

/// A ptrace watch in a namespace labelled `pod-security.kubernetes.io/enforce: baseline`: the
/// pod gets the agent without SYS_PTRACE, running as non-root (what `baseline` admits; the
/// 1.20 test cluster does not enforce Pod Security, so the webhook's choice is what is
/// checked), and the watch says why: reason `PtraceForbiddenByPodSecurity`, and an event.
#[tokio::test]
async fn ptrace_watch_in_a_baseline_namespace_gets_an_agent_without_ptrace() -> anyhow::Result<()> {
    let (_cluster, operator, ns) = operator_watching(
        "tenant-psa",
        true,
        &[("pod-security.kubernetes.io/enforce", "baseline")],
    )
    .await?;
    ns.apply_yaml(&busybox_pod("baseline", "tenant", SCRIPT))
        .await?;
    let pod = running(&ns, "baseline").await?;
    let spec = pod.spec.as_ref().context("pod without spec")?;
    let agent = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == AGENT_CONTAINER_NAME)
        .context("the pod has no agent")?;
    let security = agent
        .security_context
        .as_ref()
        .context("agent without securityContext")?;
    let added = security
        .capabilities
        .as_ref()
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    ensure!(
        !added.iter().any(|c| c.contains("PTRACE")),
        "the agent has {added:?} in a baseline namespace"
    );
    ensure!(
        security.run_as_non_root == Some(true),
        "the agent may run as root: {security:?}"
    );
    let reason = wait_for_watch(
        &ns,
        "tenants",
        "Attached with reason PtraceForbiddenByPodSecurity",
        Duration::from_secs(60),
        |pw| {
            pw.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Attached" && c.reason == "PtraceForbiddenByPodSecurity")
                .map(|c| c.message.clone())
        },
    )
    .await?;
    println!("Attached: PtraceForbiddenByPodSecurity: {reason}");
    wait_for(
        "a PtraceForbiddenByPodSecurity event",
        Duration::from_secs(30),
        || async {
            let reasons = watch_event_reasons(&ns).await?;
            Ok(
                if reasons.iter().any(|r| r == "PtraceForbiddenByPodSecurity") {
                    Wait::Done(())
                } else {
                    Wait::not_yet(format!("{reasons:?}"))
                },
            )
        },
    )
    .await?;
    ns.finish();
    operator.finish();
    Ok(())
}

/// A selected pod that sets `shareProcessNamespace: false` itself keeps it, gets no agent,
/// and is listed under `status.optedOut` (not `needsRestart`), with a `PodOptedOut` event.
#[tokio::test]
async fn explicit_share_process_namespace_false_is_respected() -> anyhow::Result<()> {
    let (_cluster, operator, ns) = operator_watching("tenant-optout", false, &[]).await?;
    let declined = busybox_pod("declined", "tenant", SCRIPT).replace(
        "  hostNetwork: true\n",
        "  hostNetwork: true\n  shareProcessNamespace: false\n",
    );
    ns.apply_yaml(&declined).await?;
    let pod = running(&ns, "declined").await?;
    ensure!(!has_agent(&pod), "the opted-out pod got the agent");
    ensure!(
        pod.spec.as_ref().and_then(|s| s.share_process_namespace) == Some(false),
        "shareProcessNamespace was changed"
    );
    wait_for_watch(
        &ns,
        "tenants",
        "declined listed under optedOut",
        Duration::from_secs(60),
        |pw| {
            let status = pw.status.as_ref()?;
            (status.opted_out == ["declined"] && status.needs_restart.is_empty()).then_some(())
        },
    )
    .await?;
    wait_for("a PodOptedOut event", Duration::from_secs(30), || async {
        let reasons = watch_event_reasons(&ns).await?;
        Ok(if reasons.iter().any(|r| r == "PodOptedOut") {
            Wait::Done(())
        } else {
            Wait::not_yet(format!("{reasons:?}"))
        })
    })
    .await?;
    ns.finish();
    operator.finish();
    Ok(())
}

/// `apiserver_request_total` of the resource `tokenreviews`, summed over verbs and codes.
async fn token_reviews(cluster: &Cluster) -> anyhow::Result<f64> {
    let text = cluster.kubectl(&["get", "--raw", "/metrics"]).await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{") && l.contains(r#"resource="tokenreviews""#)
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

async fn lease_holder(cluster: &Cluster) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(cluster.client(), OPERATOR_NAMESPACE);
    Ok(leases
        .get(LEASE)
        .await?
        .spec
        .and_then(|s| s.holder_identity))
}

/// A JWT that passes every unverified check of the operator (audience `procwatch`, not
/// expired, bound to a pod) and is unique to `n`, with a signature that is not one: only a
/// TokenReview can refuse it.
fn forged_token(n: u32, pod: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"forged"}"#);
    let claims = serde_json::json!({
        "aud": ["procwatch"],
        "exp": now + 3600,
        "iat": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": format!("{n}-{now}"),
        "kubernetes.io": {"pod": {"name": pod, "uid": format!("forged-{n}")}},
        "sub": "system:serviceaccount:default:default"
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{n}-{now}")));
    format!("{header}.{payload}.{signature}")
}

/// 2,000 distinct forged tokens posted in 10 s from one address: the TokenReviews the API
/// server counts stay within the operator's bound, a real agent's reports are accepted in the
/// same window, and the leader keeps its lease.
#[tokio::test]
async fn a_flood_of_forged_tokens_costs_a_bounded_number_of_token_reviews() -> anyhow::Result<()> {
    const TOKENS: u32 = 2_000;
    const FLOOD: Duration = Duration::from_secs(10);
    const BATCHES: u32 = 20;
    let (cluster, operator, ns) = operator_watching("tenant-flood", false, &[]).await?;
    ns.apply_yaml(&busybox_pod("real", "tenant", SCRIPT))
        .await?;
    running(&ns, "real").await?;
    wait_for_watch(
        &ns,
        "tenants",
        "the real agent reporting",
        Duration::from_secs(60),
        |pw| (pw.status.as_ref()?.reporting_pods == 1).then_some(()),
    )
    .await?;
    let client = operator.https_client().await?;
    let holder = lease_holder(&cluster).await?;
    let accepted = |text: &str| {
        metric_value(text, "procwatch_reports_total", &[("result", "accepted")]).unwrap_or(0.0)
    };
    let accepted_before = accepted(&operator.metrics().await?);
    let reviews_before = token_reviews(&cluster).await?;

    let started = Instant::now();
    let mut codes: BTreeMap<u16, u32> = BTreeMap::new();
    for batch in 0..BATCHES {
        let due = FLOOD * batch / BATCHES;
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        let per_batch = TOKENS / BATCHES;
        let posts = (0..per_batch).map(|i| {
            let token = forged_token(batch * per_batch + i, "real");
            let client = client.clone();
            tokio::spawn(async move {
                let response = client
                    .post(REPORT_URL)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await;
                response.map(|r| r.status().as_u16()).unwrap_or(0)
            })
        });
        let answered: Vec<_> = posts.collect();
        for post in answered {
            *codes.entry(post.await?).or_default() += 1;
        }
    }
    let flood = started.elapsed();
    let reviews = token_reviews(&cluster).await? - reviews_before;
    let accepted_during = accepted(&operator.metrics().await?) - accepted_before;
    // Fixed windows per address: a flood this long touches at most this many.
    let windows = flood.as_secs() / REFUSAL_WINDOW.as_secs() + 2;
    let bound = windows * (REFUSALS_PER_WINDOW + REVIEWS_IN_FLIGHT);
    println!(
        "{TOKENS} forged tokens in {:.1}s, answers by status {codes:?} (0: no answer); \
         TokenReviews {reviews} (bound {bound}); the real agent's reports accepted meanwhile: \
         {accepted_during}",
        flood.as_secs_f64()
    );
    ensure!(
        reviews <= bound as f64,
        "{reviews} TokenReviews for {TOKENS} forged tokens (bound {bound})"
    );
    ensure!(
        accepted_during >= 1.0,
        "no report of the real agent accepted during the flood"
    );
    ensure!(
        codes.keys().all(|code| [401, 429, 503].contains(code)),
        "forged tokens answered {codes:?}"
    );
    ensure!(
        lease_holder(&cluster).await? == holder,
        "the lease changed hands during the flood"
    );
    ensure!(
        operator.readyz().await?.1.contains("leader"),
        "the operator does not lead after the flood"
    );
    let logs = operator.logs().await;
    ensure!(
        !logs.contains("stepped down"),
        "the leader stepped down during the flood:\n{logs}"
    );
    ns.finish();
    operator.finish();
    Ok(())
}

/// A request body that trickles: one byte every 500 ms, never finished.
fn trickling_body() -> reqwest::Body {
    let bytes = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some((Ok::<_, std::io::Error>(vec![b' ']), ()))
    });
    reqwest::Body::wrap_stream(bytes)
}

/// 500 connections trickle their bodies into the webhook's own port (each cut off by the
/// server's body timeout, then opened again) while a pod is created: the API server's review is
/// answered and the pod gets its agent (the webhook fails open, so an unanswered review would
/// show as a pod without it). The time the create took is printed.
#[tokio::test]
async fn trickling_connections_do_not_keep_a_pod_from_its_agent() -> anyhow::Result<()> {
    const CONNECTIONS: usize = 500;
    let (_cluster, operator, ns) = operator_watching("tenant-trickle", false, &[]).await?;
    let client = operator.https_client().await?;
    let stop = tokio::sync::watch::Sender::new(false);
    let mut tricklers = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = client.clone();
        let mut stopped = stop.subscribe();
        tricklers.push(tokio::spawn(async move {
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                let post = client
                    .post(ADMISSION_URL)
                    .header("content-type", "application/json")
                    .body(trickling_body())
                    .send();
                tokio::select! {
                    _ = post => {}
                    _ = stopped.changed() => return attempts,
                }
            }
        }));
    }
    // The tricklers hold their connections by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let creating = Instant::now();
    ns.apply_yaml(&busybox_pod("amid-trickle", "tenant", SCRIPT))
        .await?;
    let created = creating.elapsed();
    let pods: Api<Pod> = ns.api();
    let pod = pods.get("amid-trickle").await?;
    let reviewing = Instant::now();
    let answered = webhook_injects(&client, ns.name(), "direct", "tenant").await?;
    let reviewed = reviewing.elapsed();
    stop.send_replace(true);
    let mut attempts = 0;
    for trickler in tricklers {
        attempts += trickler.await?;
    }
    println!(
        "{CONNECTIONS} trickling connections ({attempts} requests, each cut off by the \
         server): a pod created in {:.2}s, with the agent: {}; a direct admission review \
         answered in {:.2}s",
        created.as_secs_f64(),
        has_agent(&pod),
        reviewed.as_secs_f64()
    );
    ensure!(
        has_agent(&pod),
        "the pod created amid the trickle has no agent: the review went unanswered"
    );
    ensure!(
        answered,
        "the direct review was not answered with the agent"
    );
    let pws: Api<ProcessWatch> = ns.api();
    let pw = pws.get("tenants").await?;
    println!("status after the trickle: {}", describe_status(&pw));
    ns.finish();
    operator.finish();
    Ok(())
}
