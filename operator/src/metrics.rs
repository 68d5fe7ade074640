//! Prometheus metrics of the controller and the report endpoint, served as text on `/metrics`
//! (see [`crate::health`]). The webhook registers its own `AdmissionMetrics` in the same registry.

pub mod expectations;
pub mod process;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

use crate::lock;

/// Defines an enum of label values, written in snake_case in the exposition, with `ALL` its
/// variants (to show every series from the start).
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$doc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut ::prometheus_client::encoding::LabelValueEncoder,
            ) -> Result<(), std::fmt::Error> {
                ::prometheus_client::encoding::EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}
pub(crate) use label_values;

label_values!(Outcome {
    Success => "success",
    Error => "error",
});

label_values!(StatusWrite {
    /// Written with server-side apply.
    Applied => "applied",
    /// Nothing changed since the last write.
    Unchanged => "unchanged",
    /// Deferred to keep to about one write per watch per second.
    Deferred => "deferred",
    /// Refused by the API server for its content (400, 422): a reduced status is written.
    Rejected => "rejected",
    Error => "error",
});

label_values!(
    /// Why a report was accepted or refused; `accepted` and `unwatched` are answered with 200.
    ReportResult {
        Accepted => "accepted",
        /// Authenticated, but no watch selects the pod: the agent is told to stop.
        Unwatched => "unwatched",
        Unauthenticated => "unauthenticated",
        Forbidden => "forbidden",
        TooLarge => "too_large",
        Malformed => "malformed",
        /// This replica is on standby, the token cannot be reviewed now, or the pod is not in
        /// the cache yet: the agent retries.
        Unavailable => "unavailable",
        /// Shed beyond the endpoint's capacity: the agent retries.
        Overloaded => "overloaded",
    }
);

label_values!(EvictionResult {
    Evicted => "evicted",
    /// Refused with 429, usually by a PodDisruptionBudget; retried later.
    Blocked => "blocked",
    Error => "error",
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusWriteLabels {
    pub result: StatusWrite,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportLabels {
    pub result: ReportResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub result: EvictionResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ContainerLabels {
    pub namespace: String,
    pub watch: String,
    pub pod: String,
    pub container: String,
}

/// One container's figures for the per-container gauges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFigures {
    pub labels: ContainerLabels,
    pub processes: u64,
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
}

pub struct Metrics {
    reconciles: Family<OutcomeLabels, Counter>,
    reconcile_duration: Histogram,
    status_writes: Family<StatusWriteLabels, Counter>,
    reports: Family<ReportLabels, Counter>,
    report_duration: Histogram,
    evictions: Family<EvictionLabels, Counter>,
    container_processes: Family<ContainerLabels, Gauge>,
    container_cpu: Family<ContainerLabels, Gauge>,
    container_memory: Family<ContainerLabels, Gauge>,
    /// Label sets set per watch (namespace, name), so series of gone pods can be removed.
    container_series: Mutex<HashMap<(String, String), BTreeSet<ContainerLabels>>>,
    pub expectations: expectations::ExpectationMetrics,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            status_writes: Family::default(),
            reports: Family::default(),
            report_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            evictions: Family::default(),
            container_processes: Family::default(),
            container_cpu: Family::default(),
            container_memory: Family::default(),
            container_series: Mutex::default(),
            expectations: expectations::ExpectationMetrics::default(),
        };
        metrics.expectations.register(registry);
        registry.register(
            "procwatch_reconciles",
            "ProcessWatch reconciles by outcome",
            metrics.reconciles.clone(),
        );
        registry.register(
            "procwatch_reconcile_duration_seconds",
            "Time spent reconciling one ProcessWatch",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "procwatch_status_writes",
            "ProcessWatch status writes by result",
            metrics.status_writes.clone(),
        );
        registry.register(
            "procwatch_reports",
            "Agent reports by result",
            metrics.reports.clone(),
        );
        registry.register(
            "procwatch_report_duration_seconds",
            "Time from a report's request to its answer, whatever the answer",
            metrics.report_duration.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        registry.register(
            "procwatch_evictions",
            "Evictions of pods created before their watch, by result",
            metrics.evictions.clone(),
        );
        registry.register(
            "procwatch_container_processes",
            "Processes in a container of a reporting pod",
            metrics.container_processes.clone(),
        );
        registry.register(
            "procwatch_container_cpu_millicores",
            "CPU use of every process of a container of a reporting pod",
            metrics.container_cpu.clone(),
        );
        registry.register(
            "procwatch_container_memory_bytes",
            "Resident memory of every process of a container of a reporting pod",
            metrics.container_memory.clone(),
        );
        metrics
    }

    pub fn reconciled(&self, outcome: Outcome, took: Duration) {
        self.reconciles
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn status_write(&self, result: StatusWrite) {
        self.status_writes
            .get_or_create(&StatusWriteLabels { result })
            .inc();
    }

    pub fn report(&self, result: ReportResult, took: Duration) {
        self.reports.get_or_create(&ReportLabels { result }).inc();
        self.report_duration.observe(took.as_secs_f64());
    }

    pub fn eviction(&self, result: EvictionResult) {
        self.evictions
            .get_or_create(&EvictionLabels { result })
            .inc();
    }

    /// Replaces the per-container series of one watch: sets these, removes those of pods and
    /// containers that no longer report.
    pub fn set_containers(&self, namespace: &str, watch: &str, figures: &[ContainerFigures]) {
        let key = (namespace.to_string(), watch.to_string());
        let current: BTreeSet<ContainerLabels> = figures.iter().map(|f| f.labels.clone()).collect();
        let mut series = lock(&self.container_series);
        for gone in series.get(&key).into_iter().flatten() {
            if !current.contains(gone) {
                self.remove_series(gone);
            }
        }
        for figure in figures {
            let set = |family: &Family<ContainerLabels, Gauge>, value: u64| {
                family
                    .get_or_create(&figure.labels)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            };
            set(&self.container_processes, figure.processes);
            set(&self.container_cpu, figure.cpu_millicores);
            set(&self.container_memory, figure.memory_bytes);
        }
        if current.is_empty() {
            series.remove(&key);
        } else {
            series.insert(key, current);
        }
    }

    /// Removes every per-container series of a deleted watch.
    pub fn forget_watch(&self, namespace: &str, watch: &str) {
        self.set_containers(namespace, watch, &[]);
        self.expectations.forget_watch(namespace, watch);
    }

    /// Keeps only the series of these watches (namespace, name).
    pub fn retain_watches(&self, watches: &HashSet<(String, String)>) {
        let mut gone: Vec<(String, String)> = lock(&self.container_series)
            .keys()
            .cloned()
            .chain(self.expectations.watches())
            .filter(|key| !watches.contains(key))
            .collect();
        gone.sort();
        gone.dedup();
        for (namespace, watch) in gone {
            self.forget_watch(&namespace, &watch);
        }
    }

    fn remove_series(&self, labels: &ContainerLabels) {
        self.container_processes.remove(labels);
        self.container_cpu.remove(labels);
        self.container_memory.remove(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(pod: &str, processes: u64) -> ContainerFigures {
        ContainerFigures {
            labels: ContainerLabels {
                namespace: "shop".into(),
                watch: "web".into(),
                pod: pod.into(),
                container: "nginx".into(),
            },
            processes,
            cpu_millicores: 3,
            memory_bytes: 1024,
        }
    }

    /// The exposition text, for the metrics' tests.
    pub(super) fn render(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn container_series_of_gone_pods_are_removed() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.set_containers("shop", "web", &[figures("a", 9), figures("b", 4)]);
        let text = render(&registry);
        assert!(text.contains(
            r#"procwatch_container_processes{namespace="shop",watch="web",pod="a",container="nginx"} 9"#
        ));
        assert!(text.contains(r#"pod="b""#));

        metrics.set_containers("shop", "web", &[figures("a", 10)]);
        let text = render(&registry);
        assert!(text.contains(r#"pod="a",container="nginx"} 10"#));
        assert!(!text.contains(r#"pod="b""#), "{text}");

        metrics.forget_watch("shop", "web");
        assert!(!render(&registry).contains(r#"pod="a""#));
    }

    #[test]
    fn counters_are_exposed_with_their_labels() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.report(ReportResult::Forbidden, Duration::from_millis(2));
        metrics.status_write(StatusWrite::Applied);
        metrics.status_write(StatusWrite::Rejected);
        metrics.reconciled(Outcome::Success, Duration::from_millis(3));
        let text = render(&registry);
        assert!(
            text.contains(r#"procwatch_reports_total{result="forbidden"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"procwatch_status_writes_total{result="applied"} 1"#));
        assert!(text.contains(r#"procwatch_status_writes_total{result="rejected"} 1"#));
        assert!(text.contains(r#"procwatch_reconciles_total{outcome="success"} 1"#));
        assert!(text.contains("procwatch_reconcile_duration_seconds_count 1"));
        assert!(text.contains("procwatch_report_duration_seconds_count 1"));
        assert!(text.contains("process_resident_memory_bytes "));
    }
}
