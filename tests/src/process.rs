//! `waggle serve` as a child process: the real binary, killed with SIGKILL or stopped with
//! SIGTERM, its resident memory read from /proc. Benchmarks run the release build; restart
//! and replica tests the debug build `scripts/test` makes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// The `waggle` binary built beside this executable's target directory (`debug` for tests).
pub fn binary(profile: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WAGGLE_BINARY") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|t| t.join(profile).join("waggle"))
        .find(|p| p.is_file())
}

/// RSS of a process in bytes, from /proc.
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

pub struct Serve {
    child: Child,
    pub query: u16,
    pub ingest: u16,
    pub log: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
}

impl Serve {
    /// Starts `binary serve` on free loopback ports with `extra` flags; waits for `/-/ready`.
    pub fn start(binary: &Path, extra: &[&str]) -> Result<Self> {
        let (query, ingest) = (crate::envoy::free_port(), crate::envoy::free_port());
        Self::start_on(binary, query, ingest, extra)
    }

    /// [`Serve::start`] on given ports (a restart keeps its ports).
    pub fn start_on(binary: &Path, query: u16, ingest: u16, extra: &[&str]) -> Result<Self> {
        let log =
            std::env::temp_dir().join(format!("waggle-serve-{}-{query}.log", std::process::id()));
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Command::new(binary)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{query}"),
                "--ingest-listen",
                &format!("127.0.0.1:{ingest}"),
            ])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with cargo build -p waggle)",
                    binary.display()
                )
            })?;
        let mut s = Self {
            child,
            query,
            ingest,
            log,
            binary: binary.to_path_buf(),
            args,
        };
        s.wait_ready(Duration::from_secs(60))?;
        Ok(s)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("waggle serve exited with {status}:\n{}", self.log_text());
            }
            if crate::envoy::get(self.query, "/-/ready").map(|r| r.0).ok() == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "waggle serve not ready after {within:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.query)
    }

    pub fn ingest_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.ingest)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the process has no chance to save anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("kill -TERM")?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("waggle serve did not stop within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same binary with the same ports and flags again (after [`Serve::kill`] or
    /// [`Serve::terminate`]); the log of the new run replaces the old one.
    pub fn restart(&mut self) -> Result<()> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let again = Self::start_on(&self.binary, self.query, self.ingest, &args)?;
        *self = again;
        Ok(())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}
