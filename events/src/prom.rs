//! The one Prometheus text-format helper every crate's `/metrics` section uses.

use std::fmt::Write;

/// Writes `# HELP`, `# TYPE` and the sample of one unlabelled metric.
pub fn write_scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_help_type_and_sample() {
        let mut s = String::new();
        super::write_scalar(&mut s, "x_total", "counter", "Things.", 3u64);
        assert_eq!(s, "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n");
    }
}
