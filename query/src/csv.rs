//! Minimal RFC 4180 CSV writing for finance exports.

pub fn field(out: &mut String, v: &str) {
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
}
