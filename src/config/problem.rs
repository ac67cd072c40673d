//! Config problems that name the file and line, so an operator can fix all of them at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing wrong with a config or policy file.
///
/// Displayed as `file:line: message` (or `file: message` when no line is known), the
/// format `authgate check` promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in, as the operator named it (or as resolved from the config).
    pub file: PathBuf,
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    /// What is wrong, naming the field and the bad value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found while loading, in file order; loading reports all of them, not the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Whether nothing was found wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the problems of another file or stage.
    pub(crate) fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Collects problems for one file, turning byte spans into line numbers.
pub(crate) struct Reporter<'a> {
    file: PathBuf,
    text: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Reporter<'a> {
    /// A reporter for `file`, whose contents are `text` (used to find line numbers).
    pub(crate) fn new(file: &Path, text: &'a str) -> Self {
        Self {
            file: file.to_path_buf(),
            text,
            problems: Vec::new(),
        }
    }

    /// The 1-based line of a byte offset in the file.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// Records a problem at a span of the file.
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = Some(self.line_of(span.start));
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            message: message.into(),
        });
    }

    /// Records a problem that has no position (a missing section, a file that cannot be read).
    pub(crate) fn whole(&mut self, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line: None,
            message: message.into(),
        });
    }

    /// Records a problem in another file this one names (a spec: `spec.yaml:12: ...`).
    pub(crate) fn elsewhere(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Records a TOML/serde parse error, with its line when toml knows it.
    pub(crate) fn parse_error(&mut self, err: &toml::de::Error) {
        let mut message = err.message().trim().to_string();
        if message.is_empty() {
            // toml leaves some syntax errors (a bare CR, a control character in a comment)
            // without words; `check` must still say what is wrong.
            message = "invalid TOML: unexpected character (a control character or a bare carriage return?)".into();
        }
        match err.span() {
            Some(span) => self.at(span, message),
            None => self.whole(message),
        }
    }

    /// Whether any problem was recorded.
    pub(crate) fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// The problems recorded so far.
    pub(crate) fn finish(self) -> Problems {
        Problems(self.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let r = Reporter::new(Path::new("a.toml"), "x = 1\ny = 2\n");
        assert_eq!(r.line_of(0), 1);
        assert_eq!(r.line_of(6), 2);
        assert_eq!(r.line_of(1000), 3);
    }

    #[test]
    fn toml_errors_always_have_words() {
        for text in ["\r", "# \u{0}\n"] {
            let err = toml::from_str::<toml::Table>(text).unwrap_err();
            let mut r = Reporter::new(Path::new("a.toml"), text);
            r.parse_error(&err);
            let problems = r.finish();
            assert!(problems.0.iter().all(|p| !p.message.is_empty()), "{problems:?}");
        }
    }

    #[test]
    fn display_names_file_and_line() {
        let mut r = Reporter::new(Path::new("a.toml"), "x = 1\ny = 2\n");
        r.at(6..7, "bad y");
        r.whole("no z");
        assert_eq!(r.finish().to_string(), "a.toml:2: bad y\na.toml: no z");
    }
}
