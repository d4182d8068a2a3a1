//! HTTPS: the zero-drop stop over TLS, certificate rotation under load, mTLS, and bad
//! TLS input. Certificates are made at test time (`common::tls`).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::harness::{plan_with, run};
use common::tls::{client_config, https_get, install, TestPki};
use common::{server_cli, RunningServer};
use nix::sys::signal::Signal;
use shutdown_harness::{Disruption, HttpVersion, Report, Scenario, Trust};
use shutdown_harness::{Scheme, TrafficOverrides};

/// Starts server-cli on a free port serving HTTPS with `pair`, with `args`.
fn start_tls_server(pair: &common::tls::Pair, args: &[&str]) -> RunningServer {
    let mut command = std::process::Command::new(server_cli());
    command.args(["--port", "0"]).args(args);
    command.arg("--ssl-certfile").arg(&pair.cert);
    command.arg("--ssl-keyfile").arg(&pair.key);
    RunningServer::start_command(command)
}

/// server-cli arguments serving HTTPS with `pair`.
fn tls_args<'a>(cert: &'a str, key: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--ssl-certfile", cert, "--ssl-keyfile", key];
    args.extend_from_slice(extra);
    args
}

/// A harness plan against server-cli over TLS (the harness trusts the test CA).
fn tls_plan(
    pki: &TestPki,
    scenario: Scenario,
    args: &[&str],
    signal_after: f64,
    duration: f64,
    overrides: TrafficOverrides,
) -> shutdown_harness::Plan {
    let mut plan = plan_with(scenario, args, signal_after, duration, overrides);
    plan.launch_scheme = Scheme::Https;
    plan.trust = Trust::CaFile(pki.ca_file());
    plan
}

fn assert_no_drop(report: &Report) {
    let s = &report.summary;
    assert_eq!(s.dropped, 0, "{}", report.text());
    assert!(s.ok > 0, "{}", report.text());
    assert!(report.passed(), "{}", report.text());
}

#[test]
fn every_drop_scenario_over_tls_drops_nothing() {
    let pki = TestPki::new("scenarios");
    let pair = pki.server_pair("server");
    let (cert, key) = (pair.cert.to_str().unwrap(), pair.key.to_str().unwrap());
    let small = TrafficOverrides {
        clients: Some(16),
        ..TrafficOverrides::default()
    };
    let no_log = ["--workers", "2", "--no-access-log"];
    for (scenario, extra, overrides) in [
        (Scenario::Seed, &no_log[..], TrafficOverrides::default()),
        (Scenario::Load, &no_log[..], small.clone()),
        (
            Scenario::Keepalive,
            &no_log[..],
            TrafficOverrides::default(),
        ),
        (
            Scenario::Slow,
            &["--workers", "2", "--timeout-graceful-shutdown", "2"][..],
            TrafficOverrides::default(),
        ),
        (Scenario::Reload, &no_log[..], small.clone()),
    ] {
        let args = tls_args(cert, key, extra);
        let report = run(&tls_plan(&pki, scenario, &args, 1.0, 3.0, overrides));
        assert_no_drop(&report);
        if scenario != Scenario::Reload {
            assert!(report.summary.refused > 0, "{}", report.text());
        }
    }
}

#[test]
fn http2_over_tls_at_sigterm_fails_no_stream() {
    let pki = TestPki::new("h2");
    let pair = pki.server_pair("server");
    let (cert, key) = (pair.cert.to_str().unwrap(), pair.key.to_str().unwrap());
    let args = tls_args(cert, key, &["--workers", "2", "--no-access-log"]);
    let overrides = TrafficOverrides {
        clients: Some(16),
        interval: Some(Duration::ZERO),
        ..TrafficOverrides::default()
    };
    let mut plan = tls_plan(&pki, Scenario::Keepalive, &args, 1.0, 3.0, overrides);
    plan.http_version = HttpVersion::Http2;
    assert_no_drop(&run(&plan));
}

/// Waits until a new connection is served `wanted` (bounded); returns how long it took.
fn time_until_served(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    wanted: &rustls::pki_types::CertificateDer<'_>,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if https_get(addr, "/", config.clone())
            .server_certificate
            .as_ref()
            == Some(wanted)
        {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn certificates_rotate_under_load_without_a_drop_and_a_broken_pair_is_skipped() {
    let pki = TestPki::new("rotation");
    let first = pki.server_pair("first");
    let (cert, key) = (pki.dir.join("live.crt"), pki.dir.join("live.key"));
    install(&first.cert, &cert);
    install(&first.key, &key);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let args = tls_args(cert_arg, key_arg, &["--workers", "2", "--no-access-log"]);
    // Keep-alive clients and new-connection clients together, nothing done to the server:
    // it must keep serving, refusing and dropping nothing, while its files change.
    let mut plan = tls_plan(
        &pki,
        Scenario::Keepalive,
        &args,
        1.0,
        20.0,
        TrafficOverrides::default(),
    );
    plan.port = Some(port);
    plan.clients
        .extend(Scenario::Load.clients(TrafficOverrides {
            clients: Some(8),
            ..TrafficOverrides::default()
        }));
    plan.set_disruptions(vec![Disruption::Nothing]);
    let server_log = plan.server_log.clone();
    let harness = std::thread::spawn(move || run(&plan));

    let config = client_config(&pki, &[b"http/1.1"], None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while https_get(addr, "/", config.clone())
        .server_certificate
        .as_ref()
        != Some(&first.der)
    {
        assert!(
            Instant::now() < deadline,
            "the server never served the first pair"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut served = first.der.clone();
    let mut delays = Vec::new();
    for round in 0..5 {
        let next = pki.server_pair(&format!("round{round}"));
        if round == 2 {
            // A broken pair: the new certificate with the old key.
            install(&next.cert, &cert);
            std::thread::sleep(Duration::from_millis(1200));
            let now = https_get(addr, "/", config.clone());
            assert_eq!(
                now.server_certificate.as_ref(),
                Some(&served),
                "broken pair served"
            );
            assert!(now.response.is_ok());
            install(&first.cert, &cert);
            install(&first.key, &key);
            served = first.der.clone();
            std::thread::sleep(Duration::from_millis(2500));
            continue;
        }
        install(&next.key, &key);
        install(&next.cert, &cert);
        let took = time_until_served(addr, &config, &next.der)
            .unwrap_or_else(|| panic!("round {round}: the new certificate was never served"));
        delays.push(took);
        served = next.der.clone();
        std::thread::sleep(Duration::from_millis(2500));
    }
    let report = harness.join().unwrap();
    assert_no_drop(&report);
    assert_eq!(report.summary.refused, 0, "{}", report.text());
    for took in &delays {
        assert!(
            *took <= Duration::from_secs(1),
            "served after {took:?}: {delays:?}"
        );
    }
    let log = std::fs::read_to_string(&server_log).unwrap();
    assert!(
        log.contains("TLS certificate not loaded") && log.contains("does not match"),
        "{log}"
    );
}

#[test]
fn mtls_requires_a_client_certificate_from_the_given_ca_and_shows_its_subject() {
    let pki = TestPki::new("mtls");
    let pair = pki.server_pair("server");
    let client = pki.client_pair("billing-service");
    let ca = pki.ca_file();
    let server = start_tls_server(
        &pair,
        &[
            "--no-access-log",
            "--ssl-cert-reqs",
            "2",
            "--ssl-ca-certs",
            ca.to_str().unwrap(),
        ],
    );
    let anonymous = https_get(server.addr, "/whoami", client_config(&pki, &[], None));
    assert!(
        anonymous.response.is_err(),
        "served without a client certificate"
    );
    let with_cert = https_get(
        server.addr,
        "/whoami",
        client_config(&pki, &[], Some(&client)),
    );
    let body = with_cert.response.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("CN=billing-service"), "{body}");
    server.signal(Signal::SIGTERM);
}

/// Sends raw bytes to the TLS port and reads what comes back until the server closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// A TLS 1.2 ClientHello offering only RC4 (0x0005), which no modern server accepts.
fn client_hello_with_only_rc4() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x02, 0x00, 0x05]); // one cipher suite
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    hello.extend_from_slice(&[0x00, 0x00]); // no extensions
    let mut handshake = vec![0x01, 0, 0, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn bad_tls_input_gets_an_alert_or_a_close_and_the_worker_serves_on() {
    let pki = TestPki::new("bad-input");
    let pair = pki.server_pair("server");
    let server = start_tls_server(&pair, &["--no-access-log", "--workers", "1"]);
    let config = client_config(&pki, &[], None);
    const ALERT: u8 = 0x15;
    for (what, bytes) in [
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("garbage", vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]),
        ("only unsupported ciphers", client_hello_with_only_rc4()),
    ] {
        let answer = raw_exchange(server.addr, &bytes);
        assert!(
            answer.is_empty() || answer[0] == ALERT,
            "{what}: {answer:?}"
        );
        let after = https_get(server.addr, "/", config.clone());
        assert!(
            after.response.unwrap().starts_with("HTTP/1.1 200"),
            "{what}"
        );
    }
    // SNI for a name the certificate does not carry: the handshake fails with an alert.
    let mut unknown = rustls::ClientConnection::new(
        config.clone(),
        rustls::pki_types::ServerName::try_from("unknown.example").unwrap(),
    )
    .unwrap();
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let handshake = unknown.complete_io(&mut tcp);
    assert!(
        handshake.is_err(),
        "a certificate was served for an unknown name"
    );
    assert!(https_get(server.addr, "/", config).response.is_ok());
    server.signal(Signal::SIGTERM);
}

#[test]
fn a_bad_pair_at_start_is_one_line_and_exit_1_and_unsupported_options_are_refused() {
    let pki = TestPki::new("start");
    let good = pki.server_pair("good");
    let other = pki.server_pair("other");
    let expired = pki.server_pair_valid_until("expired", Some(2001));
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for (cert, key, expected) in [
        (&good.cert, &other.key, "does not match"),
        (&expired.cert, &expired.key, "not valid now"),
        (&garbage, &good.key, "no certificate"),
        (&good.cert, &garbage, "no unencrypted private key"),
    ] {
        let output = std::process::Command::new(server_cli())
            .args(["--port", "0"])
            .arg("--ssl-certfile")
            .arg(cert)
            .arg("--ssl-keyfile")
            .arg(key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(expected), "{stderr}");
    }
    let (cert, key) = (good.cert.to_str().unwrap(), good.key.to_str().unwrap());
    for extra in [
        &["--ssl-keyfile-password", "secret"][..],
        &["--ssl-ciphers", "ECDHE+AESGCM"],
        &["--ssl-cert-reqs", "2"],
        &["--ssl-alpn", "h3"],
        &["--", "uvicorn", "app:app", "--fd", "3"],
    ] {
        let output = std::process::Command::new(server_cli())
            .args(["--port", "0", "--ssl-certfile", cert, "--ssl-keyfile", key])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {output:?}");
    }
}

#[test]
fn an_unfinished_handshake_is_closed_at_the_header_timeout_and_never_holds_a_stop() {
    let pki = TestPki::new("slow-handshake");
    let pair = pki.server_pair("server");
    let mut server = start_tls_server(&pair, &["--no-access-log", "--timeout-header-read", "1"]);
    // A client that connects and never sends its ClientHello is closed after the
    // header-read timeout (1 s here).
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).unwrap_or(0), 0);
    let closed_after = started.elapsed();
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(2500)).contains(&closed_after),
        "closed after {closed_after:?}"
    );
    server.signal(Signal::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    // One that stalls half-way through its handshake when the stop begins holds the stop
    // for the drain grace (1 s) at most, not the header timeout (10 s here) or the
    // graceful deadline.
    let mut server = start_tls_server(&pair, &["--no-access-log", "--timeout-header-read", "10"]);
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled
        .write_all(&client_hello_with_only_rc4()[..20])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let (status, exited) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    let took = exited - signalled;
    assert!(took < Duration::from_millis(1600), "the stop took {took:?}");
}

#[test]
fn an_idle_keep_alive_connection_gets_close_notify_then_fin_at_a_stop() {
    let pki = TestPki::new("close-notify");
    let pair = pki.server_pair("server");
    let mut server = start_tls_server(&pair, &["--no-access-log", "--workers", "1"]);
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut connection =
        rustls::ClientConnection::new(client_config(&pki, &[b"http/1.1"], None), name).unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 512];
    let n = tls.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    server.signal(Signal::SIGTERM);
    // rustls reports a close without close_notify as an UnexpectedEof error: Ok(0) means
    // the server sent close_notify, then closed (FIN; a reset would be an error too).
    let mut rest = Vec::new();
    let read = tls.read_to_end(&mut rest);
    assert!(read.is_ok(), "{read:?}");
    assert!(rest.is_empty());
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success());
}
