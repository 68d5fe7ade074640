//! Every command rendered from status fixtures, compared as whole tables with the text under
//! `tests/golden/`. After a deliberate change of the output, rewrite them with
//! `UPDATE_GOLDEN=1 cargo test -p kubectl-procwatch --test golden` and review the diff.

use std::path::PathBuf;

use k8s_openapi::jiff::Timestamp;
use kube::core::Status;
use kubectl_procwatch::table::Width;
use kubectl_procwatch::view::{Filter, Input, Watch};
use kubectl_procwatch::{files, message, ps, sockets, top};
use procwatch_crds::ProcessWatch;

/// The moment every fixture is rendered at (ages are relative to it).
const NOW: &str = "2026-11-29T01:25:00Z";

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// The fixture as the plugin reads it; `selected` are the pod names its selector matches.
fn watch(fixture: &str, selected: &[&str]) -> Watch {
    let path = dir("fixtures").join(format!("{fixture}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let pw: ProcessWatch =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Watch::new(&pw, Some(selected.iter().map(|s| s.to_string()).collect()))
}

fn input(watches: &[Watch], all_namespaces: bool) -> Input<'_> {
    Input {
        watches,
        now: NOW.parse::<Timestamp>().unwrap(),
        all_namespaces,
    }
}

fn golden(name: &str, got: &str) {
    let path = dir("golden").join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        got == want,
        "{name}: the output differs from {}\n--- got:\n{got}--- want:\n{want}",
        path.display()
    );
}

/// Each command over one fixture, to a pipe (nothing cut).
fn every_command(name: &str, watches: &[Watch]) {
    let input = input(watches, false);
    let all = Filter::default();
    let plain = ps::Options::default();
    golden(
        &format!("{name}.ps"),
        &ps::render(&input, &plain, Width::Unlimited),
    );
    let tree = ps::Options {
        tree: true,
        ..ps::Options::default()
    };
    golden(
        &format!("{name}.ps-tree"),
        &ps::render(&input, &tree, Width::Unlimited),
    );
    golden(
        &format!("{name}.sockets"),
        &sockets::render(&input, &all, Width::Unlimited),
    );
    golden(
        &format!("{name}.files"),
        &files::render(&input, &all, Width::Unlimited),
    );
    golden(
        &format!("{name}.top"),
        &top::render(&input, &all, false, Width::Unlimited),
    );
    golden(
        &format!("{name}.top-containers"),
        &top::render(&input, &all, true, Width::Unlimited),
    );
}

#[test]
fn full_status() {
    let watches = [watch(
        "full",
        &[
            "web-c956884-khwbt",
            "web-c956884-p2x7d",
            "web-c956884-zz9qk",
        ],
    )];
    every_command("full", &watches);
}

#[test]
fn truncated_status() {
    every_command("truncated", &[watch("truncated", &["flux"])]);
}

#[test]
fn max_pods_cut() {
    let watches = [watch(
        "maxpods",
        &["train-workers-0-0-6hx2l", "train-workers-1-0-k8d2p"],
    )];
    every_command("maxpods", &watches);
}

/// Without the right to list pods, the plugin cannot name the pods left out: it counts them.
#[test]
fn max_pods_cut_without_pod_names() {
    let mut train = watch("maxpods", &[]);
    train.selected = None;
    let watches = [train];
    let input = input(&watches, false);
    golden(
        "maxpods-unlisted.ps",
        &ps::render(&input, &ps::Options::default(), Width::Unlimited),
    );
}

#[test]
fn empty_watch() {
    every_command("empty", &[watch("empty", &[])]);
}

#[test]
fn several_watches_across_namespaces_wide_and_cut() {
    let watches = [
        watch(
            "full",
            &[
                "web-c956884-khwbt",
                "web-c956884-p2x7d",
                "web-c956884-zz9qk",
            ],
        ),
        watch("truncated", &["flux"]),
    ];
    let input = input(&watches, true);
    let wide = ps::Options {
        wide: true,
        ..ps::Options::default()
    };
    // -o wide ignores the terminal's width.
    golden("all.ps-wide", &ps::render(&input, &wide, Width::Cut(40)));
    let one = ps::Options {
        filter: Filter {
            pod: Some("flux".into()),
            container: Some("flux1".into()),
        },
        ..ps::Options::default()
    };
    golden(
        "all.ps-flux1-cut-110",
        &ps::render(&input, &one, Width::Cut(110)),
    );
}

#[test]
fn json_rows_have_the_status_fields_and_the_place() {
    let watches = [watch("truncated", &["flux"])];
    let input = input(&watches, false);
    let rows = ps::rows(&input, &ps::Options::default());
    let json = serde_json::to_value(&rows).unwrap();
    golden(
        "truncated.ps-json",
        &(serde_json::to_string_pretty(&json).unwrap() + "\n"),
    );
}

/// Statuses the operator wrote on the test cluster: a Ready watch, one whose pod predates it,
/// one with an invalid selector (whose pods the plugin cannot list).
#[test]
fn statuses_from_the_cluster() {
    let mut broken = watch("cluster/invalid-spec", &[]);
    broken.selected = None;
    let watches = [
        broken,
        watch("cluster/attaching", &["early-86478875df-wcs6d"]),
        watch("cluster/ready", &["web-c956884-6dm8f"]),
    ];
    let input = Input {
        now: "2026-11-30T02:51:30Z".parse::<Timestamp>().unwrap(),
        ..input(&watches, false)
    };
    golden(
        "cluster.ps",
        &ps::render(&input, &ps::Options::default(), Width::Unlimited),
    );
    golden(
        "cluster.files",
        &files::render(&input, &Filter::default(), Width::Unlimited),
    );
}

/// A watch that does not exist: the API server's 404, printed as kubectl prints it.
#[test]
fn missing_watch() {
    let status: Status = serde_json::from_value(serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "processwatches.procwatch.dev \"x\" not found",
        "reason": "NotFound",
        "details": {"name": "x", "group": "procwatch.dev", "kind": "processwatches"},
        "code": 404
    }))
    .unwrap();
    let err = anyhow::Error::from(kube::Error::Api(Box::new(status))).context("reading watch x");
    golden(
        "missing.error",
        &(message::kubectl_error(err.as_ref()) + "\n"),
    );
}
