//! All terminal output goes through one [`Printer`]. Library code never prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod progress;

use std::io::{IsTerminal, Write as _};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Output settings for one run.
#[derive(Debug, Clone)]
pub struct Printer {
    verbosity: Verbosity,
    color: bool,
    json: bool,
    stdout_tty: bool,
    stderr_tty: bool,
}

impl Printer {
    /// Colour only on a terminal, and never with `NO_COLOR` or `--no-color`.
    pub fn new(verbosity: Verbosity, no_color: bool, json: bool) -> Self {
        let stdout_tty = std::io::stdout().is_terminal();
        Printer {
            verbosity,
            color: stdout_tty && !no_color && !crate::env::no_color() && !json,
            json,
            stdout_tty,
            stderr_tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn color(&self) -> bool {
        self.color
    }

    pub fn json(&self) -> bool {
        self.json
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// Whether progress bars may be drawn (a terminal, and not machine output).
    pub fn progress_bars(&self) -> bool {
        self.stdout_tty && !self.json && self.verbosity != Verbosity::Quiet
    }

    /// The command's result on stdout (plans, reports, JSON). Always printed.
    pub fn out(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = stdout.write_all(b"\n");
        }
        let _ = stdout.flush();
    }

    /// Narration: stdout for people, stderr under `--json` so stdout stays parseable.
    pub fn info(&self, text: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        if self.json {
            eprintln!("{text}");
        } else {
            self.out(text);
        }
    }

    /// Redraws the current terminal line with `text` (empty: clears it);
    /// for progress that replaces itself.
    pub fn info_inline(&self, text: &str) {
        if self.verbosity == Verbosity::Quiet || self.json {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = write!(stdout, "\r\x1b[2K{text}");
        let _ = stdout.flush();
    }

    /// Details shown with `-v`, on stderr.
    pub fn debug(&self, text: &str) {
        if self.verbosity == Verbosity::Verbose {
            eprintln!("{}", self.paint(Paint::Dim, text));
        }
    }

    pub fn warn(&self, text: &str) {
        eprintln!("{} {text}", self.paint_err(Paint::Yellow, "warning:"));
    }

    /// An error with its causes and an optional hint.
    pub fn error(&self, message: &str, causes: &[String], hint: Option<&str>) {
        let mut s = format!("{} {message}\n", self.paint_err(Paint::Red, "error:"));
        for c in causes {
            s.push_str(&format!("  caused by: {c}\n"));
        }
        if let Some(h) = hint {
            s.push_str(&format!("{} {h}\n", self.paint_err(Paint::Cyan, "hint:")));
        }
        eprint!("{s}");
    }

    /// Asks a yes/no question on the terminal; only `yes` is accepted.
    pub fn confirm(&self, question: &str) -> bool {
        eprint!("{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).is_ok() && line.trim() == "yes"
    }

    pub fn paint(&self, p: Paint, text: &str) -> String {
        paint(self.color, p, text)
    }

    fn paint_err(&self, p: Paint, text: &str) -> String {
        paint(self.stderr_tty && !crate::env::no_color(), p, text)
    }
}

/// Terminal colours.
#[derive(Debug, Clone, Copy)]
pub enum Paint {
    Green,
    Yellow,
    Red,
    Cyan,
    Bold,
    Dim,
}

/// Wraps `text` in ANSI codes when `on`.
pub fn paint(on: bool, p: Paint, text: &str) -> String {
    if !on {
        return text.to_string();
    }
    let code = match p {
        Paint::Green => "32",
        Paint::Yellow => "33",
        Paint::Red => "31",
        Paint::Cyan => "36",
        Paint::Bold => "1",
        Paint::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}
