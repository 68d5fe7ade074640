//! The committed CRD (`config/crd/processwatches.yaml`, where kustomize reads it) must be
//! exactly what the Rust types generate.

const COMMITTED: &str = include_str!("../../config/crd/processwatches.yaml");

#[test]
fn committed_crd_matches_the_types() {
    let generated = procwatch_crds::crd_yaml().expect("render CRD");
    assert!(
        generated == COMMITTED,
        "config/crd/processwatches.yaml is stale; regenerate it with\n  \
         cargo run -p procwatch-crds --bin crdgen > config/crd/processwatches.yaml"
    );
}
