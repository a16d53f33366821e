//! Counters, gauges and histograms, served at `GET /metrics` in Prometheus' text format.
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

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Latency buckets in seconds, from a fast RPC to a statement timeout.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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

#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Per bucket (not cumulative); the last is +Inf.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum of observations, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn observe_since(&self, start: std::time::Instant) {
        self.observe(start.elapsed().as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

type ReadFn = Box<dyn Fn() -> f64 + Send + Sync>;

enum Value {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    /// Read at scrape time (e.g. pool usage, which its owner already tracks).
    GaugeFn(ReadFn),
    Histogram(Arc<Histogram>),
}

struct Series {
    labels: String,
    value: Value,
}

struct Family {
    name: String,
    help: String,
    kind: &'static str,
    series: Vec<Series>,
}

#[derive(Default)]
pub struct Metrics {
    families: Mutex<Vec<Family>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Counter> {
        self.register(
            name,
            help,
            "counter",
            labels,
            || Value::Counter(Arc::default()),
            |v| match v {
                Value::Counter(c) => Some(c.clone()),
                _ => None,
            },
        )
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Gauge> {
        self.register(
            name,
            help,
            "gauge",
            labels,
            || Value::Gauge(Arc::default()),
            |v| match v {
                Value::Gauge(g) => Some(g.clone()),
                _ => None,
            },
        )
    }

    /// A gauge whose value `read` gives at scrape time; registering again replaces it.
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        let labels = render_labels(labels);
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = family_mut(&mut families, name, help, "gauge");
        family.series.retain(|s| s.labels != labels);
        family.series.push(Series {
            labels,
            value: Value::GaugeFn(Box::new(read)),
        });
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Arc<Histogram> {
        self.register(
            name,
            help,
            "histogram",
            labels,
            || Value::Histogram(Arc::new(Histogram::new(bounds))),
            |v| match v {
                Value::Histogram(h) => Some(h.clone()),
                _ => None,
            },
        )
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

    fn register<T>(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Value,
        get: impl Fn(&Value) -> Option<Arc<T>>,
    ) -> Arc<T> {
        let labels = render_labels(labels);
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = family_mut(&mut families, name, help, kind);
        if let Some(existing) = family.series.iter().find(|s| s.labels == labels) {
            if let Some(handle) = get(&existing.value) {
                return handle;
            }
        }
        let value = make();
        let handle = get(&value).expect("made the kind asked for");
        family.series.push(Series { labels, value });
        handle
    }

    /// Everything registered, in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for f in families.iter() {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help.replace('\n', " "));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for s in &f.series {
                match &s.value {
                    Value::Counter(c) => series_line(&mut out, &f.name, &s.labels, c.get() as f64),
                    Value::Gauge(g) => series_line(&mut out, &f.name, &s.labels, g.get() as f64),
                    Value::GaugeFn(read) => series_line(&mut out, &f.name, &s.labels, read()),
                    Value::Histogram(h) => render_histogram(&mut out, &f.name, &s.labels, h),
                }
            }
        }
        out
    }
}

fn family_mut<'a>(
    families: &'a mut Vec<Family>,
    name: &str,
    help: &str,
    kind: &'static str,
) -> &'a mut Family {
    debug_assert!(valid_name(name), "invalid metric name {name}");
    let i = match families.iter().position(|f| f.name == name) {
        Some(i) => i,
        None => {
            families.push(Family {
                name: name.to_string(),
                help: help.to_string(),
                kind,
                series: Vec::new(),
            });
            families.len() - 1
        }
    };
    &mut families[i]
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y"}` with values escaped, or empty.
fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            debug_assert!(valid_name(k), "invalid label name {k}");
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn series_line(out: &mut String, name: &str, labels: &str, value: f64) {
    let _ = writeln!(out, "{name}{labels} {}", format_value(value));
}

fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    // Bucket label goes beside the series' own labels.
    let with_le = |le: &str| {
        if labels.is_empty() {
            format!("{{le=\"{le}\"}}")
        } else {
            format!("{},le=\"{le}\"}}", &labels[..labels.len() - 1])
        }
    };
    let mut cumulative = 0;
    for (i, bound) in h.bounds.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            with_le(&bound.to_string())
        );
    }
    cumulative += h.buckets[h.bounds.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{} {cumulative}", with_le("+Inf"));
    let sum = f64::from_bits(h.sum.load(Ordering::Relaxed));
    let _ = writeln!(out, "{name}_sum{labels} {sum}");
    let _ = writeln!(out, "{name}_count{labels} {cumulative}");
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
