//! Configuration drift: per container name and requested file, the distinct contents across
//! the reporting pods. The reference content is the one `spec.expect` declares, else the
//! majority (on a tie, the one the status showed first before, so a single changed replica of
//! two is the one named); every pod with another content is a minority pod.

use std::collections::BTreeMap;

use procwatch_crds::{FileVariant, FileVariants, MAX_FINGERPRINTS, MAX_VARIANT_PODS};

use super::rules::short;

/// One file of one container name across the pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    pub container: String,
    pub path: String,
    /// The declared sha256, if any.
    pub declared: Option<String>,
    /// Each content with its pods (sorted), the reference first.
    pub variants: Vec<(String, Vec<String>)>,
}

impl Comparison {
    /// Compares the contents of `path` in pods of `container`: `seen` maps a pod name to its
    /// file's sha256. `shown_before` is the order in which the previous status listed them.
    pub fn new(
        container: &str,
        path: &str,
        seen: &BTreeMap<String, String>,
        declared: Option<&str>,
        shown_before: &[String],
    ) -> Comparison {
        let mut by_content: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (pod, sha256) in seen {
            by_content.entry(sha256).or_default().push(pod.clone());
        }
        let mut variants: Vec<(String, Vec<String>)> = by_content
            .into_iter()
            .map(|(sha256, pods)| (sha256.to_string(), pods))
            .collect();
        if let Some(declared) = declared
            && !variants.iter().any(|(sha256, _)| sha256 == declared)
        {
            variants.push((declared.to_string(), Vec::new()));
        }
        let rank_before = |sha256: &str| {
            shown_before
                .iter()
                .position(|shown| shown == sha256)
                .unwrap_or(usize::MAX)
        };
        variants.sort_by(|(a, a_pods), (b, b_pods)| {
            let is_declared = |sha256: &str| Some(sha256) == declared;
            is_declared(b)
                .cmp(&is_declared(a))
                .then(b_pods.len().cmp(&a_pods.len()))
                .then(rank_before(a).cmp(&rank_before(b)))
                .then(a.cmp(b))
        });
        Comparison {
            container: container.to_string(),
            path: path.to_string(),
            declared: declared.map(str::to_string),
            variants,
        }
    }

    /// Pods whose content is not the reference.
    pub fn minority(&self) -> Vec<&str> {
        let mut pods: Vec<&str> = self
            .variants
            .iter()
            .skip(1)
            .flat_map(|(_, pods)| pods.iter().map(String::as_str))
            .collect();
        pods.sort_unstable();
        pods
    }

    /// Distinct contents that some pod has.
    pub fn count(&self) -> u32 {
        let seen = self.variants.iter().filter(|(_, pods)| !pods.is_empty());
        u32::try_from(seen.count()).unwrap_or(u32::MAX)
    }

    /// What `summary[].fileVariants[]` shows.
    pub fn to_status(&self) -> FileVariants {
        FileVariants {
            path: self.path.clone(),
            variants: self.count(),
            fingerprints: self
                .variants
                .iter()
                .take(MAX_FINGERPRINTS)
                .map(|(sha256, pods)| FileVariant {
                    sha256: sha256.clone(),
                    pods: u32::try_from(pods.len()).unwrap_or(u32::MAX),
                    pod_names: pods.iter().take(MAX_VARIANT_PODS).cloned().collect(),
                    expected: Some(sha256.as_str()) == self.declared.as_deref(),
                })
                .collect(),
        }
    }

    /// The content pods should have: `the declared 3f2a…` or `3f2a… of web-a (the majority)`.
    pub fn reference(&self) -> String {
        match (&self.declared, self.variants.first()) {
            (Some(declared), _) => format!("the declared {}", short(declared)),
            (None, Some((sha256, pods))) => {
                format!("{} of {} (the majority)", short(sha256), super::some(pods))
            }
            (None, None) => "nothing".to_string(),
        }
    }

    /// For the InSync condition: what differs, and from what.
    pub fn describe(&self) -> String {
        format!(
            "{} in container {} differs in {}: not {}",
            self.path,
            self.container,
            super::some(&self.minority()),
            self.reference()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(pod, sha)| (pod.to_string(), sha.repeat(64)))
            .collect()
    }

    const CONF: &str = "/etc/nginx/nginx.conf";

    #[test]
    fn the_majority_comes_first_and_the_others_are_the_minority() {
        let compared = Comparison::new(
            "nginx",
            CONF,
            &seen(&[("web-a", "a"), ("web-b", "b"), ("web-c", "a")]),
            None,
            &[],
        );
        assert_eq!(compared.minority(), ["web-b"]);
        assert_eq!(compared.count(), 2);
        let status = compared.to_status();
        assert_eq!(status.variants, 2);
        assert_eq!(status.fingerprints[0].pods, 2);
        assert_eq!(status.fingerprints[0].pod_names, ["web-a", "web-c"]);
        assert_eq!(status.fingerprints[1].pod_names, ["web-b"]);
        assert!(!status.fingerprints[0].expected);
        assert_eq!(
            compared.describe(),
            "/etc/nginx/nginx.conf in container nginx differs in web-b: not aaaaaaaaaaaa of \
             web-a, web-c (the majority)"
        );
    }

    #[test]
    fn a_tie_keeps_the_content_shown_before() {
        let pods = seen(&[("web-a", "a"), ("web-b", "b")]);
        let before = ["b".repeat(64)];
        let compared = Comparison::new("nginx", CONF, &pods, None, &before);
        assert_eq!(compared.minority(), ["web-a"]);
        let fresh = Comparison::new("nginx", CONF, &pods, None, &[]);
        assert_eq!(fresh.minority(), ["web-b"], "else by digest");
    }

    #[test]
    fn one_content_is_in_sync() {
        let compared = Comparison::new("nginx", CONF, &seen(&[("a", "a"), ("b", "a")]), None, &[]);
        assert!(compared.minority().is_empty());
        assert_eq!(compared.count(), 1);
    }

    #[test]
    fn a_declared_content_is_the_reference_even_when_no_pod_has_it() {
        let declared = "d".repeat(64);
        let compared = Comparison::new(
            "nginx",
            CONF,
            &seen(&[("a", "a"), ("b", "a")]),
            Some(&declared),
            &[],
        );
        assert_eq!(compared.minority(), ["a", "b"]);
        assert_eq!(compared.count(), 1);
        let status = compared.to_status();
        assert!(status.fingerprints[0].expected);
        assert_eq!(status.fingerprints[0].pods, 0);
        assert!(
            compared
                .describe()
                .ends_with("not the declared dddddddddddd")
        );
    }

    #[test]
    fn fingerprints_and_names_are_capped() {
        let many: Vec<(String, String)> = (0..20)
            .map(|i| (format!("pod-{i:02}"), format!("{:064x}", i % 8)))
            .collect();
        let seen: BTreeMap<String, String> = many.into_iter().collect();
        let status = Comparison::new("nginx", CONF, &seen, None, &[]).to_status();
        assert_eq!(status.variants, 8);
        assert_eq!(status.fingerprints.len(), MAX_FINGERPRINTS);
        assert!(
            status
                .fingerprints
                .iter()
                .all(|f| f.pod_names.len() <= MAX_VARIANT_PODS)
        );
    }
}
