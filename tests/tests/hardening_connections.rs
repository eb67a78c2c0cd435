//! Connections on both listeners: idle, half-sent headers and half-sent bodies are closed
//! within their timeouts, and a connection cap holds new clients back instead of growing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use waggle_tests::prom::Waggle;

/// Whether the server closed `s` within `within` (EOF, or a reset), reading whatever it sent.
fn closed_within(s: &mut TcpStream, within: Duration) -> (bool, String) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        match s.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (true, String::from_utf8_lossy(&got).into_owned()),
        }
    }
    (false, String::from_utf8_lossy(&got).into_owned())
}

fn connect(addr: SocketAddr, send: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(send).unwrap();
    s
}

#[test]
fn idle_half_header_and_half_body_connections_are_closed_on_both_listeners() {
    let w = Waggle::start(&[
        "--header-read-timeout",
        "1s",
        "--body-read-timeout",
        "1s",
        "--idle-timeout",
        "1500ms",
    ])
    .unwrap();
    let listeners = [
        (
            "query",
            w.query,
            "/api/v1/query",
            "application/x-www-form-urlencoded",
        ),
        ("ingest", w.ingest, "/v1/events", waggle_wire::CONTENT_TYPE),
    ];
    for (listener, addr, path, content_type) in listeners {
        let half_body = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: 100\r\n\r\nquery=1"
        );
        let kept_alive = "GET /-/healthy HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut conns = vec![
            ("idle", connect(addr, b"")),
            (
                "half a header",
                connect(addr, b"POST /v1/events HTTP/1.1\r\nhost: x\r\n"),
            ),
            ("half a body", connect(addr, half_body.as_bytes())),
        ];
        if listener == "query" {
            conns.push((
                "kept alive after a request",
                connect(addr, kept_alive.as_bytes()),
            ));
        }
        let opened = Instant::now();
        for (what, s) in &mut conns {
            let (closed, got) = closed_within(s, Duration::from_secs(6));
            assert!(
                closed,
                "{listener}: the {what} connection is still open after {:?}",
                opened.elapsed()
            );
            if *what == "half a body" {
                assert!(
                    got.starts_with("HTTP/1.1 408"),
                    "{listener}: {what}: {got:?}"
                );
            }
            if *what == "kept alive after a request" {
                assert!(got.starts_with("HTTP/1.1 200"), "{what}: {got:?}");
            }
        }
    }
    drop(w);
    // With a long header timeout, the idle timeout alone closes a silent connection (an
    // HTTP/2 one, too, which the header timeout does not cover).
    let w = Waggle::start(&["--header-read-timeout", "30s", "--idle-timeout", "1s"]).unwrap();
    let mut h1 = connect(w.ingest, b"");
    let mut h2 = connect(
        w.ingest,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    );
    assert!(
        closed_within(&mut h1, Duration::from_secs(4)).0,
        "HTTP/1 idle"
    );
    assert!(
        closed_within(&mut h2, Duration::from_secs(4)).0,
        "HTTP/2 idle"
    );
    // (The test harness serves both on one port: count both listeners.)
    let closed: f64 = ["query", "ingest"]
        .iter()
        .map(|l| {
            let series = format!("waggle_connections_closed_idle_total{{listener=\"{l}\"}}");
            waggle_tests::client::metric(&w.base(), &series)
        })
        .sum();
    assert_eq!(closed, 2.0, "idle closes are counted");
}

#[test]
fn the_connection_cap_holds_new_clients_until_a_slot_frees() {
    let w = Waggle::start(&[
        "--max-connections",
        "3",
        "--idle-timeout",
        "2s",
        "--header-read-timeout",
        "2s",
    ])
    .unwrap();
    let held: Vec<TcpStream> = (0..3).map(|_| connect(w.query, b"")).collect();
    std::thread::sleep(Duration::from_millis(200));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let url = format!("{}/-/healthy", w.base());
    assert!(
        client.get(&url).send().is_err(),
        "a fourth connection is not served while three are held"
    );
    // The held ones idle out; the server then takes new connections again.
    let deadline = Instant::now() + Duration::from_secs(8);
    let patient = waggle_tests::prom::client();
    loop {
        if patient.get(&url).send().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came free");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
}
