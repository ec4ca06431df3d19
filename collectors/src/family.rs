//! Small builders for what collectors hand out: protobuf metric families for the
//! registry, and the text format written directly for the scrape path ([`TextOut`]).

use std::borrow::Cow;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

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
/// where each family's text lies, so that the families can be served in name order (as
/// `Registry::gather` orders them) without building protobuf structures or copying text.
///
/// Collectors with many series write them straight into [`TextOut::buf`] between
/// [`TextOut::begin_family`] and [`TextOut::end_family`] (with [`write_series`]);
/// others hand whole families to [`TextOut::push_family`], which encodes them with the
/// prometheus crate's `TextEncoder`. Either way the bytes are the ones `TextEncoder`
/// writes for `Registry::gather`'s families.
#[derive(Debug, Default)]
pub struct TextOut {
    buf: Vec<u8>,
    families: Vec<TextFamily>,
}

#[derive(Debug)]
struct TextFamily {
    name: Cow<'static, str>,
    /// Where its `# HELP` line starts.
    start: usize,
    /// Where its first series starts.
    series: usize,
    end: usize,
}

/// A family being written: hand it back to [`TextOut::end_family`].
#[derive(Debug)]
#[must_use]
pub struct OpenFamily {
    name: Cow<'static, str>,
    start: usize,
    series: usize,
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

    /// Writes the `# HELP` and `# TYPE` lines of a family; its series go to
    /// [`TextOut::buf`] until [`TextOut::end_family`].
    pub fn begin_family(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: &str,
        kind: MetricType,
    ) -> OpenFamily {
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
        OpenFamily {
            name,
            start,
            series: self.buf.len(),
        }
    }

    /// The buffer the series of the open family are written to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Closes a family; one without series is dropped, as the registry drops it.
    pub fn end_family(&mut self, family: OpenFamily) {
        if self.buf.len() == family.series {
            self.buf.truncate(family.start);
            return;
        }
        self.families.push(TextFamily {
            name: family.name,
            start: family.start,
            series: family.series,
            end: self.buf.len(),
        });
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

    /// The families in name order, as `Registry::gather` returns them; series of families
    /// written more than once (by two collectors) follow one another under one header.
    pub fn into_ordered(mut self) -> OrderedText {
        self.families.sort_by(|a, b| a.name.cmp(&b.name));
        let mut pieces: Vec<std::ops::Range<usize>> = Vec::with_capacity(self.families.len());
        let mut previous: Option<&str> = None;
        for f in &self.families {
            let from = if previous == Some(f.name.as_ref()) {
                f.series
            } else {
                f.start
            };
            previous = Some(f.name.as_ref());
            match pieces.last_mut() {
                Some(last) if last.end == from => last.end = f.end,
                _ => pieces.push(from..f.end),
            }
        }
        let len = pieces.iter().map(|r| r.len()).sum();
        OrderedText {
            buf: self.buf,
            pieces,
            piece: 0,
            pos: 0,
            len,
        }
    }
}

/// A scrape's text in family order, readable without copying it into one buffer first.
#[derive(Debug)]
pub struct OrderedText {
    buf: Vec<u8>,
    pieces: Vec<std::ops::Range<usize>>,
    piece: usize,
    /// Offset in the current piece.
    pos: usize,
    len: usize,
}

impl OrderedText {
    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole text in one buffer.
    pub fn into_vec(self) -> Vec<u8> {
        if self.pieces.len() == 1 && self.pieces[0] == (0..self.buf.len()) {
            return self.buf;
        }
        let mut out = Vec::with_capacity(self.len);
        for r in &self.pieces {
            out.extend_from_slice(&self.buf[r.clone()]);
        }
        out
    }
}

impl std::io::Read for OrderedText {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            let Some(range) = self.pieces.get(self.piece) else {
                break;
            };
            let rest = &self.buf[range.start + self.pos..range.end];
            let take = rest.len().min(out.len() - n);
            out[n..n + take].copy_from_slice(&rest[..take]);
            n += take;
            self.pos += take;
            if range.start + self.pos == range.end {
                self.piece += 1;
                self.pos = 0;
            }
        }
        Ok(n)
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
pub fn escape_into(out: &mut Vec<u8>, text: &str, label_value: bool) {
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

/// `{name="value"` with the value escaped: the opening of a series' label set, computed
/// once per token rather than once per series.
pub fn label_set_opening(name: &str, value: &str) -> Box<str> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 4);
    out.push(b'{');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    escape_into(&mut out, value, true);
    out.push(b'"');
    String::from_utf8(out)
        .expect("escaping keeps UTF-8")
        .into_boxed_str()
}

/// Writes one series line: `name` `suffix` `opening` [`,extra`] `} value`. `opening` is a
/// [`label_set_opening`]; `extra` is an already escaped `label="value"` pair.
pub fn write_series(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    opening: &str,
    extra: Option<&str>,
    value: f64,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    out.extend_from_slice(opening.as_bytes());
    if let Some(extra) = extra {
        out.push(b',');
        out.extend_from_slice(extra.as_bytes());
    }
    out.extend_from_slice(b"} ");
    write_value(out, value);
    out.push(b'\n');
}

/// Appends `v` exactly as `TextEncoder` writes it (`f64`'s `Display`), integers without
/// going through the formatter.
pub fn write_value(out: &mut Vec<u8>, v: f64) {
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
    use std::io::Read;

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
            &*label_set_opening("vault", "a\"b\\c\nd"),
            "{vault=\"a\\\"b\\\\c\\nd\""
        );
        let mut out = Vec::new();
        escape_into(&mut out, "say \"hi\"\\\n", false);
        assert_eq!(out, b"say \"hi\"\\\\\\n");
    }

    #[test]
    fn families_come_out_in_name_order_and_empty_ones_are_dropped() {
        let mut out = TextOut::default();
        let f = out.begin_family("b_total", "B.", MetricType::COUNTER);
        write_series(out.buf(), "b_total", "", "{x=\"1\"", None, 2.0);
        out.end_family(f);
        let f = out.begin_family("empty", "Nothing.", MetricType::GAUGE);
        out.end_family(f);
        let mut a = family("a", "A.", MetricType::GAUGE, 2);
        a.mut_metric().push(gauge(vec![label("k", "z")], 1.0));
        a.mut_metric().push(gauge(vec![label("k", "y")], 0.5));
        out.push_family(a).unwrap();
        let f = out.begin_family("b_total", "B.", MetricType::COUNTER);
        write_series(out.buf(), "b_total", "", "{x=\"2\"", None, 3.0);
        out.end_family(f);
        let ordered = out.into_ordered();
        let len = ordered.len();
        let mut read = Vec::new();
        let mut reader = ordered;
        let mut chunk = [0u8; 7];
        loop {
            let n = reader.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&chunk[..n]);
        }
        let expected = "# HELP a A.\n# TYPE a gauge\na{k=\"y\"} 0.5\na{k=\"z\"} 1\n\
                        # HELP b_total B.\n# TYPE b_total counter\nb_total{x=\"1\"} 2\nb_total{x=\"2\"} 3\n";
        assert_eq!(String::from_utf8(read).unwrap(), expected);
        assert_eq!(len, expected.len());
    }

    #[test]
    fn a_rollback_drops_what_was_written_after_the_mark() {
        let mut out = TextOut::default();
        let f = out.begin_family("a", "A.", MetricType::GAUGE);
        write_series(out.buf(), "a", "", "{x=\"1\"", None, 1.0);
        out.end_family(f);
        let mark = out.mark();
        let f = out.begin_family("b", "B.", MetricType::GAUGE);
        write_series(out.buf(), "b", "", "{x=\"1\"", None, 1.0);
        out.end_family(f);
        out.rollback(mark);
        let text = String::from_utf8(out.into_ordered().into_vec()).unwrap();
        assert_eq!(text, "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\n");
    }
}
