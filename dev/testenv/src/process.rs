//! Child processes that cannot outlive their owner.
//!
//! * Dropping a [`Process`] sends SIGTERM to its process group, waits a grace period, then
//!   SIGKILLs it. Drop also runs while a panicking test unwinds.
//! * If the whole test process dies (SIGKILL, abort), the kernel kills the children: each is
//!   started with `PR_SET_PDEATHSIG`. That signal fires when the *thread* that forked the child
//!   exits, and test threads and tokio's blocking threads come and go, so every child is forked
//!   by one spawner thread that lives as long as the process.
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("pier-testenv-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the process spawner thread");
        Mutex::new(tx)
    })
}

/// A running child process with its output in a log file.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
    stopped: bool,
}

impl Process {
    /// Starts `cmd` as `name`, with stdout and stderr appended to `log`, in its own process
    /// group, killed by the kernel if this process dies. `grace` is how long a stop waits after
    /// SIGTERM before SIGKILL.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("{name}: opening log {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| anyhow::anyhow!("process spawner lock poisoned"))?
            .send((cmd, tx))
            .map_err(|_| anyhow::anyhow!("process spawner thread is gone"))?;
        let child = rx
            .recv()
            .context("process spawner thread is gone")?
            .with_context(|| format!("{name}: starting {program}"))?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            grace,
            stopped: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log, lines)
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.stopped = true;
            bail!(
                "{} exited early ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The exit status, once the process has exited (reaping it).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        if status.is_some() {
            self.stopped = true;
        }
        status
    }

    /// Sends a signal to the whole process group.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with our own child's process group id.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), signal);
        }
    }

    /// Asks the process to stop (SIGTERM), without waiting.
    pub fn terminate(&self) {
        if !self.stopped {
            self.signal(libc::SIGTERM);
        }
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL; always reaps the child.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.terminate();
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Also kills anything the child left behind in its group.
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        self.stopped = true;
        tracing::debug!(name = %self.name, "stopped");
    }
}

/// Stops several processes at once: SIGTERM to all first, so their grace periods overlap.
pub fn stop_all<'a>(processes: impl IntoIterator<Item = &'a mut Process>) {
    let mut all: Vec<&mut Process> = processes.into_iter().collect();
    for p in &all {
        p.terminate();
    }
    for p in &mut all {
        p.stop();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file (empty if it cannot be read), for error messages.
pub fn file_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
