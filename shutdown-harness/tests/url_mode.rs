//! `--url` and `--disrupt`: the harness against a server it did not start, disrupted by a
//! shell command; TLS on the client side; and every kind of bad input ending in a one-line
//! error and exit 2 (usage) or 1 (the run failed), in bounded time.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

/// Longest any harness run here may take before the test fails (every wait is bounded).
const RUN_LIMIT: Duration = Duration::from_secs(30);

fn harness() -> Command {
    test_support::watch_for_leftovers();
    let mut command = Command::cargo_bin("shutdown-harness").expect("the harness binary is built");
    command.timeout(RUN_LIMIT);
    command
}

/// A fixture server started by the test (not by the harness); killed when dropped.
struct Fixture {
    child: Child,
    port: u16,
}

impl Fixture {
    fn start(mode: &str, tls: Option<&TestCa>) -> Self {
        test_support::watch_for_leftovers();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let script = format!(
            "{}/tests/fixtures/fixture_server.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut command = Process::new("python3");
        command.args([&script, mode, &port.to_string()]);
        if let Some(ca) = tls {
            command.arg("--tls").arg(&ca.cert).arg(&ca.key);
        }
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 starts");
        let fixture = Self { child, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "the fixture never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        fixture
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate for 127.0.0.1 (self-signed: it is its own CA), written to a temp dir.
struct TestCa {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("harness-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).expect("a certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        Self { dir, cert, key }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stdout_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

fn stderr_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

#[test]
fn a_server_that_hangs_its_connections_when_disrupted_is_caught_dropping() {
    let fixture = Fixture::start("hang", None);
    let pid = fixture.child.id();
    let assert = harness()
        .args(["--url", &fixture.url("http"), "--duration", "3"])
        .args(["--signal-after", "1", "--settle", "0.5"])
        .args(["--disrupt", &format!("kill -TERM {pid}")])
        .assert()
        .code(1);
    let out = stdout_of(&assert);
    assert!(out.contains("request timeout"), "{out}");
    assert!(
        out.contains(&format!("command `kill -TERM {pid}`")),
        "{out}"
    );
    assert!(out.contains("not launched by the harness"), "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(
        !last.starts_with("dropped=0 ") && last.ends_with("verdict=FAIL"),
        "{out}"
    );
}

#[test]
fn traffic_goes_on_until_the_command_has_ended_and_the_service_settled() {
    let fixture = Fixture::start("refuse", None);
    let assert = harness()
        .args(["--url", &fixture.url("http"), "--duration", "1.5"])
        .args(["--signal-after", "0.5", "--settle", "1"])
        .args(["--disrupt", "sleep 1.5; echo restarted"])
        .arg("--json")
        .arg(std::env::temp_dir().join(format!("harness-url-{}.json", std::process::id())))
        .assert()
        .code(0);
    let out = stdout_of(&assert);
    // Started at --signal-after and ended 1.5 s later, give or take the scheduler (a busy
    // machine once started it at 0.51 s: the line is read, not matched to the 10 ms).
    let (started, ended) = out
        .lines()
        .find_map(|l| l.strip_prefix("command `sleep 1.5; echo restarted`: "))
        .and_then(|times| {
            let (from, to) = times.split_once(" s to ")?;
            let to = to.split_once(" s")?.0;
            Some((from.parse::<f64>().ok()?, to.parse::<f64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no command line in\n{out}"));
    assert!((0.5..0.6).contains(&started), "{out}");
    assert!((started + 1.5..started + 1.7).contains(&ended), "{out}");
    let json = std::env::temp_dir().join(format!("harness-url-{}.json", std::process::id()));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    let _ = std::fs::remove_file(&json);
    let last_start = report["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["start"].as_f64())
        .fold(0.0, f64::max);
    // The command ended at about 2.0 s, plus 1 s of settling: traffic until about 3 s,
    // well past --duration (1.5 s).
    assert!(
        (2.8..3.5).contains(&last_start),
        "last request at {last_start}"
    );
    assert_eq!(report["summary"]["commands"][0]["output"], "restarted\n");
}

#[test]
fn a_failing_or_missing_disruption_command_fails_the_run_with_its_output() {
    let fixture = Fixture::start("refuse", None);
    for (command, shown) in [
        ("echo the unit is masked >&2; exit 3", "the unit is masked"),
        ("no-such-restart-tool --now", "not found"),
    ] {
        let assert = harness()
            .args(["--url", &fixture.url("http"), "--duration", "1"])
            .args(["--signal-after", "0.3", "--settle", "0.2"])
            .args(["--disrupt", command])
            .assert()
            .code(1);
        let out = stdout_of(&assert);
        assert!(
            out.contains(&format!("FAIL: the disruption command `{command}` failed")),
            "{out}"
        );
        assert!(out.contains(shown), "{out}");
    }
}

#[test]
fn https_urls_are_verified_against_the_given_ca_or_not_at_all_with_insecure() {
    let ca = TestCa::new("verify");
    let fixture = Fixture::start("refuse", Some(&ca));
    let url = fixture.url("https");
    let short = ["--duration", "1", "--signal-after", "0.5", "--clients", "2"];
    for trust in [
        vec!["--cacert".into(), ca.cert.display().to_string()],
        vec!["--insecure".to_string()],
    ] {
        let assert = harness()
            .args(["--url", &url])
            .args(short)
            .args(&trust)
            .assert()
            .code(0);
        let out = stdout_of(&assert);
        assert!(
            out.contains("verdict=PASS") && !out.contains(" ok=0 "),
            "{out}"
        );
    }
    // The system's roots do not know this certificate: the first request fails the
    // handshake and the harness says why, in one line.
    let assert = harness()
        .args(["--url", &url, "--ready-timeout", "1"])
        .args(short)
        .assert()
        .code(1);
    let err = stderr_of(&assert);
    assert!(
        err.contains("did not answer") && err.contains("certificate"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn bad_input_is_one_line_and_exit_2_or_1_in_bounded_time() {
    let usage: [&[&str]; 6] = [
        &["--url", "not a url"],
        &["--url", "ftp://127.0.0.1/"],
        &["--url", "http://127.0.0.1:9/", "--", "server-cli"],
        &["--disrupt", "true"],
        &["--url", "http://127.0.0.1:9/", "--signal", "HUP"],
        &[
            "--url",
            "http://127.0.0.1:9/",
            "--cacert",
            "/no/such/ca.pem",
        ],
    ];
    for args in usage {
        let assert = harness().args(args).assert().code(2);
        let err = stderr_of(&assert);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    // Nothing listens on port 9 of 127.0.0.1 (discard): refused until the ready timeout.
    let started = Instant::now();
    let assert = harness()
        .args(["--url", "http://127.0.0.1:9/", "--ready-timeout", "1"])
        .assert()
        .code(1);
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = stderr_of(&assert);
    assert!(
        err.contains("did not answer within 1 s") && err.contains("refused"),
        "{err}"
    );
    let assert = harness()
        .args([
            "--url",
            "http://no-such-host.invalid/",
            "--ready-timeout",
            "1",
        ])
        .assert()
        .code(1);
    assert!(stderr_of(&assert).contains("cannot resolve no-such-host.invalid"));
}
