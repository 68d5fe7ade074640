//! Metrics of [`crate::expectations`]: violations and file variants as gauges per watch,
//! process starts and allocated pids as counters. Series of what is gone (a pod, a rule, a
//! file, a deleted watch) are removed, so their number stays bounded by what is watched.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

use crate::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RuleLabels {
    pub namespace: String,
    pub watch: String,
    pub container: String,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct FileLabels {
    pub namespace: String,
    pub watch: String,
    pub container: String,
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct StartLabels {
    pub namespace: String,
    pub watch: String,
    pub container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub watch: String,
    pub pod: String,
}

/// What one reconcile of a watch found.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Violations per (container, rule).
    pub violations: Vec<((String, String), u64)>,
    /// Distinct contents per (container, path).
    pub file_variants: Vec<((String, String), u32)>,
    /// New processes per container since the last reconcile.
    pub starts: Vec<(String, u64)>,
    /// Pids allocated per pod since the last reconcile; every reporting pod is named.
    pub pids: Vec<(String, u64)>,
}

#[derive(Default)]
struct Series {
    violations: BTreeSet<RuleLabels>,
    files: BTreeSet<FileLabels>,
    pods: BTreeSet<PodLabels>,
    starts: BTreeSet<StartLabels>,
}

#[derive(Default)]
pub struct ExpectationMetrics {
    violations: Family<RuleLabels, Gauge>,
    file_variants: Family<FileLabels, Gauge>,
    process_starts: Family<StartLabels, Counter>,
    pids_allocated: Family<PodLabels, Counter>,
    series: Mutex<HashMap<(String, String), Series>>,
}

impl ExpectationMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "procwatch_violations",
            "Processes or containers breaking a rule of spec.expect, by container and rule",
            self.violations.clone(),
        );
        registry.register(
            "procwatch_file_variants",
            "Distinct contents of a requested file across the pods of a container name",
            self.file_variants.clone(),
        );
        registry.register(
            "procwatch_process_starts",
            "Processes seen starting in a container that had already reported",
            self.process_starts.clone(),
        );
        registry.register(
            "procwatch_pids_allocated",
            "Pids allocated in a pod's PID namespace, seen by a scan or not",
            self.pids_allocated.clone(),
        );
    }

    /// Records one reconcile of a watch: gauges replaced, counters advanced, series of what is
    /// no longer there removed.
    pub fn record(&self, namespace: &str, watch: &str, figures: &Figures) {
        let violations: BTreeSet<RuleLabels> = figures
            .violations
            .iter()
            .map(|((container, rule), count)| {
                let labels = RuleLabels {
                    namespace: namespace.into(),
                    watch: watch.into(),
                    container: container.clone(),
                    rule: rule.clone(),
                };
                self.violations.get_or_create(&labels).set(gauge(*count));
                labels
            })
            .collect();
        let files: BTreeSet<FileLabels> = figures
            .file_variants
            .iter()
            .map(|((container, path), variants)| {
                let labels = FileLabels {
                    namespace: namespace.into(),
                    watch: watch.into(),
                    container: container.clone(),
                    path: path.clone(),
                };
                self.file_variants
                    .get_or_create(&labels)
                    .set(i64::from(*variants));
                labels
            })
            .collect();
        let pods: BTreeSet<PodLabels> = figures
            .pids
            .iter()
            .map(|(pod, allocated)| {
                let labels = PodLabels {
                    namespace: namespace.into(),
                    watch: watch.into(),
                    pod: pod.clone(),
                };
                self.pids_allocated
                    .get_or_create(&labels)
                    .inc_by(*allocated);
                labels
            })
            .collect();
        let key = (namespace.to_string(), watch.to_string());
        let mut all = lock(&self.series);
        let series = all.entry(key.clone()).or_default();
        for (container, started) in &figures.starts {
            let labels = StartLabels {
                namespace: namespace.into(),
                watch: watch.into(),
                container: container.clone(),
            };
            self.process_starts.get_or_create(&labels).inc_by(*started);
            series.starts.insert(labels);
        }
        for gone in series.violations.difference(&violations) {
            self.violations.remove(gone);
        }
        for gone in series.files.difference(&files) {
            self.file_variants.remove(gone);
        }
        for gone in series.pods.difference(&pods) {
            self.pids_allocated.remove(gone);
        }
        series.violations = violations;
        series.files = files;
        series.pods = pods;
    }

    /// Removes every series of a deleted watch.
    pub fn forget_watch(&self, namespace: &str, watch: &str) {
        let Some(series) = lock(&self.series).remove(&(namespace.to_string(), watch.to_string()))
        else {
            return;
        };
        series.violations.iter().for_each(|l| {
            self.violations.remove(l);
        });
        series.files.iter().for_each(|l| {
            self.file_variants.remove(l);
        });
        series.pods.iter().for_each(|l| {
            self.pids_allocated.remove(l);
        });
        series.starts.iter().for_each(|l| {
            self.process_starts.remove(l);
        });
    }

    pub fn watches(&self) -> Vec<(String, String)> {
        lock(&self.series).keys().cloned().collect()
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::render;

    #[test]
    fn gauges_follow_the_findings_and_counters_add_up() {
        let mut registry = Registry::default();
        let metrics = ExpectationMetrics::default();
        metrics.register(&mut registry);
        let figures = Figures {
            violations: vec![(("nginx".into(), "commands".into()), 2)],
            file_variants: vec![(("nginx".into(), "/etc/nginx/nginx.conf".into()), 2)],
            starts: vec![("nginx".into(), 3)],
            pids: vec![("web-a".into(), 1500)],
        };
        metrics.record("shop", "web", &figures);
        metrics.record(
            "shop",
            "web",
            &Figures {
                pids: vec![("web-a".into(), 500)],
                ..Figures::default()
            },
        );
        let text = render(&registry);
        assert!(
            text.contains(
                r#"procwatch_pids_allocated_total{namespace="shop",watch="web",pod="web-a"} 2000"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"procwatch_process_starts_total{namespace="shop",watch="web",container="nginx"} 3"#
        ));
        assert!(!text.contains("procwatch_violations{"), "cleared: {text}");
        assert!(!text.contains("procwatch_file_variants{"));

        metrics.record("shop", "web", &figures);
        assert!(render(&registry).contains(
            r#"procwatch_violations{namespace="shop",watch="web",container="nginx",rule="commands"} 2"#
        ));
        metrics.forget_watch("shop", "web");
        assert!(!render(&registry).contains(r#"watch="web""#));
    }
}
