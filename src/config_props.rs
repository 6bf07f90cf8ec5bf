//! Property test of the config loader (issue 15): whatever a config file says (a valid file with lines
//! deleted, duplicated, replaced by garbage or given values of the wrong type), `load` never panics, and
//! a refusal is one line that starts with the file it is about. CI runs proptest's default 256 cases;
//! for more: `PROPTEST_CASES=5000 cargo test --bin tollgate config_props`.

use super::load;
use proptest::prelude::*;

const BASE: &str = r#"[server]
listen = "127.0.0.1:8080"
shutdown_grace_ms = 5000
[storage]
data_dir = "/tmp/tollgate-config-props"
[gateway]
max_request_bytes = 1000000
max_sse_line_bytes = 65536
header_read_timeout_ms = 1000
body_read_timeout_ms = 1000
max_header_bytes = 8192
[query]
sql_timeout_ms = 1000
memory_limit_mb = 64
[[upstreams]]
name = "up"
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
models = ["gpt-4o-mini", "house"]
request_timeout_ms = 1000
[prices."house"]
input = "0.0375"
output = 1.1
[[keys]]
id = "k"
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
department = "eng"
models = ["gpt-4o-mini"]
"#;

#[derive(Debug, Clone)]
enum Edit {
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Insert(prop::sample::Index, String),
    Value(prop::sample::Index, String),
}

fn value() -> impl Strategy<Value = String> {
    let fixed = prop_oneof![
        Just("0"),
        Just("-1"),
        Just("18446744073709551616"),
        Just("1e400"),
        Just("nan"),
        Just("\"\""),
        Just("[]"),
        Just("[1, \"a\"]"),
        Just("{ a = 1 }"),
        Just("true"),
        Just("\"http://\""),
        Just("\"sha256:zz\""),
    ]
    .prop_map(String::from);
    prop_oneof![fixed, "\"[ -~]{0,12}\"".prop_map(|s| s.replace('\\', "")), any::<i64>().prop_map(|n| n.to_string()),]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::Delete),
        any::<prop::sample::Index>().prop_map(Edit::Duplicate),
        (any::<prop::sample::Index>(), "[ -~]{0,30}").prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<prop::sample::Index>(), value()).prop_map(|(i, v)| Edit::Value(i, v)),
    ]
}

fn apply(edits: &[Edit]) -> String {
    let mut lines: Vec<String> = BASE.lines().map(String::from).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        match e {
            Edit::Delete(i) => {
                lines.remove(i.index(lines.len()));
            }
            Edit::Duplicate(i) => {
                let at = i.index(lines.len());
                let l = lines[at].clone();
                lines.insert(at, l);
            }
            Edit::Insert(i, s) => {
                let at = i.index(lines.len());
                lines.insert(at, s.clone());
            }
            Edit::Value(i, v) => {
                let at = i.index(lines.len());
                if let Some((k, _)) = lines[at].split_once('=') {
                    lines[at] = format!("{k}= {v}");
                }
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #[test]
    fn any_config_loads_or_is_refused_in_one_line(edits in prop::collection::vec(edit(), 0..4)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, apply(&edits)).unwrap();
        if let Err(e) = load(&path) {
            prop_assert!(!e.contains('\n'), "{}", e);
            prop_assert!(e.starts_with(&format!("config {}", path.display())), "{}", e);
        }
    }
}

#[test]
fn the_base_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, BASE).unwrap();
    if let Err(e) = load(&path) {
        panic!("{e}");
    }
}
