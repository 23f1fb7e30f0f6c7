//! The bench server: `wrangler dev` run from a snapshot of the built Worker.
//!
//! `wrangler dev` reloads (restarting workerd) whenever its configuration or the built Worker
//! changes, which would cut a measurement short or mix two builds into one figure while other
//! work goes on in the tree. So the bench copies what the server needs — `wrangler.toml`,
//! `build/`, `client/`, `migrations/`, `seeds/` and `scripts/db.sh` — into a temporary
//! directory and serves from there; `node_modules` is linked, not copied. To measure another
//! build of the Worker (an A/B experiment), point `ROOMKEEPER_BENCH_TREE` at the root of a
//! copy of the project whose `build/` holds it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use roomkeeper_testkit::harness::{root, TempDir};

/// A running `wrangler dev` over a snapshot; stopped (its whole process group) on drop.
pub struct Server {
    child: Option<Child>,
    /// The public port (wrangler's proxy).
    pub port: u16,
    /// Where wrangler's output goes.
    pub log: PathBuf,
    /// How the runtime's own port is told apart: a path and what its answer contains.
    pub probe: (&'static str, &'static [u8]),
    _snapshot: TempDir,
    _persist: TempDir,
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Whether servers run under `wrangler dev` with its inspector proxy (the default) or
/// without it (`--no-inspector`: `scripts/serve.mjs`).
pub static INSPECTOR: AtomicBool = AtomicBool::new(true);

impl Server {
    /// Snapshots the built Worker and starts `wrangler dev` on it with extra `--var`s, on a
    /// fresh state directory; waits until `/health` answers.
    pub fn start(vars: &[(&str, &str)]) -> Self {
        let snapshot = TempDir::new("bench-snapshot");
        let persist = TempDir::new("bench-state");
        let root = root();
        let tree = std::env::var_os("ROOMKEEPER_BENCH_TREE")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.to_path_buf());
        for dir in ["build", "client", "migrations", "seeds"] {
            copy_dir(&tree.join(dir), &snapshot.0.join(dir)).expect("snapshot the Worker");
        }
        std::fs::copy(tree.join("wrangler.toml"), snapshot.0.join("wrangler.toml"))
            .expect("snapshot wrangler.toml");
        std::fs::create_dir_all(snapshot.0.join("scripts")).expect("snapshot scripts");
        std::fs::copy(tree.join("scripts/db.sh"), snapshot.0.join("scripts/db.sh"))
            .expect("snapshot db.sh");
        std::os::unix::fs::symlink(root.join("node_modules"), snapshot.0.join("node_modules"))
            .expect("link node_modules");
        let status = Command::new("bash")
            .arg("scripts/db.sh")
            .arg(&persist.0)
            .current_dir(&snapshot.0)
            .status()
            .expect("run scripts/db.sh");
        assert!(status.success(), "applying D1 migrations failed");
        Self::spawn(snapshot, persist, vars, ("/health", b"roomkeeper"))
    }

    /// Runs `wrangler dev` in `dir` on the state in `persist`; waits until the runtime's own
    /// port answers `probe` (a path and what its answer contains).
    fn spawn(
        dir: TempDir,
        persist: TempDir,
        vars: &[(&str, &str)],
        probe: (&'static str, &'static [u8]),
    ) -> Self {
        let (child, port, log) = roomkeeper_testkit::harness::spawn_runtime(
            &dir.0,
            &persist.0,
            vars,
            &root().join("target/bench-logs"),
            INSPECTOR.load(Ordering::Relaxed),
        );
        let mut server = Self {
            child: Some(child),
            port,
            log,
            probe,
            _snapshot: dir,
            _persist: persist,
        };
        server.wait_ready();
        server
    }

    /// Starts `wrangler dev` on a copy of an unpacked cloudflare/workers-chat-demo snapshot
    /// (`wrangler.toml` and `src/`), with its per-IP rate limiter switched off in the copy:
    /// the bench's one address sends every message, which the demo's limiter is meant to
    /// refuse. Its code is someone else's and is not part of this project: the bench takes the
    /// snapshot's path (`--chat-demo DIR`).
    pub fn start_chat_demo(snapshot: &Path) -> Result<Self, String> {
        let copy = TempDir::new("bench-chat-demo");
        let persist = TempDir::new("bench-chat-state");
        copy_dir(&snapshot.join("src"), &copy.0.join("src")).map_err(|e| e.to_string())?;
        std::fs::copy(snapshot.join("wrangler.toml"), copy.0.join("wrangler.toml"))
            .map_err(|e| format!("{}: {e}", snapshot.join("wrangler.toml").display()))?;
        let chat = copy.0.join("src/chat.mjs");
        let code = std::fs::read_to_string(&chat).map_err(|e| e.to_string())?;
        const LIMIT: &str = "if (!session.limiter.checkLimit()) {";
        if !code.contains(LIMIT) {
            return Err(format!("{}: no `{LIMIT}` to switch off", chat.display()));
        }
        std::fs::write(&chat, code.replace(LIMIT, "if (false) {")).map_err(|e| e.to_string())?;
        let root = root();
        std::os::unix::fs::symlink(root.join("node_modules"), copy.0.join("node_modules"))
            .map_err(|e| e.to_string())?;
        // Its page (`GET /`) has the name form.
        Ok(Self::spawn(copy, persist, &[], ("/", b"name-form")))
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "wrangler dev exited early ({status}); see {}",
                    self.log.display()
                );
            }
            let (path, marker) = self.probe;
            if roomkeeper_testkit::workerd::find_serving(self.port, path, marker)
                .is_some_and(|w| w.direct_port.is_some())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("wrangler dev did not start; see {}", self.log.display());
    }

    /// Stops wrangler and workerd (the whole process group): TERM, then KILL.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            roomkeeper_testkit::harness::stop_group(child);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// sockudo, a native Pusher server, on a free loopback port with the bench's Pusher app
/// (the local app of `wrangler.toml`: client events on, and no client-event or connection
/// limit in the way, as the bench server's gateway has none); stopped on drop.
pub struct Sockudo {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Sockudo {
    /// Starts the sockudo binary at `bin`; waits until its port accepts connections.
    pub fn start(bin: &Path, app: (&str, &str, &str)) -> Result<Self, String> {
        let port = roomkeeper_testkit::harness::free_port();
        let logs = root().join("target/bench-logs");
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let log = logs.join(format!("sockudo-{port}.log"));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let (id, key, secret) = app;
        let child = Command::new(bin)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("METRICS_ENABLED", "false")
            .env("SOCKUDO_DEFAULT_APP_ID", id)
            .env("SOCKUDO_DEFAULT_APP_KEY", key)
            .env("SOCKUDO_DEFAULT_APP_SECRET", secret)
            .env("SOCKUDO_DEFAULT_APP_ENABLE_CLIENT_MESSAGES", "true")
            .env("SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND", "100000")
            .env("SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS", "100000")
            .env("RATE_LIMITER_WS_MAX_REQUESTS", "100000")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut s = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(format!(
                    "sockudo exited ({status}); see {}",
                    s.log.display()
                ));
            }
            if Instant::now() > deadline {
                s.child.kill().ok();
                return Err(format!("sockudo did not start; see {}", s.log.display()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    /// Its process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sockudo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
