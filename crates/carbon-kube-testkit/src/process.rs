//! Child processes of the harness: spawning with a log file, a watchdog that
//! kills the child if the test process dies, and stopping by process id.
//!
//! The watchdog is a tiny `sh` whose stdin is a pipe held open by the test
//! process. When the test process ends for any reason, including SIGKILL, the
//! kernel closes the pipe, `read` returns, and the watchdog SIGKILLs the
//! component by its pid. On an orderly stop the harness kills the watchdog
//! first, then the component, and reaps both, so nothing is left behind.
//! No `unsafe` (`pre_exec`/`prctl`) is needed for this.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;

/// Number of log lines included in error messages.
pub(crate) const LOG_TAIL_LINES: usize = 50;

/// How long a component gets to exit after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running component, stopped on drop.
#[derive(Debug)]
pub(crate) struct Process {
    name: String,
    child: Child,
    watchdog: Option<Child>,
    log: PathBuf,
    stopping: bool,
}

impl Process {
    /// Starts `program` with `args`, stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &Path)],
        log: PathBuf,
    ) -> Result<Self, Error> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io(&log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(&log, e))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: a Ctrl-C in the terminal reaches the test
            // process only; the watchdogs then clean up.
            .process_group(0);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().map_err(|source| Error::Spawn {
            component: name.to_owned(),
            program: program.to_owned(),
            source,
        })?;
        let mut process = Self {
            name: name.to_owned(),
            child,
            watchdog: None,
            log,
            stopping: false,
        };
        // If the watchdog cannot start, `process` is dropped and the child killed.
        process.watchdog = Some(spawn_watchdog(name, process.pid())?);
        Ok(process)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(description)` if the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// The last [`LOG_TAIL_LINES`] lines of the log.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log, LOG_TAIL_LINES)
    }

    /// Kills the watchdog and sends SIGTERM, without waiting. Idempotent.
    pub(crate) fn begin_stop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if self.stopping || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.stopping = true;
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// Stops the watchdog, SIGKILLs the process and reaps both: a crash,
    /// not a shutdown. Idempotent.
    pub(crate) fn kill(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        self.stopping = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the watchdog, then the process (SIGTERM, then SIGKILL after a
    /// grace period), and reaps both. Idempotent.
    pub(crate) fn stop(&mut self) {
        self.begin_stop();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `sh` that SIGKILLs `pid` once its stdin (a pipe kept open by this
/// process) reaches end-of-file, i.e. once this process is gone.
fn spawn_watchdog(name: &str, pid: u32) -> Result<Child, Error> {
    let script = r#"read -r _; kill -KILL "$1" 2>/dev/null"#;
    Command::new("sh")
        .args([
            "-c",
            script,
            "carbon-kube-testkit-watchdog",
            &pid.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Spawn {
            component: format!("watchdog of {name}"),
            program: PathBuf::from("sh"),
            source,
        })
}

/// Starts `sh` that removes `dir` once this process is gone, so a SIGKILLed
/// test run leaves no temp directory behind. Dropping the returned child's
/// handle without killing it would trigger the removal; the harness kills it
/// first when it removes or keeps the directory itself.
pub(crate) fn spawn_dir_reaper(dir: &Path) -> Result<Child, Error> {
    // Give the component watchdogs a moment to kill their processes first.
    let script = r#"read -r _; sleep 2; rm -rf "$1""#;
    Command::new("sh")
        .args(["-c", script, "carbon-kube-testkit-reaper"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Spawn {
            component: "temp dir reaper".to_owned(),
            program: PathBuf::from("sh"),
            source,
        })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(Error::FreePort)?;
    Ok(listener.local_addr().map_err(Error::FreePort)?.port())
}

/// The last `lines` lines of the file at `path` (reads at most the last 256 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 256 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path, 3);
        assert_eq!(tail, "line 98\nline 99\nline 100");
        assert!(log_tail(&dir.path().join("missing"), 3).contains("could not read"));
    }

    /// `sleep 600` under a watchdog, logging into `dir`.
    fn sleeper(dir: &Path) -> Process {
        Process::spawn(
            "sleeper",
            Path::new("sleep"),
            &["600".to_owned()],
            &[],
            dir.join("sleeper.log"),
        )
        .unwrap()
    }

    #[test]
    fn stop_kills_and_reaps_the_child_and_its_watchdog() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = sleeper(dir.path());
        let pid = process.pid();
        assert!(process.exit_status().is_none());
        process.stop();
        assert!(process.exit_status().is_some());
        // Reaped: the pid no longer exists (not even as a zombie).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn watchdog_kills_the_child_when_its_pipe_closes() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = sleeper(dir.path());
        // Simulate the death of the test process: close the watchdog's stdin.
        let mut watchdog = process.watchdog.take().unwrap();
        drop(watchdog.stdin.take());
        watchdog.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while process.exit_status().is_none() {
            assert!(Instant::now() < deadline, "watchdog did not kill the child");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
