//! The few W3C WebDriver commands the browser tests use (W3C WebDriver, sections "New
//! Session", "Navigate To", "Execute Async Script", "Delete Session", "Set Timeouts", "Status"), spoken as
//! JSON over HTTP to a driver on loopback. Every request carries its own time limit.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A WebDriver server (ChromeDriver) at `http://127.0.0.1:<port>`.
pub struct Driver {
    agent: ureq::Agent,
    base: String,
}

/// A browser session of a [`Driver`]: one browser process with its own profile.
pub struct Session {
    pub id: String,
}

impl Driver {
    pub fn on_loopback(port: u16) -> Driver {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // WebDriver reports its errors as JSON bodies of 4xx/5xx responses.
            .http_status_as_error(false)
            .build()
            .into();
        Driver {
            agent,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `GET /status`: whether the driver accepts new sessions.
    pub fn ready(&self, limit: Duration) -> Result<bool> {
        let value = self.send("GET", "/status", None, limit)?;
        Ok(value["ready"].as_bool().unwrap_or(false))
    }

    /// `POST /session` with `capabilities` as the `alwaysMatch` set.
    pub fn new_session(&self, capabilities: Value, limit: Duration) -> Result<Session> {
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let value = self.send("POST", "/session", Some(&body), limit)?;
        let id = value["sessionId"]
            .as_str()
            .with_context(|| format!("new session: no sessionId in {value}"))?;
        Ok(Session { id: id.to_owned() })
    }

    /// `POST /session/{id}/url`: loads `url` and waits for it (page load strategy "normal").
    pub fn navigate(&self, session: &Session, url: &str, limit: Duration) -> Result<()> {
        let path = format!("/session/{}/url", session.id);
        self.send("POST", &path, Some(&json!({ "url": url })), limit)?;
        Ok(())
    }

    /// `POST /session/{id}/timeouts`: how long asynchronous scripts may run.
    pub fn set_script_timeout(
        &self,
        session: &Session,
        timeout: Duration,
        limit: Duration,
    ) -> Result<()> {
        let path = format!("/session/{}/timeouts", session.id);
        self.send(
            "POST",
            &path,
            Some(&json!({ "script": millis(timeout) })),
            limit,
        )?;
        Ok(())
    }

    /// `POST /session/{id}/execute/async`: runs `script` with `args`; the script finishes
    /// by calling its last argument with the result. The session's script timeout bounds
    /// it inside the browser, `limit` bounds the HTTP request.
    pub fn execute_async(
        &self,
        session: &Session,
        script: &str,
        args: Value,
        limit: Duration,
    ) -> Result<Value> {
        let path = format!("/session/{}/execute/async", session.id);
        let body = json!({ "script": script, "args": args });
        self.send("POST", &path, Some(&body), limit)
    }

    /// `DELETE /session/{id}`: the driver closes the browser.
    pub fn delete_session(&self, session: &Session, limit: Duration) -> Result<()> {
        self.send("DELETE", &format!("/session/{}", session.id), None, limit)?;
        Ok(())
    }

    /// One command: the response's `value`, or its WebDriver error as an error.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("POST", Some(body)) => within(self.agent.post(&url), limit).send_json(body),
            ("GET", None) => within(self.agent.get(&url), limit).call(),
            ("DELETE", None) => within(self.agent.delete(&url), limit).call(),
            _ => bail!("unsupported WebDriver request {method} {path}"),
        };
        let mut response = response.with_context(|| format!("WebDriver {method} {path}"))?;
        let status = response.status();
        let mut reply: Value = response
            .body_mut()
            .read_json()
            .with_context(|| format!("WebDriver {method} {path}: reply is not JSON ({status})"))?;
        let value = reply["value"].take();
        if !status.is_success() || value.get("error").is_some() {
            bail!(
                "WebDriver {method} {path}: {status} {}: {}",
                value["error"].as_str().unwrap_or("(no error code)"),
                value["message"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(value)
    }
}

/// `request` bounded by `limit` as a whole (connect, send, wait, read).
fn within<B>(request: ureq::RequestBuilder<B>, limit: Duration) -> ureq::RequestBuilder<B> {
    request.config().timeout_global(Some(limit)).build()
}

/// A duration as WebDriver's timeouts count it: integer milliseconds.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
