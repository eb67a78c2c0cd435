//! VictoriaMetrics (Debian's `victoria-metrics`, single node) as a remote-write receiver that
//! Flagger can query, started per test with a 1 s `-search.latencyOffset` (its default of
//! 30 s hides the newest half-minute from queries).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WAGGLE_VICTORIA_METRICS") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("victoria-metrics"))
            .find(|p| p.is_file())
    })
}

pub struct VictoriaMetrics {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl VictoriaMetrics {
    pub fn start(binary: &std::path::Path) -> Result<Self> {
        let port = crate::envoy::free_port();
        let dir = std::env::temp_dir().join(format!("waggle-vm-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(binary)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg("-search.latencyOffset=1s")
            .arg("-search.disableCache")
            .arg("-retentionPeriod=100y")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("vm.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut vm = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = vm.child.try_wait()? {
                bail!(
                    "victoria-metrics exited with {status}: {}",
                    std::fs::read_to_string(vm.dir.join("vm.log")).unwrap_or_default()
                );
            }
            if crate::envoy::get(port, "/health")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
            {
                return Ok(vm);
            }
            if Instant::now() > deadline {
                bail!("victoria-metrics not ready after 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Flagger's `metricsServer` for it.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
