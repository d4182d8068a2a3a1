//! The harness must find drops where there are drops and report none where there are none.
//! Each test runs the real binary against a tiny Python server with a known behaviour.

use assert_cmd::Command;

fn harness() -> Command {
    test_support::watch_for_leftovers();
    Command::cargo_bin("shutdown-harness").expect("the harness binary is built")
}

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/fixture_server.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn short_seed_run(mode: &str) -> assert_cmd::assert::Assert {
    harness()
        .args([
            "--scenario",
            "seed",
            "--duration",
            "3",
            "--signal-after",
            "1",
        ])
        .args(["--max-exit-after", "10", "--"])
        .args(["python3", &fixture(), mode, "{port}"])
        .timeout(std::time::Duration::from_secs(30))
        .assert()
}

fn last_line(output: &[u8]) -> String {
    String::from_utf8_lossy(output)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_server_that_keeps_its_socket_open_after_sigterm_is_caught_dropping() {
    let assert = short_seed_run("keep-open").code(1);
    let output = &assert.get_output().stdout;
    let text = String::from_utf8_lossy(output);
    assert!(text.contains("request timeout"), "{text}");
    let last = last_line(output);
    assert!(last.starts_with("dropped="), "{last}");
    assert!(!last.starts_with("dropped=0 "), "{last}");
}

#[test]
fn a_server_that_refuses_new_connections_at_sigterm_passes() {
    let assert = short_seed_run("refuse").code(0);
    let output = &assert.get_output().stdout;
    let last = last_line(output);
    assert!(last.starts_with("dropped=0 "), "{last}");
    assert!(!last.contains("refused=0 "), "{last}");
    assert!(last.ends_with("verdict=PASS"), "{last}");
}

#[test]
fn writes_json_with_every_request_and_an_svg_timeline() {
    let dir = std::env::temp_dir().join(format!("harness-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("run.json"), dir.join("run.svg"));
    harness()
        .args(["--duration", "2", "--signal-after", "1", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .args(["--", "python3", &fixture(), "refuse", "{port}"])
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .code(0);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(
        requests.len() as u64,
        report["summary"]["total"].as_u64().unwrap()
    );
    assert!(requests.iter().any(|r| r["outcome"]["kind"] == "refused"));
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.starts_with("<svg") && drawing.contains("SIGTERM"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_usage_exits_2() {
    harness().args(["--scenario", "nope"]).assert().code(2);
    harness()
        .args(["--duration", "1", "--signal-after", "5", "--", "true"])
        .assert()
        .code(2);
    harness()
        .args(["--", "/no/such/server-binary", "{port}"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("cannot start"));
}
