//! Reports a finance team can send (issue 14, item 10), through the real binary: billable calls apart
//! from rejected ones, an `(unattributed)` line, `by=model`, the period in CSV, a rounded currency
//! column beside the exact one, one name (`rows`) for report lines, formula-safe CSV cells, `tollgate
//! chargeback --month` in the terminal, and `data_dir` found relative to the config file. Amounts are
//! computed here from the harness's price for house-llm and the mock's token counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{s, u, Gateway, ENG_KEY, HDR_KEY};

/// house-llm: 37.5 nano-USD per input token, 1,100 per output token; a call's total is rounded half
/// up to the nano-dollar.
fn house_cost(input: u64, output: u64) -> u64 {
    (input * 375 + output * 11_000 + 5) / 10
}

async fn chat(gw: &Gateway, key: &str, model: &str, directive: &str, user: Option<&str>) -> u16 {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"MOCK[{directive}]"}}]}}"#);
    let mut req = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body);
    if let Some(user) = user {
        req = req.header("x-tollgate-user", user);
    }
    // The body is read to its end: a client that leaves after the status line is a client disconnect,
    // metered with estimated usage (and the 9,000-token answer would then not be billed in full).
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

async fn get(gw: &Gateway, path: &str) -> (u16, String) {
    let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ENG_KEY).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn run(args: &[&str], cwd: &std::path::Path) -> (bool, String, String) {
    let out = std::process::Command::new(common::bin()).args(args).current_dir(cwd).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn chargeback_and_showback_are_invoice_grade() {
    let gw = Gateway::start().await;
    let eng_big = house_cost(40, 9_000);
    let eng_small = house_cost(8, 3);
    let research = house_cost(4, 2);
    assert_eq!((eng_big, eng_small, research), (9_901_500, 3_600, 2_350));
    assert_eq!(chat(&gw, ENG_KEY, "house-llm", "tokens=9000,prompt_tokens=40", None).await, 200);
    assert_eq!(chat(&gw, ENG_KEY, "house-llm", "tokens=3,prompt_tokens=8", None).await, 200);
    // Refused before any provider: an unknown model (engineering's) and an unknown key (nobody's).
    assert_eq!(chat(&gw, ENG_KEY, "no-such-model", "tokens=3", None).await, 404);
    assert_eq!(chat(&gw, "sk-nobody", "house-llm", "tokens=3", None).await, 401);
    // A client-chosen attribution value that a spreadsheet would run as a formula.
    assert_eq!(chat(&gw, HDR_KEY, "house-llm", "tokens=2,prompt_tokens=4", Some("=1+2")).await, 200);
    gw.wait_events(5).await;
    let day = gw.sql("SELECT min(date) AS d FROM calls").await;
    let month = s(&day[0], "d")[..7].to_string();
    let eng = eng_big + eng_small;
    let total = eng + research;

    let (status, csv) = get(&gw, &format!("/v1/chargeback?month={month}&by=department&format=csv")).await;
    assert_eq!(status, 200, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "period,department,calls,rejected,attempts,input_tokens,output_tokens,cached_input_tokens,cache_write_tokens,reasoning_tokens,cost_usd,cost_usd_rounded,cost_nanousd,cache_hits,saved_usd,saved_nanousd".to_string(),
            format!("{month},engineering,2,1,2,48,9003,0,0,0,0.{eng:09},0.01,{eng},0,0.000000000,0"),
            format!("{month},research,1,0,1,4,2,0,0,0,0.{research:09},0.00,{research},0,0.000000000,0"),
            format!("{month},(unattributed),0,1,0,0,0,0,0,0,0.000000000,0.00,0,0,0.000000000,0"),
            format!("{month},TOTAL,3,2,3,52,9005,0,0,0,0.{total:09},0.01,{total},0,0.000000000,0"),
        ],
        "{csv}"
    );

    // By user: the client's value is exported as text, not as a formula.
    let (_, csv) = get(&gw, &format!("/v1/chargeback?month={month}&by=user&format=csv")).await;
    assert!(
        csv.lines()
            .any(|l| l == format!("{month},'=1+2,1,0,1,4,2,0,0,0,0.{research:09},0.00,{research},0,0.000000000,0")),
        "{csv}"
    );
    assert!(!csv.lines().any(|l| l.split(',').any(|c| c.starts_with('='))), "{csv}");

    // By model, as JSON: the lines are `rows`, as in showback.
    let (status, body) = get(&gw, &format!("/v1/chargeback?month={month}&by=model")).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s(&v, "period"), month);
    let rows = v["rows"].as_array().unwrap();
    let house = rows.iter().find(|r| r["model"] == "house-llm").unwrap();
    assert_eq!((u(house, "calls"), u(house, "rejected"), u(house, "cost_nanousd")), (3, 0, total), "{v}");
    assert_eq!(s(house, "cost_usd_rounded"), "0.01");
    assert!(rows.iter().any(|r| r["model"] == "no-such-model" && u(r, "rejected") == 1), "{v}");
    assert_eq!((u(&v["total"], "calls"), u(&v["total"], "rejected")), (3, 2));

    // Showback names its lines the same way and labels the unattributed line.
    let (_, body) = get(&gw, "/v1/showback?group_by=department").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["department"] == "(unattributed)" && u(r, "rejected") == 1), "{v}");
    assert_eq!(u(&v["total"], "cost_nanousd"), total);

    // The month's bill in the terminal.
    let cfg = gw.config.to_str().unwrap().to_string();
    let (ok, out, err) = run(&["chargeback", "--month", &month, "--config", &cfg], gw.dir.path());
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("chargeback {month}")), "{out}");
    for want in ["(unattributed)", "engineering", "TOTAL", &format!("0.{total:09}"), "0.01", "rejected"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let (ok, out, _) =
        run(&["chargeback", "--month", &month, "--by", "model", "--format", "csv", "--config", &cfg], gw.dir.path());
    assert!(ok);
    assert!(out.lines().last().unwrap().starts_with(&format!("{month},TOTAL,3,2,")), "{out}");

    // `data_dir` is relative to the config file, whatever directory the command runs in: a report
    // from elsewhere finds the same bill instead of printing $0.
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let abs = format!("data_dir = \"{}\"", gw.data_dir().display());
    assert!(text.contains(&abs));
    std::fs::write(&gw.config, text.replace(&abs, "data_dir = \"data\"")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (ok, out, err) =
        run(&["report", "--format", "csv", "--group-by", "department", "--config", &cfg], elsewhere.path());
    assert!(ok, "{err}");
    let eng_line = out.lines().find(|l| l.contains(",engineering,")).unwrap_or_else(|| panic!("{out}"));
    assert!(eng_line.ends_with(&format!(",{eng},0,0.000000000,0")), "{eng_line}");
    assert!(eng_line.split(',').next().unwrap().contains('/'), "the period leads each line: {eng_line}");
    assert!(!elsewhere.path().join("data").exists(), "nothing may be created in the working directory");
}
