//! A benchmark's result: named figures with units, printed as a table and
//! kept as JSON for the report.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BenchResult {
    pub bench: String,
    /// What was measured with what sizes.
    pub params: serde_json::Value,
    pub figures: Vec<Figure>,
    /// Checks that must hold whatever the speed (no loss, no reorder…).
    pub checks: Vec<(String, bool)>,
    #[serde(default)]
    pub quick: bool,
    #[serde(default)]
    pub backend: String,
    /// The command line that produced it.
    #[serde(default)]
    pub command: String,
    /// The code it measured (`git describe --always --dirty` at run time).
    #[serde(default)]
    pub commit: String,
}

impl BenchResult {
    pub(crate) fn new(bench: &str, params: serde_json::Value) -> BenchResult {
        BenchResult {
            bench: bench.to_owned(),
            params,
            figures: Vec::new(),
            checks: Vec::new(),
            quick: false,
            backend: String::new(),
            command: String::new(),
            commit: String::new(),
        }
    }

    pub(crate) fn figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        });
    }

    pub(crate) fn check(&mut self, name: &str, ok: bool) {
        self.checks.push((name.to_owned(), ok));
    }

    pub(crate) fn with_run(mut self, quick: bool, backend: crate::Backend) -> BenchResult {
        self.quick = quick;
        // The command, without where the JSON went.
        let mut args = std::env::args().skip(1).peekable();
        let mut shown = vec!["tessera-bench".to_owned()];
        while let Some(a) = args.next() {
            if a == "--json" {
                args.next();
            } else if !a.starts_with("--json=") {
                shown.push(a);
            }
        }
        self.command = shown.join(" ");
        self.commit = crate::report::commit();
        if self.backend.is_empty() {
            self.backend = format!("{backend:?}").to_lowercase();
        }
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value)
    }

    pub(crate) fn print(&self) {
        println!("{} {}", self.bench, self.params);
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
        for f in &self.figures {
            println!(
                "  {:<width$}  {:>14}  {}",
                f.name,
                format_value(f.value),
                f.unit
            );
        }
        for (name, ok) in &self.checks {
            println!(
                "  {:<width$}  {:>14}",
                name,
                if *ok { "ok" } else { "FAILED" }
            );
        }
    }

    pub(crate) fn all_checks_hold(&self) -> bool {
        self.checks.iter().all(|(_, ok)| *ok)
    }
}

pub(crate) fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}
