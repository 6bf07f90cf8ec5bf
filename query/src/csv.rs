//! Minimal RFC 4180 CSV writing for finance exports. Cells are client-controlled (attribution headers),
//! so a cell a spreadsheet would evaluate as a formula (`=`, `+`, `-`, `@`, tab, carriage return first)
//! is written with a leading `'`, which spreadsheets show as text.

pub fn field(out: &mut String, v: &str) {
    let escaped;
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        escaped = format!("'{v}");
        escaped.as_str()
    } else {
        v
    };
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

pub fn row<'a>(out: &mut String, fields: impl IntoIterator<Item = &'a str>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, f);
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_only_when_needed() {
        let mut s = String::new();
        super::row(&mut s, ["a", "b,c", "say \"hi\""]);
        assert_eq!(s, "a,\"b,c\",\"say \"\"hi\"\"\"\r\n");
    }

    #[test]
    fn formula_cells_are_text() {
        let mut s = String::new();
        super::row(&mut s, ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "ok", "a=b"]);
        assert_eq!(s, "\"'=HYPERLINK(\"\"x\"\")\",'+1,'-2,'@SUM(A1),ok,a=b\r\n");
    }
}
