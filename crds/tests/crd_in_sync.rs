//! The committed CRD must be exactly what the Rust types generate.

const COMMITTED: &str = include_str!("../procwatch.dev_processwatches.yaml");

#[test]
fn committed_crd_matches_the_types() {
    let generated = procwatch_crds::crd_yaml().expect("render CRD");
    assert!(
        generated == COMMITTED,
        "crds/procwatch.dev_processwatches.yaml is stale; regenerate it with\n  \
         cargo run -p procwatch-crds --bin crdgen > crds/procwatch.dev_processwatches.yaml"
    );
}
