//! Counters, gauges and histograms, served at `GET /metrics` in Prometheus' text format
//! (rendered by `metrics-exporter-prometheus`, one recorder per gateway, never a global one:
//! tests run several gateways in one process).
//!
//! Any module registers what it counts once, keeps the returned handle, and updates it with
//! plain atomics (no lock on the hot path):
//!
//! ```
//! let metrics = ripple::metrics::Metrics::default();
//! let sent = metrics.counter("ripple_realtime_messages_sent_total", "Messages sent to sockets.", &[]);
//! sent.inc();
//! assert!(metrics.render().contains("ripple_realtime_messages_sent_total 1"));
//! ```
//!
//! Registering the same name and labels twice returns the same handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Key, Label, Metadata, Recorder as _};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Latency buckets in seconds, from a fast RPC to a statement timeout.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Observations a histogram takes before its samples are folded into its buckets (the
/// exporter keeps raw samples until then; a scrape folds them too).
const HISTOGRAM_FOLD_EVERY: u64 = 4096;

/// A plain atomic, so the hot path is one add; its value is handed to the exporter at
/// scrape time. (A default one, never registered, counts without being served.)
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Histogram {
    inner: metrics::Histogram,
    /// The recorder of this histogram's family, to fold samples now and then.
    family: PrometheusHandle,
    observed: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: f64) {
        self.inner.record(value);
        if self.observed.fetch_add(1, Ordering::Relaxed) % HISTOGRAM_FOLD_EVERY
            == HISTOGRAM_FOLD_EVERY - 1
        {
            self.family.run_upkeep();
        }
    }

    pub fn observe_since(&self, start: std::time::Instant) {
        self.observe(start.elapsed().as_secs_f64());
    }
}

/// A metric name and its labels, in order.
type SeriesId = (String, Vec<(String, String)>);

type ReadFn = Box<dyn Fn() -> f64 + Send + Sync>;

/// Every family registered here, rendered by `metrics-exporter-prometheus`. Counters and
/// gauges are our atomics, handed to one recorder at scrape time; each histogram family
/// records into a recorder of its own, built with that family's buckets (the exporter fixes
/// buckets per recorder when it is built).
pub struct Metrics {
    scalars: PrometheusRecorder,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Handles already given out, by (name, labels): registering again returns them.
    counters: HashMap<SeriesId, (Arc<Counter>, metrics::Counter)>,
    gauges: HashMap<SeriesId, (Arc<Gauge>, metrics::Gauge)>,
    histograms: HashMap<SeriesId, Arc<Histogram>>,
    /// One recorder per histogram family, in registration order.
    families: Vec<(String, PrometheusRecorder)>,
    /// Gauges read at scrape time, by (name, labels).
    read_at_scrape: Vec<(SeriesId, metrics::Gauge, ReadFn)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            scalars: PrometheusBuilder::new().build_recorder(),
            state: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn series(name: &str, labels: &[(&str, &str)]) -> SeriesId {
    debug_assert!(valid_name(name), "invalid metric name {name}");
    debug_assert!(
        labels.iter().all(|(k, _)| valid_name(k)),
        "invalid label name in {labels:?}"
    );
    (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
        .collect();
    Key::from_parts(name.to_string(), labels)
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

impl Metrics {
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Counter> {
        let mut state = self.lock();
        state
            .counters
            .entry(series(name, labels))
            .or_insert_with(|| {
                self.scalars.describe_counter(
                    name.to_string().into(),
                    None,
                    help.to_string().into(),
                );
                let exported = self
                    .scalars
                    .register_counter(&key(name, labels), &metadata());
                (Arc::default(), exported)
            })
            .0
            .clone()
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Gauge> {
        let mut state = self.lock();
        state
            .gauges
            .entry(series(name, labels))
            .or_insert_with(|| (Arc::default(), self.register_gauge(name, help, labels)))
            .0
            .clone()
    }

    /// A gauge whose value `read` gives at scrape time; registering again replaces it.
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        let gauge = self.register_gauge(name, help, labels);
        let id = series(name, labels);
        let mut state = self.lock();
        state.read_at_scrape.retain(|(s, _, _)| *s != id);
        state.read_at_scrape.push((id, gauge, Box::new(read)));
    }

    fn register_gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> metrics::Gauge {
        self.scalars
            .describe_gauge(name.to_string().into(), None, help.to_string().into());
        self.scalars.register_gauge(&key(name, labels), &metadata())
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Arc<Histogram> {
        let mut state = self.lock();
        let id = series(name, labels);
        if let Some(h) = state.histograms.get(&id) {
            return h.clone();
        }
        let i = match state.families.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                let recorder = PrometheusBuilder::new()
                    .set_buckets(bounds)
                    .expect("histogram buckets are given")
                    .build_recorder();
                recorder.describe_histogram(name.to_string().into(), None, help.to_string().into());
                state.families.push((name.to_string(), recorder));
                state.families.len() - 1
            }
        };
        let recorder = &state.families[i].1;
        let h = Arc::new(Histogram {
            inner: recorder.register_histogram(&key(name, labels), &metadata()),
            family: recorder.handle(),
            observed: AtomicU64::new(0),
        });
        state.histograms.insert(id, h.clone());
        h
    }

    /// Pool size, idle connections and waiting requests of the request pool.
    pub fn register_pool(&self, pool: &deadpool_postgres::Pool) {
        let p = pool.clone();
        self.gauge_fn(
            "ripple_db_pool_connections",
            "Connections open in the request pool.",
            &[],
            move || p.status().size as f64,
        );
        let p = pool.clone();
        self.gauge_fn(
            "ripple_db_pool_idle",
            "Open connections not in use.",
            &[],
            move || p.status().available as f64,
        );
        let p = pool.clone();
        self.gauge_fn(
            "ripple_db_pool_waiting",
            "Requests waiting for a connection.",
            &[],
            move || p.status().waiting as f64,
        );
        let p = pool.clone();
        self.gauge_fn(
            "ripple_db_pool_max",
            "Largest size of the request pool.",
            &[],
            move || p.status().max_size as f64,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything registered, in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let state = self.lock();
        for (counter, exported) in state.counters.values() {
            exported.absolute(counter.get());
        }
        for (gauge, exported) in state.gauges.values() {
            exported.set(gauge.get() as f64);
        }
        for (_, gauge, read) in &state.read_at_scrape {
            gauge.set(read());
        }
        let mut text = self.scalars.handle().render();
        for (_, recorder) in &state.families {
            text.push_str(&recorder.handle().render());
        }
        // The exporter separates families with a blank line; every line here is a comment
        // or a sample, as before, for scrapers that read line by line.
        let mut out = String::with_capacity(text.len());
        for line in text.lines().filter(|l| !l.is_empty()) {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_with_labels_render_once_per_family() {
        let m = Metrics::default();
        let ok = m.counter(
            "ripple_http_requests_total",
            "Requests.",
            &[("class", "2xx")],
        );
        let err = m.counter(
            "ripple_http_requests_total",
            "Requests.",
            &[("class", "5xx")],
        );
        ok.add(3);
        err.inc();
        // Registering again hands back the same counter.
        m.counter(
            "ripple_http_requests_total",
            "Requests.",
            &[("class", "2xx")],
        )
        .inc();
        let text = m.render();
        assert_eq!(
            text.matches("# TYPE ripple_http_requests_total counter")
                .count(),
            1
        );
        assert!(
            text.contains("ripple_http_requests_total{class=\"2xx\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("ripple_http_requests_total{class=\"5xx\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        let h = m.histogram("ripple_x_seconds", "X.", &[("route", "rest")], &[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let text = m.render();
        assert!(
            text.contains("ripple_x_seconds_bucket{route=\"rest\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ripple_x_seconds_bucket{route=\"rest\",le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("ripple_x_seconds_bucket{route=\"rest\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ripple_x_seconds_count{route=\"rest\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ripple_x_seconds_sum{route=\"rest\"} 5.55\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.gauge("ripple_g", "G.", &[("v", "a\"b\\c\nd")]).set(-2);
        assert!(m.render().contains("ripple_g{v=\"a\\\"b\\\\c\\nd\"} -2\n"));
    }

    #[test]
    fn gauge_fns_are_read_at_scrape_time() {
        let m = Metrics::default();
        let n = Arc::new(AtomicU64::new(1));
        let r = n.clone();
        m.gauge_fn("ripple_read", "R.", &[], move || {
            r.load(Ordering::Relaxed) as f64
        });
        assert!(m.render().contains("ripple_read 1\n"));
        n.store(7, Ordering::Relaxed);
        assert!(m.render().contains("ripple_read 7\n"));
    }
}
