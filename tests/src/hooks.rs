//! A webhook receiver for the analyze tests: plain HTTP/1.1 on a local port, one answer per
//! path, every request kept. Paths: `/ok` 200, `/created` 201, `/accepted` 202, `/nocontent`
//! 204, `/forbidden` 403 with a body, `/fail` 500 with a body, `/unimplemented` 501, `/busy` 429,
//! `/hang` (answers after 5 s), `/closed/<n>[/<any>]` 403 for the first n calls and 200 after.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body: serde_json::Value,
}

pub struct Receiver {
    pub base: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

/// The body `/fail` answers, which Flagger's client drops.
pub const FAIL_BODY: &str =
    "command hey -z 1m http://podinfo-canary.test:9898/ failed: exit status 1";
/// The body `/forbidden` answers, which Flagger's event shows.
pub const FORBIDDEN_BODY: &str = "Forbidden: the gate is closed";

impl Receiver {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let kept = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, calls) = (kept.clone(), calls.clone());
                std::thread::spawn(move || serve(conn, &seen, &calls));
            }
        });
        Self { base, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every request to `path`, in order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.seen
            .lock()
            .map(|s| s.iter().filter(|r| r.path == path).cloned().collect())
            .unwrap_or_default()
    }
}

/// A URL whose port refuses connections (bound, then released).
pub fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}/")
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<Received>>, calls: &Mutex<HashMap<String, u32>>) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "content-type" => content_type = v.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    if let Ok(mut s) = seen.lock() {
        s.push(Received {
            method,
            path: path.clone(),
            content_type,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
    }
    let n = calls
        .lock()
        .map(|mut c| {
            let n = c.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        })
        .unwrap_or(1);
    let (code, text): (u16, &str) = match path.as_str() {
        "/ok" => (200, "OK"),
        "/created" => (201, ""),
        "/accepted" => (202, ""),
        "/nocontent" => (204, ""),
        "/forbidden" => (403, FORBIDDEN_BODY),
        "/fail" => (500, FAIL_BODY),
        "/unimplemented" => (501, "not here"),
        "/busy" => (429, "slow down"),
        "/hang" => {
            std::thread::sleep(Duration::from_secs(5));
            (200, "late")
        }
        p => match p
            .strip_prefix("/closed/")
            .and_then(|k| k.split('/').next())
            .and_then(|k| k.parse::<u32>().ok())
        {
            Some(k) if n <= k => (403, "Forbidden"),
            Some(_) => (200, "Approved"),
            None => (404, "404 page not found"),
        },
    };
    let reason = match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        403 => "Forbidden",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Not Found",
    };
    let text = if code == 204 { "" } else { text };
    let mut out = conn;
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}
