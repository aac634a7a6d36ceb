//! Child processes bounded in time: short commands run to completion within a limit,
//! background processes are stopped (SIGTERM, then SIGKILL) when their guard drops.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// How long a configuration command (ip, sysctl, ethtool, ss) may take.
const CONFIGURATION_COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// How long a background process may take to exit after SIGTERM.
const TERMINATION_GRACE: Duration = Duration::from_secs(5);

/// A command line for logs and errors.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a short configuration command; fails with its output unless it succeeds in time.
/// Returns its stdout.
pub fn run(command: &mut Command) -> Result<String> {
    let line = describe(command);
    let finished = run_bounded(command, CONFIGURATION_COMMAND_LIMIT)?;
    ensure!(
        finished.succeeded(),
        "`{line}` failed ({}): {}",
        finished.status.map_or_else(
            || "killed at its time limit".to_owned(),
            |status| status.to_string()
        ),
        finished.output()
    );
    Ok(finished.stdout)
}

/// The result of a child process run with a time limit.
#[derive(Debug)]
pub struct Finished {
    /// None when the time limit was hit and the process was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// stdout followed by stderr, for parsing and failure messages.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `command`, killing it after `limit`; collects its output either way.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Result<Finished> {
    let line = describe(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{line}`"))?
        {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Already exited between the checks is fine; wait() reaps it either way.
            let _ = child.kill();
            child
                .wait()
                .with_context(|| format!("reaping `{line}` after its time limit"))?;
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error only truncates what the failure message shows.
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Sends `signal` to a child not yet reaped.
fn signal(child: &mut Child, signal: libc::c_int) {
    if let (Ok(None), Ok(pid)) = (child.try_wait(), libc::pid_t::try_from(child.id())) {
        // SAFETY: `pid` is our own child, not yet reaped (try_wait returned None).
        unsafe { libc::kill(pid, signal) };
    }
}

/// Sends `first` (SIGTERM, or SIGINT for programs that flush on it), waits up to `grace`,
/// then SIGKILLs. Returns the exit status.
fn stop(child: &mut Child, first: libc::c_int, grace: Duration) -> Option<ExitStatus> {
    signal(child, first);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A background process stopped (SIGTERM, then SIGKILL) on drop.
pub struct Background {
    child: Child,
    description: String,
    stop_signal: libc::c_int,
}

impl Background {
    /// Starts `command` with stdin closed and the given stdout and stderr.
    pub fn spawn(command: &mut Command, output: Stdio, errors: Stdio) -> Result<Background> {
        let description = describe(command);
        let child = command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .with_context(|| format!("could not start `{description}`"))?;
        Ok(Background {
            child,
            description,
            stop_signal: libc::SIGTERM,
        })
    }

    /// Stop with SIGINT instead of SIGTERM (tcpdump flushes its file on SIGINT).
    pub fn stopped_by_sigint(mut self) -> Background {
        self.stop_signal = libc::SIGINT;
        self
    }

    /// The process id (`ip netns exec` execs its program, so this is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self
            .child
            .try_wait()
            .with_context(|| format!("checking `{}`", self.description))?
        {
            None => Ok(()),
            Some(status) => bail!("`{}` exited ({status})", self.description),
        }
    }

    /// Waits up to `limit` for the process to exit by itself: how it ended, or None if it
    /// still runs.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            let exited = self
                .child
                .try_wait()
                .with_context(|| format!("checking `{}`", self.description))?;
            if exited.is_some() || Instant::now() >= deadline {
                return Ok(exited);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (SIGHUP, SIGUSR1…) to the process.
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        let sent = unsafe { libc::kill(pid, signal) };
        ensure!(
            sent == 0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// Stops the process now (a no-op once stopped) and returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        stop(&mut self.child, self.stop_signal, TERMINATION_GRACE)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        stop(&mut self.child, self.stop_signal, TERMINATION_GRACE);
    }
}

/// Turns a helper's error into a test failure showing the whole error chain (and,
/// through the guards' Drop, the daemon log).
pub trait OrFail<T> {
    #[track_caller]
    fn or_fail(self, what: &str) -> T;
}

impl<T, E: Into<anyhow::Error>> OrFail<T> for std::result::Result<T, E> {
    #[track_caller]
    fn or_fail(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(error) => panic!("{what}: {:#}", error.into()),
        }
    }
}

impl<T> OrFail<T> for Option<T> {
    #[track_caller]
    fn or_fail(self, what: &str) -> T {
        match self {
            Some(value) => value,
            None => panic!("{what}: missing"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_runs_collect_output_and_kill_at_the_limit() {
        let finished = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(10),
        )
        .expect("sh runs");
        assert!(finished.succeeded());
        assert_eq!(
            (finished.stdout.as_str(), finished.stderr.as_str()),
            ("out\n", "err\n")
        );
        let killed = run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(100))
            .expect("sleep runs");
        assert!(killed.status.is_none(), "killed at its limit");
    }

    #[test]
    fn background_processes_are_stopped_on_drop() {
        let mut sleeper = Background::spawn(
            Command::new("sleep").arg("30"),
            Stdio::null(),
            Stdio::null(),
        )
        .expect("sleep starts");
        sleeper.ensure_running().expect("still running");
        let status = sleeper.stop().expect("reaped");
        assert!(!status.success(), "ended by a signal");
    }
}
