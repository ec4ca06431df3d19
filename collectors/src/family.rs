//! Small builders for the protobuf metric families collectors hand to the registry.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// An empty family with room for `capacity` series.
pub fn family(name: &str, help: &str, kind: MetricType, capacity: usize) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.mut_metric().reserve(capacity);
    f
}

/// One label pair.
pub fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

/// A gauge series.
pub fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    m
}

/// A counter series.
pub fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

/// A histogram series from cumulative bucket counts.
pub fn histogram(
    labels: Vec<LabelPair>,
    bounds: &[f64],
    cumulative: &[u64],
    count: u64,
    sum: f64,
) -> Metric {
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(sum);
    let buckets = bounds
        .iter()
        .zip(cumulative)
        .map(|(bound, n)| {
            let mut b = Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(*n);
            b
        })
        .collect();
    h.set_bucket(buckets);
    let mut m = Metric::from_label(labels);
    m.set_histogram(h);
    m
}
