//! Small builders for what collectors hand out: protobuf metric families for the
//! registry, and the text format written directly for the scrape path ([`TextOut`]),
//! with the text kept between scrapes while nothing it shows changed ([`TextCache`]).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use prometheus::core::Desc;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

/// The descriptor of a family with these label names, for [`crate::collect::Collect::describe`].
///
/// # Panics
/// On an invalid metric or label name: names are constants of this program.
pub fn describe(name: &str, help: &str, labels: &[&str]) -> Desc {
    let labels = labels.iter().map(|l| l.to_string()).collect();
    Desc::new(name.into(), help.into(), labels, Default::default())
        .unwrap_or_else(|e| panic!("family {name}: {e}"))
}

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

// ---------------------------------------------------------------------------------------
// The text format, written directly (the scrape path)
// ---------------------------------------------------------------------------------------

/// One scrape in the Prometheus text format, as collectors write it: one buffer, and
/// where each family's text lies (in it, or in a text kept from an earlier scrape, see
/// [`TextCache`]), so that the families can be served in name order (as
/// `Registry::gather` orders them) without building protobuf structures or copying text.
///
/// Collectors with many series write them through [`TextOut::family`], whose
/// [`FamilyText`] takes label values only as [`Label`]s or `&str` pairs and escapes them
/// itself: no collector writes raw text. Others hand whole families to
/// [`TextOut::push_family`], which encodes them with the prometheus crate's
/// `TextEncoder`. Either way the bytes are the ones `TextEncoder` writes for
/// `Registry::gather`'s families.
#[derive(Debug, Default)]
pub struct TextOut {
    buf: Vec<u8>,
    families: Vec<TextFamily>,
}

#[derive(Clone, Debug)]
struct TextFamily {
    name: Cow<'static, str>,
    /// Where its bytes are: a [`FrozenText`]'s buffer, else the output's own.
    frozen: Option<Arc<[u8]>>,
    /// Where its `# HELP` line starts.
    start: usize,
    /// Where its first series starts.
    series: usize,
    end: usize,
}

/// A position in a [`TextOut`], to drop what a failing collector wrote after it.
#[derive(Clone, Copy, Debug)]
pub struct TextMark(usize, usize);

impl TextOut {
    /// An empty output with room for `bytes` of text.
    pub fn with_capacity(bytes: usize) -> TextOut {
        TextOut {
            buf: Vec::with_capacity(bytes),
            families: Vec::with_capacity(32),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Starts a family: writes its `# HELP` and `# TYPE` lines; its series follow through
    /// the returned writer. The family closes when the writer is dropped; one without
    /// series is dropped whole, as the registry drops it.
    pub fn family(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: &str,
        kind: MetricType,
    ) -> FamilyText<'_> {
        let name = name.into();
        let start = self.buf.len();
        let buf = &mut self.buf;
        if !help.is_empty() {
            buf.extend_from_slice(b"# HELP ");
            buf.extend_from_slice(name.as_bytes());
            buf.push(b' ');
            escape_into(buf, help, false);
            buf.push(b'\n');
        }
        buf.extend_from_slice(b"# TYPE ");
        buf.extend_from_slice(name.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(type_name(kind).as_bytes());
        buf.push(b'\n');
        let series = self.buf.len();
        FamilyText {
            out: self,
            name: Some(name),
            start,
            series,
        }
    }

    /// Appends a protobuf family, its series sorted as `Registry::gather` sorts them and
    /// encoded by the prometheus crate's `TextEncoder`. An empty family is dropped.
    pub fn push_family(&mut self, mut family: MetricFamily) -> prometheus::Result<()> {
        if family.get_metric().is_empty() {
            return Ok(());
        }
        sort_like_gather(&mut family);
        let start = self.buf.len();
        let encoded = TextEncoder::new().encode(std::slice::from_ref(&family), &mut self.buf);
        if let Err(e) = encoded {
            self.buf.truncate(start);
            return Err(e);
        }
        // The series start after the `# TYPE` line (after `# HELP` too, when there is help;
        // neither holds a raw newline: help text is escaped).
        let mut series = start;
        for _ in 0..if family.help().is_empty() { 1 } else { 2 } {
            series += self.buf[series..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
        }
        self.families.push(TextFamily {
            name: Cow::Owned(family.name().to_owned()),
            frozen: None,
            start,
            series,
            end: self.buf.len(),
        });
        Ok(())
    }

    /// The current position.
    pub fn mark(&self) -> TextMark {
        TextMark(self.buf.len(), self.families.len())
    }

    /// Drops everything written after `mark`.
    pub fn rollback(&mut self, mark: TextMark) {
        self.buf.truncate(mark.0);
        self.families.truncate(mark.1);
    }

    /// The text written so far, made shareable: [`TextOut::push_frozen`] adds its
    /// families to later outputs without writing or copying them again.
    pub fn freeze(self) -> FrozenText {
        let buf: Arc<[u8]> = Arc::from(self.buf);
        let families = self
            .families
            .into_iter()
            .map(|f| TextFamily {
                frozen: Some(buf.clone()),
                ..f
            })
            .collect();
        FrozenText { families }
    }

    /// Adds the families of `frozen`, shared, not copied.
    pub fn push_frozen(&mut self, frozen: &FrozenText) {
        self.families.extend(frozen.families.iter().cloned());
    }

    /// The families in name order, as `Registry::gather` returns them. A family written
    /// more than once (by two collectors) is a clash: its series follow one another under
    /// the first header, as `gather` merges them, and [`OrderedText::clashes`] names it.
    pub fn into_ordered(mut self) -> OrderedText {
        self.families.sort_by(|a, b| a.name.cmp(&b.name));
        let mut pieces: Vec<Piece> = Vec::with_capacity(self.families.len());
        let mut clashes: Vec<String> = Vec::new();
        let mut previous: Option<&str> = None;
        for f in &self.families {
            let from = if previous == Some(f.name.as_ref()) {
                if clashes.last().map(String::as_str) != Some(f.name.as_ref()) {
                    clashes.push(f.name.to_string());
                }
                f.series
            } else {
                f.start
            };
            previous = Some(f.name.as_ref());
            match pieces.last_mut() {
                Some(last) if last.range.end == from && same_buffer(&last.frozen, &f.frozen) => {
                    last.range.end = f.end
                }
                _ => pieces.push(Piece {
                    frozen: f.frozen.clone(),
                    range: from..f.end,
                }),
            }
        }
        let len = pieces.iter().map(|p| p.range.len()).sum();
        OrderedText {
            buf: self.buf,
            pieces,
            len,
            clashes,
        }
    }
}

fn same_buffer(a: &Option<Arc<[u8]>>, b: &Option<Arc<[u8]>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Families written once and shared by the scrapes that follow (see [`TextCache`]).
#[derive(Debug)]
pub struct FrozenText {
    families: Vec<TextFamily>,
}

impl FrozenText {
    /// Size of the buffer its families lie in.
    fn bytes(&self) -> usize {
        let buffer = self.families.first().and_then(|f| f.frozen.as_ref());
        buffer.map_or(0, |b| b.len())
    }
}

/// A collector's text, kept while what it was written from stays the same: scrapes
/// between two changes (a crowd of scrapers, an HA pair) share one rendering instead
/// of writing megabytes each.
#[derive(Debug)]
pub struct TextCache<K> {
    last: Mutex<Option<(K, FrozenText)>>,
}

impl<K> Default for TextCache<K> {
    fn default() -> Self {
        TextCache {
            last: Mutex::new(None),
        }
    }
}

impl<K: PartialEq> TextCache<K> {
    /// Adds to `out` the text `write` writes for `key`: the kept one if it was written
    /// for an equal key, else a new one, kept for the next scrape. `key` must hold
    /// everything the text is written from. On error nothing is added or kept.
    pub fn write<E>(
        &self,
        key: K,
        out: &mut TextOut,
        write: impl FnOnce(&K, &mut TextOut) -> Result<(), E>,
    ) -> Result<(), E> {
        // A panic in `write` leaves the last text and key as they were.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let kept = match &*last {
            Some((kept_key, text)) if *kept_key == key => text,
            _ => {
                let size = last.as_ref().map_or(0, |(_, text)| text.bytes());
                let mut fresh = TextOut::with_capacity(size);
                write(&key, &mut fresh)?;
                &last.insert((key, fresh.freeze())).1
            }
        };
        out.push_frozen(kept);
        Ok(())
    }
}

/// A family being written into a [`TextOut`]; it closes when dropped.
///
/// Every label value goes through the text format's escaping here: [`Label`]s escape once
/// when made, `&str` pairs as they are written. Series must come in the order
/// `Registry::gather` sorts them (by label values); the writer does not sort.
#[derive(Debug)]
pub struct FamilyText<'a> {
    out: &'a mut TextOut,
    /// Taken when the family closes.
    name: Option<Cow<'static, str>>,
    start: usize,
    series: usize,
}

impl FamilyText<'_> {
    /// The writer of this family's series.
    pub fn lines(&mut self) -> Lines<'_> {
        Lines {
            name: self.name.as_deref().unwrap_or_default(),
            buf: &mut self.out.buf,
        }
    }

    /// One series: `labels` in order, then `value`.
    pub fn series(&mut self, labels: &[&Label], value: f64) {
        self.lines().series(labels, value)
    }

    /// One series whose last labels are only known now (escaped as they are written).
    pub fn series_with(&mut self, labels: &[&Label], more: &[(&str, &str)], value: f64) {
        self.lines().series_with(labels, more, value)
    }
}

/// Writes the series lines of one family (see [`FamilyText::lines`]).
#[derive(Debug)]
pub struct Lines<'a> {
    name: &'a str,
    buf: &'a mut Vec<u8>,
}

impl Lines<'_> {
    /// One series: `labels` in order, then `value`.
    pub fn series(&mut self, labels: &[&Label], value: f64) {
        self.line("", labels, &[], None, value);
    }

    /// One series whose last labels are only known now (escaped as they are written).
    pub fn series_with(&mut self, labels: &[&Label], more: &[(&str, &str)], value: f64) {
        self.line("", labels, more, None, value);
    }

    /// The series of one histogram: a cumulative count per bucket of `buckets`, the
    /// `+Inf` bucket (`count`), then `_sum` and `_count`, as `TextEncoder` writes them.
    pub fn histogram(
        &mut self,
        labels: &[&Label],
        buckets: &Buckets,
        cumulative: &[u64],
        count: u64,
        sum: f64,
    ) {
        let count = count as f64;
        for (le, n) in buckets.0.iter().zip(cumulative) {
            self.line("_bucket", labels, &[], Some(le), *n as f64);
        }
        self.line("_bucket", labels, &[], Some(&buckets.1), count);
        self.line("_sum", labels, &[], None, sum);
        self.line("_count", labels, &[], None, count);
    }

    /// `name` `suffix` `{labels,more,last}` `value`; no braces without labels.
    fn line(
        &mut self,
        suffix: &str,
        labels: &[&Label],
        more: &[(&str, &str)],
        last: Option<&Label>,
        value: f64,
    ) {
        let buf = &mut *self.buf;
        buf.extend_from_slice(self.name.as_bytes());
        buf.extend_from_slice(suffix.as_bytes());
        let mut separator = b'{';
        for label in labels.iter().copied() {
            buf.push(separator);
            buf.extend_from_slice(label.0.as_bytes());
            separator = b',';
        }
        for (name, value) in more {
            buf.push(separator);
            write_pair(buf, name, value);
            separator = b',';
        }
        if let Some(last) = last {
            buf.push(separator);
            buf.extend_from_slice(last.0.as_bytes());
            separator = b',';
        }
        if separator == b',' {
            buf.push(b'}');
        }
        buf.push(b' ');
        write_value(buf, value);
        buf.push(b'\n');
    }
}

impl Drop for FamilyText<'_> {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let out = &mut *self.out;
        if out.buf.len() == self.series {
            out.buf.truncate(self.start);
            return;
        }
        out.families.push(TextFamily {
            name,
            frozen: None,
            start: self.start,
            series: self.series,
            end: out.buf.len(),
        });
    }
}

/// A `name="value"` label pair, its value escaped when it is made: made once (per token,
/// per label value) and written into many series. The only way, with the `&str` pairs of
/// [`FamilyText::series_with`], that a label reaches the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label(Box<str>);

impl Label {
    pub fn new(name: &str, value: &str) -> Label {
        let mut out = Vec::with_capacity(name.len() + value.len() + 3);
        write_pair(&mut out, name, value);
        Label(
            String::from_utf8(out)
                .expect("escaping keeps UTF-8")
                .into_boxed_str(),
        )
    }

    /// The pair as it appears in a series.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `le` labels of a histogram's buckets, `+Inf` last, as `TextEncoder` writes them.
#[derive(Clone, Debug)]
pub struct Buckets(Vec<Label>, Label);

impl Buckets {
    /// The buckets with these upper bounds.
    pub fn new(bounds: &[f64]) -> Buckets {
        let le = bounds
            .iter()
            .map(|b| Label::new("le", &b.to_string()))
            .collect();
        Buckets(le, Label::new("le", "+Inf"))
    }
}

/// `name="value"`, the value escaped.
fn write_pair(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "label name {name:?}"
    );
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    escape_into(out, value, true);
    out.push(b'"');
}

/// A scrape's text in family order: pieces of its own buffer and of frozen ones, sent
/// without copying them into one buffer first.
#[derive(Debug)]
pub struct OrderedText {
    buf: Vec<u8>,
    pieces: Vec<Piece>,
    len: usize,
    clashes: Vec<String>,
}

#[derive(Debug)]
struct Piece {
    /// `None`: the text's own buffer.
    frozen: Option<Arc<[u8]>>,
    range: Range<usize>,
}

impl OrderedText {
    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Families written more than once: two collectors export the same name.
    pub fn clashes(&self) -> &[String] {
        &self.clashes
    }

    /// The text, piece by piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.pieces.len()).filter_map(|i| self.piece(i))
    }

    /// The `i`-th piece of [`OrderedText::pieces`].
    pub fn piece(&self, i: usize) -> Option<&[u8]> {
        let p = self.pieces.get(i)?;
        let buf = p.frozen.as_deref().unwrap_or(&self.buf);
        Some(&buf[p.range.clone()])
    }

    /// The kept text the `i`-th piece lies in, and where; `None` for text written by
    /// this scrape.
    pub fn kept_piece(&self, i: usize) -> Option<(&Arc<[u8]>, Range<usize>)> {
        let p = self.pieces.get(i)?;
        Some((p.frozen.as_ref()?, p.range.clone()))
    }

    /// The whole text in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for piece in self.pieces() {
            out.extend_from_slice(piece);
        }
        out
    }
}

/// Sorts a family's series by their label values, exactly as `Registry::gather` does.
pub fn sort_like_gather(family: &mut MetricFamily) {
    family.mut_metric().sort_by(|m1, m2| {
        let (l1, l2) = (m1.get_label(), m2.get_label());
        if l1.len() != l2.len() {
            return l1.len().cmp(&l2.len());
        }
        for (a, b) in l1.iter().zip(l2) {
            if a.value() != b.value() {
                return a.value().cmp(b.value());
            }
        }
        m1.timestamp_ms().cmp(&m2.timestamp_ms())
    });
}

/// The `# TYPE` word of a metric type, as `TextEncoder` writes it.
fn type_name(kind: MetricType) -> &'static str {
    match kind {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
        MetricType::HISTOGRAM => "histogram",
    }
}

/// Appends `text` escaped as the text format wants it: `\` and newline always, `"` in
/// label values.
fn escape_into(out: &mut Vec<u8>, text: &str, label_value: bool) {
    let special = |b: u8| b == b'\\' || b == b'\n' || (label_value && b == b'"');
    if !text.bytes().any(special) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if label_value => out.extend_from_slice(b"\\\""),
            b => out.push(b),
        }
    }
}

/// Appends `v` exactly as `TextEncoder` writes it (`f64`'s `Display`), integers without
/// going through the formatter.
fn write_value(out: &mut Vec<u8>, v: f64) {
    // Integral values below 2^53 print as the integer; -0 prints as "-0".
    if v.fract() == 0.0 && v.abs() < 9.0e15 && !(v == 0.0 && v.is_sign_negative()) {
        let mut n = v as i64;
        if n < 0 {
            out.push(b'-');
            n = -n;
        }
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n as u64;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[i..]);
    } else {
        use std::io::Write;
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_the_text_encoder_writes_them() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            7.0,
            10.0,
            1234567.0,
            0.5,
            0.005,
            1.0e15,
            8.999e15,
            9.0e15,
            1.0e16,
            1.0e21,
            1e-7,
            1_700_000_000.123_456,
            u64::MAX as f64,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
        ] {
            let mut out = Vec::new();
            write_value(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string(), "{v:?}");
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(
            Label::new("vault", "a\"b\\c\nd").as_str(),
            "vault=\"a\\\"b\\\\c\\nd\""
        );
        let mut out = Vec::new();
        escape_into(&mut out, "say \"hi\"\\\n", false);
        assert_eq!(out, b"say \"hi\"\\\\\\n");
    }

    #[test]
    fn families_come_out_in_name_order_and_empty_ones_are_dropped() {
        let mut out = TextOut::default();
        out.family("b_total", "B.", MetricType::COUNTER)
            .series(&[&Label::new("x", "1")], 2.0);
        drop(out.family("empty", "Nothing.", MetricType::GAUGE));
        let mut a = family("a", "A.", MetricType::GAUGE, 2);
        a.mut_metric().push(gauge(vec![label("k", "z")], 1.0));
        a.mut_metric().push(gauge(vec![label("k", "y")], 0.5));
        out.push_family(a).unwrap();
        out.family("b_total", "B.", MetricType::COUNTER)
            .series_with(&[], &[("x", "2")], 3.0);
        let ordered = out.into_ordered();
        assert_eq!(ordered.clashes(), ["b_total"], "written twice");
        let len = ordered.len();
        let read = ordered.to_vec();
        let expected = "# HELP a A.\n# TYPE a gauge\na{k=\"y\"} 0.5\na{k=\"z\"} 1\n\
                        # HELP b_total B.\n# TYPE b_total counter\nb_total{x=\"1\"} 2\nb_total{x=\"2\"} 3\n";
        assert_eq!(String::from_utf8(read).unwrap(), expected);
        assert_eq!(len, expected.len());
    }

    #[test]
    fn the_typed_writer_writes_what_the_text_encoder_writes() {
        let hostile = "a\"b\\c\nd},x=\"1";
        let text = |out: TextOut| String::from_utf8(out.into_ordered().to_vec()).unwrap();
        let mut typed = TextOut::default();
        typed
            .family("bare", "No \\ labels\n.", MetricType::GAUGE)
            .series(&[], 1.5);
        {
            let mut f = typed.family("pairs", "P.", MetricType::COUNTER);
            // In gather's order: fewer labels first.
            f.series_with(&[], &[("k", "z")], 3.0);
            f.series_with(&[&Label::new("k", hostile)], &[("m", hostile)], 2.0);
        }
        let mut encoded = TextOut::default();
        let mut bare = family("bare", "No \\ labels\n.", MetricType::GAUGE, 1);
        bare.mut_metric().push(gauge(Vec::new(), 1.5));
        encoded.push_family(bare).unwrap();
        let mut pairs = family("pairs", "P.", MetricType::COUNTER, 2);
        let hostile_pair = vec![label("k", hostile), label("m", hostile)];
        pairs.mut_metric().push(counter(hostile_pair, 2.0));
        pairs.mut_metric().push(counter(vec![label("k", "z")], 3.0));
        encoded.push_family(pairs).unwrap();
        assert_eq!(text(typed), text(encoded));
    }

    #[test]
    fn a_kept_text_is_shared_until_its_key_changes() {
        let cache = TextCache::default();
        let writes = std::cell::Cell::new(0);
        let scrape = |key: u32| {
            let mut out = TextOut::default();
            out.family("fresh", "F.", MetricType::GAUGE)
                .series(&[], 1.0);
            let kept = cache.write(key, &mut out, |key, kept| {
                writes.set(writes.get() + 1);
                kept.family("kept", "K.", MetricType::GAUGE)
                    .series(&[], f64::from(*key));
                Ok::<_, ()>(())
            });
            assert_eq!(kept, Ok(()));
            String::from_utf8(out.into_ordered().to_vec()).unwrap()
        };
        let first = "# HELP fresh F.\n# TYPE fresh gauge\nfresh 1\n\
                     # HELP kept K.\n# TYPE kept gauge\nkept 7\n";
        assert_eq!(scrape(7), first);
        assert_eq!(scrape(7), first);
        assert_eq!(writes.get(), 1, "the same key: written once");
        assert!(scrape(8).ends_with("kept 8\n"));
        assert_eq!(writes.get(), 2, "a new key: written again");

        let mut out = TextOut::default();
        let failed = cache.write(9, &mut out, |_, kept| {
            kept.family("half", "H.", MetricType::GAUGE)
                .series(&[], 1.0);
            Err("broken")
        });
        assert_eq!(failed, Err("broken"));
        assert!(out.into_ordered().is_empty(), "nothing of a failed write");
        assert!(scrape(8).ends_with("kept 8\n"), "the last text is kept");
        assert_eq!(writes.get(), 2);
    }

    #[test]
    fn a_rollback_drops_what_was_written_after_the_mark() {
        let mut out = TextOut::default();
        out.family("a", "A.", MetricType::GAUGE)
            .series(&[&Label::new("x", "1")], 1.0);
        let mark = out.mark();
        out.family("b", "B.", MetricType::GAUGE)
            .series(&[&Label::new("x", "1")], 1.0);
        out.rollback(mark);
        let text = String::from_utf8(out.into_ordered().to_vec()).unwrap();
        assert_eq!(text, "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\n");
    }
}
