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

/// Every list, string and map of the spec has a maximum, so one watch cannot make the API
/// server store, or the operator hold, more than these bounds allow.
#[test]
fn every_list_string_and_map_of_the_spec_is_bounded() {
    fn unbounded(path: &str, schema: &serde_json::Value, found: &mut Vec<String>) {
        let Some(map) = schema.as_object() else {
            return;
        };
        let missing = match map.get("type").and_then(serde_json::Value::as_str) {
            Some("array") => !map.contains_key("maxItems"),
            Some("string") => !map.contains_key("maxLength") && !map.contains_key("enum"),
            Some("object") => {
                map.contains_key("additionalProperties") && !map.contains_key("maxProperties")
            }
            _ => false,
        };
        if missing {
            found.push(path.to_string());
        }
        for (key, child) in map {
            unbounded(&format!("{path}.{key}"), child, found);
        }
    }
    let crd: serde_json::Value = serde_yaml::from_str(COMMITTED).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert!(spec.is_object());
    let mut found = Vec::new();
    unbounded("spec", spec, &mut found);
    assert_eq!(found, Vec::<String>::new());
}
