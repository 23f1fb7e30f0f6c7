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
use std::time::{Duration, Instant};

use roomkeeper_testkit::harness::{root, TempDir};

/// A running `wrangler dev` over a snapshot; stopped (its whole process group) on drop.
pub struct Server {
    child: Option<Child>,
    /// The public port (wrangler's proxy).
    pub port: u16,
    /// Where wrangler's output goes.
    pub log: PathBuf,
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
        let (child, port, log) = roomkeeper_testkit::harness::spawn_wrangler(
            &snapshot.0,
            &persist.0,
            vars,
            &root.join("target/bench-logs"),
        );
        let mut server = Self {
            child: Some(child),
            port,
            log,
            _snapshot: snapshot,
            _persist: persist,
        };
        server.wait_ready();
        server
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
            if roomkeeper_testkit::workerd::find(self.port).is_some_and(|w| w.direct_port.is_some())
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
