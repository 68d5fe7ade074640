//! Aligned text tables in kubectl's layout: upper-case headers, columns padded to their widest
//! cell, numbers right-aligned, the last column never padded.

use std::fmt::Write;

/// How a table is printed: `ps`'s rule for the last column (the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// To a pipe or with `-o wide`: every line whole.
    Unlimited,
    /// To a terminal of this many columns: each line cut to fit, as `ps` does.
    Cut(usize),
}

/// A column: its header and whether its cells are numbers (right-aligned).
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub header: &'static str,
    pub numeric: bool,
}

pub const fn text(header: &'static str) -> Column {
    Column {
        header,
        numeric: false,
    }
}

pub const fn number(header: &'static str) -> Column {
    Column {
        header,
        numeric: true,
    }
}

/// Separates columns, as in kubectl's tables.
const GAP: &str = "   ";

/// The table, header first, one line per row; cells are made printable (control characters
/// as `?`, like `ps`). No rows, no table: nothing at all.
pub fn render(columns: &[Column], rows: &[Vec<String>], width: Width) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.header.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, column)) in row.iter().zip(columns).enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            if i + 1 == columns.len() {
                line.push_str(cell);
            } else if column.numeric {
                let _ = write!(line, "{cell:>w$}", w = widths[i]);
            } else {
                let _ = write!(line, "{cell:<w$}", w = widths[i]);
            }
        }
        let line = line.trim_end();
        match width {
            Width::Cut(max) => {
                let cut: String = line.chars().take(max).collect();
                out.push_str(cut.trim_end());
            }
            Width::Unlimited => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Control characters (a newline in an argument, a terminal escape) as `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Kubernetes binary quantities as `kubectl top` prints memory: `512Ki`, `23Mi`, `1.5Gi`.
pub fn bytes(n: u64) -> String {
    const KI: u64 = 1 << 10;
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;
    match n {
        0 => "0".to_string(),
        n if n < MI => format!("{}Ki", n.div_ceil(KI)),
        n if n < GI => format!("{}Mi", n / MI),
        n => format!("{:.1}Gi", n as f64 / GI as f64),
    }
}

/// `<none>`, kubectl's empty cell, for a missing value.
pub fn or_none(value: Option<&str>) -> String {
    value.unwrap_or("<none>").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_cut() {
        let columns = [text("NAME"), number("PID"), text("COMMAND")];
        let rows = vec![
            vec!["a".into(), "7".into(), "nginx: master\x1b[31m".into()],
            vec!["bbbb".into(), "1234".into(), "sh".into()],
        ];
        assert_eq!(
            render(&columns, &rows, Width::Unlimited),
            "NAME    PID   COMMAND\na         7   nginx: master?[31m\nbbbb   1234   sh\n"
        );
        assert_eq!(
            render(&columns, &rows, Width::Cut(18)),
            "NAME    PID   COMM\na         7   ngin\nbbbb   1234   sh\n"
        );
        // Cut in a gap: no trailing blanks.
        assert_eq!(
            render(&columns, &rows, Width::Cut(9)),
            "NAME    P\na\nbbbb   12\n"
        );
    }

    #[test]
    fn memory_like_kubectl_top() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(1), "1Ki");
        assert_eq!(bytes(2_523_136), "2Mi");
        assert_eq!(bytes(12_242_944), "11Mi");
        assert_eq!(bytes(3 << 30), "3.0Gi");
    }
}
