//! Prometheus text as the tests read it: `/metrics` parsed into samples, and the metric names
//! and labels `src/metrics.rs` registers.

/// One Prometheus sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parsed `/metrics` text.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(i) if line[..i].find(' ').is_none() => {
                    let name = &line[..i];
                    let (labels, after) = parse_labels(&line[i + 1..]);
                    (name.to_string(), labels, after)
                }
                _ => {
                    let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
                    (name.to_string(), Vec::new(), rest.to_string())
                }
            };
            let value = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
            if let Some(value) = value {
                samples.push(Sample { name, labels, value });
            }
        }
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// Samples of `name` whose labels include all of `labels`.
    pub fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    /// Sum of the matching samples (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }
}

fn parse_labels(s: &str) -> (Vec<(String, String)>, String) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        if i >= b.len() {
            return (out, String::new());
        }
        if b[i] == b'}' {
            return (out, s[i + 1..].to_string());
        }
        let eq = s[i..].find('=').map_or(b.len(), |e| i + e);
        let key = s[i..eq].trim().to_string();
        i = eq + 2; // skip ="
        let mut val = String::new();
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' && i + 1 < b.len() {
                val.push(match b[i + 1] {
                    b'n' => '\n',
                    other => other as char,
                });
                i += 2;
            } else {
                val.push(b[i] as char);
                i += 1;
            }
        }
        i += 1;
        out.push((key, val));
    }
}

/// A metric some source registers: the label names its constructor declares, and whether
/// it is a histogram (so it also has `_bucket`/`_sum`/`_count` series).
#[derive(Debug, Default)]
pub struct RegisteredMetric {
    pub labels: std::collections::BTreeSet<String>,
    pub histogram: bool,
}

/// Every `"authgate_*"` name registered in `src` (read as Rust source: the name is a string
/// literal in a prometheus `Opts`/`HistogramOpts` constructor that ends at its `)?`).
pub fn registered_metrics(src: &str) -> std::collections::BTreeMap<String, RegisteredMetric> {
    let mut out = std::collections::BTreeMap::<String, RegisteredMetric>::new();
    for (i, _) in src.match_indices("\"authgate_") {
        let name: String = src[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let entry = out.entry(name).or_default();
        if src[..i].trim_end().ends_with("HistogramOpts::new(") {
            entry.histogram = true;
        }
        // the label list, if any, is the `&[...]` in the constructor
        let end = src[i..].find(")?").map_or(src.len(), |e| i + e);
        let call = &src[i..end];
        if let Some(open) = call.find("&[") {
            let list = &call[open + 2..];
            let list = &list[..list.find(']').unwrap_or(list.len())];
            for label in list.split(',') {
                let label = label.trim().trim_matches('"');
                if !label.is_empty() {
                    entry.labels.insert(label.to_string());
                }
            }
        }
    }
    out
}
