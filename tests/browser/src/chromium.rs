//! Debian's headless Chromium under ChromeDriver: started in a process group of its own
//! with a fresh profile and home directory, and always killed (the whole group) and
//! removed on drop, also when the test fails or panics.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::webdriver::{millis, Driver, Session};

/// Debian's Chromium binary. `/usr/bin/chromium` is a wrapper script that adds Google API
/// keys and flags of its own; the tests choose every flag themselves.
pub const CHROMIUM: &str = "/usr/lib/chromium/chromium";
/// Debian's ChromeDriver (package chromium-driver), the same version as [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

// With the relay's limits and the page's own (DataChannelRun::limit), a test that hangs
// at any step still ends within a minute (a first build of turn-relay aside).

/// Until ChromeDriver answers `/status`.
const DRIVER_START_LIMIT: Duration = Duration::from_secs(8);
/// Until Chromium runs and the session exists (slow on a loaded 2-core machine).
const SESSION_START_LIMIT: Duration = Duration::from_secs(15);
/// Loading a local page.
const NAVIGATION_LIMIT: Duration = Duration::from_secs(5);
/// Closing the browser politely before the process group is killed.
const SESSION_END_LIMIT: Duration = Duration::from_secs(3);
/// Extra time for the HTTP request of a script, beyond the script's own timeout.
const SCRIPT_MARGIN: Duration = Duration::from_secs(2);

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// What a test may add to Chromium's fixed flags.
#[derive(Clone, Debug, Default)]
pub struct BrowserOptions {
    /// Base64 SHA-256 digests of SubjectPublicKeyInfo (DER) whose certificates Chromium
    /// accepts without verifying them: `--ignore-certificate-errors-spki-list`. It covers
    /// every TLS connection of the network service, TURN over TLS (`turns:`) included, and
    /// ignores all errors of a chain holding such a key (self-signed, unknown CA, name or
    /// IP mismatch). Chromium honours the flag only together with `--user-data-dir`, which
    /// [`Browser::launch`] always passes.
    pub trusted_spki_sha256: Vec<String>,
}

impl BrowserOptions {
    /// Trust certificates with this public key (base64 of SHA-256 over the DER
    /// SubjectPublicKeyInfo, as `openssl pkey -pubin -outform der | openssl dgst -sha256
    /// -binary | base64` prints it).
    pub fn trusting_spki(mut self, spki_sha256_base64: &str) -> BrowserOptions {
        self.trusted_spki_sha256.push(spki_sha256_base64.to_owned());
        self
    }

    /// Chromium's command line (without the binary) for a profile in `profile`.
    pub fn chromium_args(&self, profile: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            // No display on test machines.
            "--headless",
            // As root, Chromium's setuid/user-namespace sandbox refuses to start.
            "--no-sandbox",
            "--disable-gpu",
            // /dev/shm may be small in containers; Chromium then uses /tmp.
            "--disable-dev-shm-usage",
            // Chromium's own traffic (component updates, sync, QUIC probes, first-run
            // pages): the test machines' network is closed, and these connections are
            // refused or hang and slow start-up down.
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Not --disable-crashpad-for-testing: with it Chromium 156's network service
            // crashes at once ("FD ownership violation"). The crashpad handlers leave the
            // process group but exit by themselves when Chromium is gone.
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        if !self.trusted_spki_sha256.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                self.trusted_spki_sha256.join(",")
            ));
        }
        args
    }
}

/// Headless Chromium with one WebDriver session, driven by ChromeDriver.
pub struct Browser {
    driver_process: Child,
    driver: Driver,
    session: Option<Session>,
    /// Profile, home directory and ChromeDriver's log (with Chromium's), removed on drop.
    directory: PathBuf,
    log_path: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and a Chromium session with `options`.
    pub fn launch(options: &BrowserOptions) -> Result<Browser> {
        let directory = std::env::temp_dir().join(format!(
            "turn-browser-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        let profile = directory.join("profile");
        let home = directory.join("home");
        for path in [&profile, &home] {
            fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        }
        let log_path = directory.join("chromedriver.log");
        let (stdout, stderr) = crate::output_to_file(&log_path)?;
        let port = free_loopback_port()?;
        let driver_process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Chromium's own log (WebRTC and TLS errors) goes to ChromeDriver's output.
            .arg("--enable-chrome-logs")
            // Chromium writes ~/.pki (NSS), ~/.cache and ~/.config: keep them in the test's
            // directory.
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group: Chromium's processes inherit it, and drop kills the
            // group, whatever state the driver is in.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;
        let mut browser = Browser {
            driver_process,
            driver: Driver::on_loopback(port),
            session: None,
            directory,
            log_path,
        };
        browser
            .start_session(port, options, &profile)
            .with_context(|| format!("--- chromedriver log ---\n{}", browser.log_tail()))?;
        Ok(browser)
    }

    fn start_session(&mut self, port: u16, options: &BrowserOptions, profile: &Path) -> Result<()> {
        let deadline = Instant::now() + DRIVER_START_LIMIT;
        loop {
            if let Some(status) = self.driver_process.try_wait()? {
                bail!("chromedriver exited at start-up ({status})");
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                bail!("chromedriver not ready on port {port} after {DRIVER_START_LIMIT:?}");
            }
            if matches!(self.driver.ready(remaining), Ok(true)) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": options.chromium_args(profile),
            },
            "timeouts": { "pageLoad": millis(NAVIGATION_LIMIT) },
        });
        self.session = Some(self.driver.new_session(capabilities, SESSION_START_LIMIT)?);
        Ok(())
    }

    /// Loads a local file (the test pages under `page/`).
    pub fn open_file(&self, path: &Path) -> Result<()> {
        let url = file_url(path)?;
        self.driver
            .navigate(self.session()?, &url, NAVIGATION_LIMIT)
            .with_context(|| format!("opening {url}"))
    }

    /// Runs an asynchronous script (it calls `arguments[arguments.length - 1]` with its
    /// result) that finishes within `limit` by itself; WebDriver gives up a little later.
    pub fn execute_async(&self, script: &str, args: Value, limit: Duration) -> Result<Value> {
        let session = self.session()?;
        let script_timeout = limit + SCRIPT_MARGIN;
        self.driver
            .set_script_timeout(session, script_timeout, NAVIGATION_LIMIT)?;
        self.driver
            .execute_async(session, script, args, script_timeout + SCRIPT_MARGIN)
    }

    /// ChromeDriver's output so far (its log and Chromium's), the last lines only.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    }

    fn session(&self) -> Result<&Session> {
        self.session.as_ref().context("no WebDriver session")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Lets Chromium close its profile; the kill below follows regardless.
            let _ = self.driver.delete_session(&session, SESSION_END_LIMIT);
        }
        if thread::panicking() {
            eprintln!(
                "--- chromedriver and chromium log (tail) ---\n{}\n--- end of log ---",
                self.log_tail()
            );
        }
        let group = self.driver_process.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group created for the
        // driver at spawn; no memory is involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.driver_process.wait();
        let _ = fs::remove_dir_all(&self.directory);
    }
}

/// `file://` URL of an absolute, UTF-8 `path` (RFC 8089), every byte but unreserved
/// characters and `/` percent-encoded.
fn file_url(path: &Path) -> Result<String> {
    const PATH_SEGMENTS: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    ensure!(
        path.is_absolute(),
        "{} is not an absolute path",
        path.display()
    );
    Ok(format!(
        "file://{}",
        utf8_percent_encode(text, PATH_SEGMENTS)
    ))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (ChromeDriver, or the relay's TLS
/// listener, binds it next).
pub(crate) fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_encode_what_a_path_segment_may_not_hold() {
        assert_eq!(
            file_url(Path::new("/work/a b/page-1_x.html")).unwrap(),
            "file:///work/a%20b/page-1_x.html"
        );
        assert!(file_url(Path::new("relative.html")).is_err());
    }

    #[test]
    fn trusted_keys_become_one_spki_list_flag() {
        let args = BrowserOptions::default()
            .trusting_spki("AAAA")
            .trusting_spki("BBBB")
            .chromium_args(Path::new("/tmp/profile"));
        assert!(args.contains(&"--user-data-dir=/tmp/profile".to_owned()));
        assert!(args.contains(&"--ignore-certificate-errors-spki-list=AAAA,BBBB".to_owned()));
        let plain = BrowserOptions::default().chromium_args(Path::new("/tmp/profile"));
        assert!(!plain
            .iter()
            .any(|arg| arg.starts_with("--ignore-certificate")));
    }
}
