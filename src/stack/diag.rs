//! Problems found in a stack file, each pointing at `file:line:column`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a stack file: where it is, what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a stack file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct StackError {
    diagnostics: Vec<Diagnostic>,
}

impl StackError {
    /// A non-empty list of diagnostics, sorted by position.
    pub(crate) fn new(mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message))
        });
        diagnostics.dedup();
        StackError { diagnostics }
    }

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one source file, turning byte offsets into
/// line and column.
pub(crate) struct Sink<'a> {
    file: &'a Path,
    source: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a Path, source: &'a str) -> Self {
        Sink {
            file,
            source,
            diagnostics: Vec::new(),
        }
    }

    /// Records a problem at the start of `span`.
    pub(crate) fn error(&mut self, span: &Range<usize>, message: String, hint: Option<String>) {
        let (line, column) = line_column(self.source, span.start);
        self.diagnostics.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            message: escape_controls(message),
            hint: hint.map(escape_controls),
        });
    }

    /// Shorthand for a problem that always has a hint.
    pub(crate) fn err(&mut self, span: &Range<usize>, message: String, hint: impl Into<String>) {
        self.error(span, message, Some(hint.into()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    pub(crate) fn finish(self) -> Result<(), StackError> {
        if self.diagnostics.is_empty() {
            Ok(())
        } else {
            Err(StackError::new(self.diagnostics))
        }
    }
}

/// Values quoted from the file (a multi-line string) keep a diagnostic on
/// one line: control characters are shown escaped, as `\n`.
fn escape_controls(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// 1-based line and character column of a byte offset; offsets past the end
/// or inside a character land on the nearest valid position before them.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_line_and_column() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 4), (1, 5));
        assert_eq!(line_column(src, 6), (2, 1));
        // `é` is two bytes but one column; an offset inside it lands on it.
        assert_eq!(line_column(src, 10), (2, 4));
        assert_eq!(line_column(src, 8), (2, 2));
        assert_eq!(line_column(src, 1000), (3, 1));
    }

    #[test]
    fn display_puts_the_hint_on_its_own_line() {
        let d = Diagnostic {
            file: PathBuf::from("stacks/smallcase.toml"),
            line: 31,
            column: 13,
            message: "environment `green` and `develop` both use namespace `smallcase-green`"
                .to_string(),
            hint: Some("give each environment its own namespace".to_string()),
        };
        assert_eq!(
            d.to_string(),
            "stacks/smallcase.toml:31:13: environment `green` and `develop` both use namespace `smallcase-green`\n  hint: give each environment its own namespace"
        );
    }
}
