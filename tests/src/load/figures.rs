//! Pure arithmetic of the load run: percentiles of samples, quantiles of Prometheus histograms
//! between two scrapes, request counters by verb and resource, and the figures as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// The `q`-quantile (0..=1) of `samples` by the nearest-rank method; `None` when empty.
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// One sample line of Prometheus text: name, labels, value.
fn samples(text: &str) -> impl Iterator<Item = (&str, BTreeMap<&str, &str>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            Some((name, parse_labels(labels), value))
        })
}

/// `a="x",b="y"` into a map (label values here never contain `",`).
fn parse_labels(text: &str) -> BTreeMap<&str, &str> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key.trim_start_matches(','), value.trim_end_matches('"')))
        })
        .collect()
}

/// The cumulative buckets (upper bound, count) of histogram `name` summed over every series
/// whose labels include `labels`.
pub fn histogram_buckets(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (metric, found, value) in samples(text) {
        if metric != bucket || !labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            continue;
        }
        let Some(le) = found.get("le").and_then(|le| le.parse::<f64>().ok()) else {
            continue;
        };
        let entry = buckets.entry(le.to_bits()).or_insert((le, 0.0));
        entry.1 += value;
    }
    let mut sorted: Vec<(f64, f64)> = buckets.into_values().collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted
}

/// The observations between two scrapes of the same histogram: `after - before` per bucket.
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c);
            (le, count - earlier)
        })
        .collect()
}

/// The `q`-quantile of cumulative `buckets`, interpolated linearly inside the bucket it falls
/// in, as Prometheus' `histogram_quantile` does; the largest finite bound when it falls in
/// `+Inf`; `None` without observations.
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            let fraction = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// `apiserver_request_total` summed by (verb, resource[/subresource]).
pub fn requests_by_verb_and_resource(text: &str) -> BTreeMap<(String, String), f64> {
    let mut totals = BTreeMap::new();
    for (metric, labels, value) in samples(text) {
        if metric != "apiserver_request_total" {
            continue;
        }
        let resource = match labels.get("subresource").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{}/{sub}", labels.get("resource").unwrap_or(&"")),
            None => labels.get("resource").unwrap_or(&"").to_string(),
        };
        let verb = labels.get("verb").unwrap_or(&"").to_string();
        *totals.entry((verb, resource)).or_insert(0.0) += value;
    }
    totals
}

/// The sum of every series of counter `name` whose labels include `labels`.
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .filter(|(metric, found, _)| {
            *metric == name && labels.iter().all(|(k, v)| found.get(k) == Some(v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// Every series of counter `name`, keyed by the value of `label`.
pub fn counter_by(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for (metric, labels, value) in samples(text) {
        if metric == name {
            let key = labels.get(label).unwrap_or(&"").to_string();
            *by.entry(key).or_insert(0.0) += value;
        }
    }
    by
}

/// Milliseconds with one decimal, for the table and the JSON.
pub fn millis(duration: Option<Duration>) -> Option<f64> {
    duration.map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0)
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub samples: usize,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Self {
        Latency {
            p50_ms: millis(quantile(samples, 0.50)),
            p99_ms: millis(quantile(samples, 0.99)),
            max_ms: millis(quantile(samples, 1.0)),
            samples: samples.len(),
        }
    }

    /// From a histogram's buckets (seconds).
    pub fn of_histogram(buckets: &[(f64, f64)]) -> Self {
        let ms = |q| histogram_quantile(buckets, q).map(|s| (s * 10_000.0).round() / 10.0);
        Latency {
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            max_ms: None,
            samples: buckets.last().map_or(0, |(_, count)| *count as usize),
        }
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub pods: usize,
    pub watches: usize,
    pub interval_seconds: u64,
    pub steady_seconds: f64,
    /// Client side, steady state, accepted reports.
    pub report_latency: Latency,
    /// Client side, every report of the run, by outcome (`200`, `503`, `timeout`...).
    pub reports_by_outcome: BTreeMap<String, u64>,
    /// Operator side (`procwatch_reports_total`), the whole run, by result.
    pub operator_reports_by_result: BTreeMap<String, f64>,
    pub operator_cpu_cores: f64,
    pub operator_peak_rss_mib: f64,
    /// Status writes seen by a watch on the API, steady state.
    pub status_writes_per_watch_per_second: f64,
    /// The same, for the watch written most often.
    pub busiest_watch_writes_per_second: f64,
    /// The same, for the watches whose pods changed nothing.
    pub unchanged_status_writes_per_watch_per_second: f64,
    /// The shortest time between two writes of one watch's status.
    pub min_seconds_between_writes: Option<f64>,
    pub status_bytes_per_second: f64,
    pub unchanged_status_bytes_per_second: f64,
    /// Each steady-state write of a watch whose pods changed nothing, with what it changed.
    pub unchanged_status_writes: Vec<String>,
    pub largest_status_bytes: usize,
    /// `procwatch_status_writes_total` by result, steady state.
    pub operator_status_writes: BTreeMap<String, f64>,
    /// `apiserver_request_total`, steady state, every client; "verb resource" -> requests.
    pub apiserver_requests: BTreeMap<String, f64>,
    /// What the harness itself requested during the steady state (node lease and status).
    pub harness_requests: BTreeMap<String, f64>,
    pub token_reviews_per_second: f64,
    pub token_reviews_total: f64,
    pub report_to_status: Latency,
    pub admission_operator: Latency,
    pub admission_apiserver: Latency,
    /// Pods the burst created without the agent (the webhook failed open).
    pub admitted_without_agent: usize,
    pub pods_reporting: u64,
}

impl Figures {
    /// The figures as a two-column Markdown table.
    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let latency = |l: &Latency| {
            format!(
                "p50 {} / p99 {} / max {}",
                ms(l.p50_ms),
                ms(l.p99_ms),
                ms(l.max_ms)
            )
        };
        let join = |map: &BTreeMap<String, f64>| {
            map.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut rows: Vec<(&str, String)> = vec![
            (
                "pods / watches / interval / steady state",
                format!(
                    "{} / {} / {} s / {:.0} s",
                    self.pods, self.watches, self.interval_seconds, self.steady_seconds
                ),
            ),
            (
                "pods reporting in the statuses",
                self.pods_reporting.to_string(),
            ),
            (
                "report latency, client side (steady state)",
                format!(
                    "{} ({} reports)",
                    latency(&self.report_latency),
                    self.report_latency.samples
                ),
            ),
            (
                "reports by answer, client side (whole run)",
                self.reports_by_outcome
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "reports by result, operator (whole run)",
                join(&self.operator_reports_by_result),
            ),
            (
                "operator CPU (steady state)",
                format!("{:.3} cores", self.operator_cpu_cores),
            ),
            (
                "operator peak RSS",
                format!("{:.1} MiB", self.operator_peak_rss_mib),
            ),
            (
                "status writes per watch per second (all / unchanged pods)",
                format!(
                    "{:.3} / {:.3}",
                    self.status_writes_per_watch_per_second,
                    self.unchanged_status_writes_per_watch_per_second
                ),
            ),
            (
                "status writes per second of the busiest watch",
                format!("{:.3}", self.busiest_watch_writes_per_second),
            ),
            (
                "shortest time between two writes of a status",
                self.min_seconds_between_writes
                    .map_or("-".into(), |s| format!("{s:.2} s")),
            ),
            (
                "status bytes written per second (all / unchanged pods)",
                format!(
                    "{:.0} / {:.0}",
                    self.status_bytes_per_second, self.unchanged_status_bytes_per_second
                ),
            ),
            (
                "largest status",
                format!("{} bytes", self.largest_status_bytes),
            ),
            (
                "operator status writes by result (steady state)",
                join(&self.operator_status_writes),
            ),
            (
                "API server requests (steady state, all clients)",
                join(&self.apiserver_requests),
            ),
            ("of which the harness's own", join(&self.harness_requests)),
            (
                "TokenReviews",
                format!(
                    "{:.3}/s in steady state, {} in the whole run",
                    self.token_reviews_per_second, self.token_reviews_total
                ),
            ),
            (
                "report to visible in the status",
                format!(
                    "{} ({} reports)",
                    latency(&self.report_to_status),
                    self.report_to_status.samples
                ),
            ),
            (
                "admission during the burst, operator",
                format!(
                    "p50 {} / p99 {} ({} admissions)",
                    ms(self.admission_operator.p50_ms),
                    ms(self.admission_operator.p99_ms),
                    self.admission_operator.samples
                ),
            ),
            (
                "admission during the burst, API server",
                format!(
                    "p50 {} / p99 {}",
                    ms(self.admission_apiserver.p50_ms),
                    ms(self.admission_apiserver.p99_ms)
                ),
            ),
            (
                "pods admitted without the agent",
                self.admitted_without_agent.to_string(),
            ),
        ];
        let mut out = String::from("| figure | value |\n|---|---|\n");
        for (name, value) in rows.drain(..) {
            let _ = writeln!(out, "| {name} | {value} |");
        }
        out
    }
}

/// The differences between two JSON values, as `path: old -> new` (values cut to a few dozen
/// characters), at most `limit` of them: what a status write changed.
pub fn json_changes(old: &serde_json::Value, new: &serde_json::Value, limit: usize) -> Vec<String> {
    let mut changes = Vec::new();
    collect_changes(old, new, "", limit, &mut changes);
    changes
}

fn collect_changes(
    old: &serde_json::Value,
    new: &serde_json::Value,
    path: &str,
    limit: usize,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    if out.len() >= limit || old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let (x, y) = (
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                );
                collect_changes(x, y, &format!("{path}.{key}"), limit, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                collect_changes(x, y, &format!("{path}[{i}]"), limit, out);
            }
        }
        _ => out.push(format!("{path}: {} -> {}", shown(old), shown(new))),
    }
}

/// A JSON value cut to a length that reads on one line.
fn shown(value: &serde_json::Value) -> String {
    const MAX: usize = 60;
    let text = match value {
        serde_json::Value::Array(items) => format!("[{} items]", items.len()),
        other => other.to_string(),
    };
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP x y
# TYPE h histogram
h_bucket{name="pods.procwatch.dev",type="admit",le="0.001"} 2
h_bucket{name="pods.procwatch.dev",type="admit",le="0.01"} 8
h_bucket{name="pods.procwatch.dev",type="admit",le="+Inf"} 10
h_bucket{name="other",type="admit",le="0.001"} 100
h_bucket{name="other",type="admit",le="0.01"} 100
h_bucket{name="other",type="admit",le="+Inf"} 100
apiserver_request_total{code="201",component="apiserver",resource="tokenreviews",subresource="",verb="POST"} 7
apiserver_request_total{code="200",component="apiserver",resource="processwatches",subresource="status",verb="PATCH"} 3
apiserver_request_total{code="409",component="apiserver",resource="processwatches",subresource="status",verb="PATCH"} 1
"#;

    #[test]
    fn json_changes_name_the_paths_that_differ() {
        let old = serde_json::json!({
            "processes": 60,
            "pods": [{"name": "a", "reportedAt": "2026-11-30T10:00:00Z"}, {"name": "b"}],
            "conditions": [{"type": "Ready"}],
        });
        let new = serde_json::json!({
            "processes": 60,
            "pods": [{"name": "a", "reportedAt": "2026-11-30T10:05:00Z"}, {"name": "b", "pidsPerMinute": 0}],
            "conditions": [{"type": "Ready"}, {"type": "Degraded"}],
        });
        assert_eq!(
            json_changes(&old, &new, 8),
            [
                ".conditions: [1 items] -> [2 items]",
                ".pods[0].reportedAt: \"2026-11-30T10:00:00Z\" -> \"2026-11-30T10:05:00Z\"",
                ".pods[1].pidsPerMinute: null -> 0",
            ]
        );
        assert_eq!(json_changes(&old, &new, 1).len(), 1);
        assert!(json_changes(&old, &old, 8).is_empty());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&samples, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&samples, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&samples, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(
            quantile(&[Duration::from_millis(7)], 0.99),
            Some(Duration::from_millis(7))
        );
    }

    #[test]
    fn histogram_of_one_label_set_and_its_quantiles() {
        let buckets = histogram_buckets(SCRAPE, "h", &[("name", "pods.procwatch.dev")]);
        assert_eq!(
            buckets,
            vec![(0.001, 2.0), (0.01, 8.0), (f64::INFINITY, 10.0)]
        );
        // Rank 5 of 10 lies half way into the second bucket (ranks 3..=8).
        let p50 = histogram_quantile(&buckets, 0.5).unwrap();
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        // Rank 9.9 is in +Inf: the largest finite bound.
        assert_eq!(histogram_quantile(&buckets, 0.99), Some(0.01));
        assert_eq!(histogram_quantile(&[], 0.5), None);
    }

    #[test]
    fn deltas_between_scrapes() {
        let before = vec![(0.001, 1.0), (0.01, 4.0), (f64::INFINITY, 4.0)];
        let after = histogram_buckets(SCRAPE, "h", &[("name", "pods.procwatch.dev")]);
        assert_eq!(
            bucket_delta(&before, &after),
            vec![(0.001, 1.0), (0.01, 4.0), (f64::INFINITY, 6.0)]
        );
    }

    #[test]
    fn requests_and_counters() {
        let requests = requests_by_verb_and_resource(SCRAPE);
        assert_eq!(
            requests[&("PATCH".to_string(), "processwatches/status".to_string())],
            4.0
        );
        assert_eq!(
            requests[&("POST".to_string(), "tokenreviews".to_string())],
            7.0
        );
        assert_eq!(
            counter(
                SCRAPE,
                "apiserver_request_total",
                &[("resource", "tokenreviews")]
            ),
            7.0
        );
        let by_code = counter_by(SCRAPE, "apiserver_request_total", "code");
        assert_eq!(by_code["409"], 1.0);
    }

    #[test]
    fn table_lists_every_figure() {
        let figures = Figures {
            pods: 50,
            report_latency: Latency::of(&[Duration::from_millis(12)]),
            ..Figures::default()
        };
        let table = figures.table();
        assert!(table.contains("| report latency, client side (steady state) | p50 12.0 ms / p99 12.0 ms / max 12.0 ms (1 reports) |"), "{table}");
        assert_eq!(table.lines().count(), 2 + 20, "{table}");
    }
}
