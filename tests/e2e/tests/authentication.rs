//! Long-term credentials (RFC 8489 §9.2) in the three forms the daemon accepts: static
//! users, coturn's `use-auth-secret` REST credentials and Wire/restund zrest credentials.

use turn_testkit::addresses::PEER_V4;
use turn_testkit::config::{RelayConfig, Xdp};
use turn_testkit::coturn::{start_peer, Credentials, Uclient, UclientReport};
use turn_testkit::credentials::{unix_now, zrest_password, zrest_username};
use turn_testkit::daemon::Daemon;
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

/// Starts topology, peer and daemon with `config`, runs uclient with `credentials` and
/// hands its report to `check` while the daemon still runs (so a failure shows its log).
fn run_uclient(
    test: &str,
    config: &RelayConfig,
    credentials: Credentials,
    check: impl FnOnce(&UclientReport),
) {
    if !privileged(test) {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let _peer = start_peer(&topology.peer, PEER_V4.into()).or_fail("starting the peer");
    let mut daemon = Daemon::start(&topology.relay, config).or_fail("starting turn-relay");
    let report = Uclient::new(credentials)
        .run(&topology.client)
        .or_fail("running turnutils_uclient");
    check(&report);
    daemon.ensure_running().or_fail("turn-relay after the run");
}

/// uclient gave up at the Allocate request (401 for every attempt), relaying nothing.
fn ensure_allocation_refused(report: &UclientReport) {
    let output = report.finished.output();
    assert!(
        !report.finished.succeeded()
            && !report.relayed_anything()
            && output.contains("Cannot complete Allocation"),
        "uclient with wrong credentials must fail at Allocate without relaying:\n{output}"
    );
}

#[test]
fn static_user_password_authenticates() {
    let config = RelayConfig::new(Xdp::Auto).with_user("bob", "bob-password");
    let credentials = Credentials::Password {
        username: "bob".into(),
        password: "bob-password".into(),
    };
    run_uclient(
        "static_user_password_authenticates",
        &config,
        credentials,
        |report| report.ensure_lossless(20).or_fail("static user"),
    );
}

#[test]
fn wrong_password_is_rejected() {
    let config = RelayConfig::new(Xdp::Auto).with_user("bob", "bob-password");
    let credentials = Credentials::Password {
        username: "bob".into(),
        password: "not-bobs-password".into(),
    };
    run_uclient(
        "wrong_password_is_rejected",
        &config,
        credentials,
        ensure_allocation_refused,
    );
}

#[test]
fn use_auth_secret_rest_credentials_authenticate() {
    let config = RelayConfig::new(Xdp::Auto).with_auth_secret("rest-api-secret");
    // uclient derives `<expiry>:carol` and base64(HMAC-SHA1(secret, username)) itself.
    let credentials = Credentials::AuthSecret {
        username: "carol".into(),
        secret: "rest-api-secret".into(),
    };
    run_uclient(
        "use_auth_secret_rest_credentials_authenticate",
        &config,
        credentials,
        |report| report.ensure_lossless(20).or_fail("use-auth-secret"),
    );
}

#[test]
fn zrest_credentials_with_the_second_secret_authenticate() {
    let config = RelayConfig::new(Xdp::Auto)
        .with_zrest_secret("zrest-secret-0")
        .with_zrest_secret("zrest-secret-1");
    let username = zrest_username(unix_now() + 3600, 1, "e2etest");
    let password = zrest_password("zrest-secret-1", &username).or_fail("zrest password");
    run_uclient(
        "zrest_credentials_with_the_second_secret_authenticate",
        &config,
        Credentials::Password { username, password },
        |report| report.ensure_lossless(20).or_fail("zrest"),
    );
}

#[test]
fn zrest_credentials_signed_with_the_wrong_secret_are_rejected() {
    let config = RelayConfig::new(Xdp::Auto).with_zrest_secret("zrest-secret-0");
    let username = zrest_username(unix_now() + 3600, 0, "e2etest");
    let password = zrest_password("some-other-secret", &username).or_fail("zrest password");
    run_uclient(
        "zrest_credentials_signed_with_the_wrong_secret_are_rejected",
        &config,
        Credentials::Password { username, password },
        ensure_allocation_refused,
    );
}
