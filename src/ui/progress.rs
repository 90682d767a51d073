//! The executor's hooks as terminal output: a live bar per in-flight resource
//! on a terminal, plain timestamped lines otherwise (cron, Jenkins).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Paint, Printer};
use crate::addr::Address;
use crate::apply::{Hooks, Op};

/// The live bar of each operation in flight.
type Bars = Mutex<HashMap<(Address, Op), ProgressBar>>;

/// Without a terminal, how often a long operation says it is still going.
const STILL_EVERY: Duration = Duration::from_secs(30);

/// Progress output for one apply.
pub struct Progress {
    printer: Printer,
    bars: Option<(MultiProgress, Bars)>,
    /// Without bars: when each operation in flight started and last said
    /// it is still going.
    running: Mutex<HashMap<(Address, Op), (Instant, Instant)>>,
    still_every: Duration,
}

impl Progress {
    pub fn new(printer: &Printer) -> Self {
        let bars = printer.progress_bars().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                Mutex::new(HashMap::new()),
            )
        });
        let still_every = match crate::env::progress_interval_opt() {
            Ok(every) => every.unwrap_or(STILL_EVERY),
            Err(e) => {
                printer.warn(&e);
                STILL_EVERY
            }
        };
        Progress {
            printer: printer.clone(),
            bars,
            running: Mutex::new(HashMap::new()),
            still_every,
        }
    }

    fn line(&self, text: &str) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => self
                .printer
                .info(&format!("{} {text}", crate::clock::now_hms())),
        }
    }

    fn bar(&self, addr: &Address, op: Op) -> Option<ProgressBar> {
        let (_, bars) = self.bars.as_ref()?;
        bars.lock().ok()?.get(&(addr.clone(), op)).cloned()
    }
}

fn ing(op: Op) -> &'static str {
    match op {
        Op::Create => "Creating",
        Op::Update => "Updating",
        Op::Delete => "Destroying",
        Op::ReplaceDelete => "Destroying (replace)",
        Op::ReplaceCreate => "Creating (replace)",
    }
}

fn past(op: Op) -> &'static str {
    match op {
        Op::Create | Op::ReplaceCreate => "created",
        Op::Update => "updated",
        Op::Delete | Op::ReplaceDelete => "destroyed",
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl Hooks for Progress {
    fn started(&self, addr: &Address, op: Op) {
        match &self.bars {
            Some((multi, bars)) => {
                let bar = multi.add(ProgressBar::new_spinner());
                let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                bar.set_message(format!("{addr}: {}...", ing(op)));
                bar.enable_steady_tick(Duration::from_millis(120));
                if let Ok(mut b) = bars.lock() {
                    b.insert((addr.clone(), op), bar);
                }
            }
            None => {
                if let Ok(mut r) = self.running.lock() {
                    let now = Instant::now();
                    r.insert((addr.clone(), op), (now, now));
                }
                self.line(&format!("{addr}: {}...", ing(op)))
            }
        }
    }

    fn status(&self, addr: &Address, op: Op, message: &str) {
        match self.bar(addr, op) {
            Some(bar) => bar.set_message(format!("{addr}: {}... {message}", ing(op))),
            None => {
                self.printer
                    .debug(&format!("{} {addr}: {message}", crate::clock::now_hms()));
                // Like Terraform's "Still creating...": a cron or CI log shows
                // a long wait is alive, and what it waits for.
                let elapsed = self.running.lock().ok().and_then(|mut r| {
                    let (started, last) = r.get_mut(&(addr.clone(), op))?;
                    (last.elapsed() >= self.still_every).then(|| {
                        *last = Instant::now();
                        started.elapsed()
                    })
                });
                if let Some(elapsed) = elapsed {
                    self.line(&format!(
                        "{addr}: still {}... [{} elapsed] {message}",
                        ing(op).to_lowercase(),
                        secs(elapsed)
                    ));
                }
            }
        }
    }

    fn finished(&self, addr: &Address, op: Op, error: Option<&str>, elapsed: Duration) {
        let bar = self
            .bars
            .as_ref()
            .and_then(|(_, bars)| bars.lock().ok()?.remove(&(addr.clone(), op)));
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if let Ok(mut r) = self.running.lock() {
            r.remove(&(addr.clone(), op));
        }
        match error {
            None => self.line(&format!(
                "{addr}: {} after {}",
                self.printer.paint(Paint::Green, past(op)),
                secs(elapsed)
            )),
            Some(e) => self.line(&format!(
                "{addr}: {} after {}: {e}",
                self.printer
                    .paint(Paint::Red, &format!("{} failed", op.verb())),
                secs(elapsed)
            )),
        }
    }

    fn skipped(&self, addr: &Address, op: Op, because: &Address) {
        self.line(&format!(
            "{addr}: {} skipped because `{because}` failed",
            op.verb()
        ));
    }
}
