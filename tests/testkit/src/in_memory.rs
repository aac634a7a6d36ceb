//! The relay's sans-IO core (`turn_relay::protocol::turn::Server`) built from a
//! [`RelayConfig`] exactly as the daemon builds it (the same TOML through the daemon's own
//! configuration code), driven in memory with the testkit's STUN client messages: which
//! answers and which fast-path commands the core produces for a sequence of datagrams,
//! without sockets, namespaces or time passing.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use turn_relay::daemon::config::Config;
use turn_relay::protocol::datapath::{ClientFlow, FastPathCommand};
use turn_relay::protocol::stun::attributes as attr;
use turn_relay::protocol::stun::{Class, MessageBuilder, Method};
use turn_relay::protocol::turn::{Forward, Now, Server, ServerStats, Transmit};

use crate::config::{RelayConfig, User};
use crate::stun_client::{allocate_request, message, transaction_id, Response, Session};

/// The core of a relay configured like `RelayConfig`, in memory.
pub struct InMemoryRelay {
    server: Server<StdRng>,
    /// The daemon's view of the configuration (its peer policy, limits, addresses).
    config: Config,
    now: Now,
    /// Fast-path commands the core emitted and the test has not taken yet.
    fast_path: Vec<FastPathCommand>,
}

/// An allocation made through [`InMemoryRelay::allocate`].
#[derive(Clone, Debug)]
pub struct InMemoryClient {
    pub flow: ClientFlow,
    pub session: Session,
    pub relayed: SocketAddr,
}

impl InMemoryRelay {
    /// The core the daemon would run with `config` (peer policy, limits and all), with a
    /// seeded RNG.
    pub fn new(config: &RelayConfig) -> Result<InMemoryRelay> {
        InMemoryRelay::seeded(config, 8)
    }

    /// [`InMemoryRelay::new`] with the core's RNG seeded with `seed`.
    pub fn seeded(config: &RelayConfig, seed: u64) -> Result<InMemoryRelay> {
        Ok(InMemoryRelay::from_parsed(parse(config)?, seed))
    }

    /// The core of an already parsed configuration (see [`parse`]), its RNG seeded with
    /// `seed`: for callers that build many.
    pub fn from_parsed(parsed: Config, seed: u64) -> InMemoryRelay {
        let server = Server::new(
            parsed.server_config(),
            parsed.authenticator(),
            parsed.peer_policy(),
            StdRng::seed_from_u64(seed),
        )
        .with_limits(parsed.server_limits());
        let unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        InMemoryRelay {
            server,
            config: parsed,
            now: Now {
                instant: Instant::now(),
                unix_secs,
            },
            fast_path: Vec::new(),
        }
    }

    /// Hands `datagram` from `flow`'s client to the core; returns the STUN answers and
    /// the relayed datagram, if any. Socket commands are drained (nothing is bound) and
    /// fast-path commands kept for [`InMemoryRelay::take_fast_path`].
    pub fn client_datagram(
        &mut self,
        flow: ClientFlow,
        datagram: &[u8],
    ) -> (Vec<Transmit>, Option<Forward>) {
        let forward = self
            .server
            .handle_client_datagram(self.now, flow, datagram, Some(64));
        while self.server.poll_command().is_some() {}
        self.fast_path
            .extend(std::iter::from_fn(|| self.server.poll_fast_path()));
        let transmits = std::iter::from_fn(|| self.server.poll_transmit()).collect();
        (transmits, forward)
    }

    /// Hands `datagram` from `peer` on relay socket `relay` to the core; returns the
    /// datagram relayed to the client, if any: where it goes and its bytes.
    pub fn peer_datagram(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        datagram: &[u8],
    ) -> Option<(Forward, Vec<u8>)> {
        let mut out = Vec::new();
        let forward = self.server.handle_peer_datagram(
            self.now.instant,
            relay,
            peer,
            datagram,
            &mut out,
            Some(64),
        );
        forward.map(|forward| (forward, out))
    }

    /// Lets `elapsed` pass (monotonic and wall clock) and runs the core's due timers.
    pub fn advance(&mut self, elapsed: Duration) {
        self.now.instant += elapsed;
        self.now.unix_secs += elapsed.as_secs();
        self.server.handle_timeout(self.now);
        while self.server.poll_command().is_some() {}
        while self.server.poll_transmit().is_some() {}
        self.fast_path
            .extend(std::iter::from_fn(|| self.server.poll_fast_path()));
    }

    /// The core's counters now.
    pub fn stats(&self) -> ServerStats {
        self.server.stats()
    }

    /// The daemon's parsed configuration (peer policy, limits, addresses).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The fast-path commands emitted since the last call, in order.
    pub fn take_fast_path(&mut self) -> Vec<FastPathCommand> {
        std::mem::take(&mut self.fast_path)
    }

    /// The one answer to a request from `flow`.
    pub fn request(&mut self, flow: ClientFlow, request: &[u8]) -> Result<Response> {
        let (transmits, _) = self.client_datagram(flow, request);
        ensure!(
            transmits.len() == 1,
            "expected one answer, got {}",
            transmits.len()
        );
        let answer = &transmits[0];
        ensure!(
            answer.to == flow.client && answer.from == flow.listener,
            "answer from {} to {} on flow {flow:?}",
            answer.from,
            answer.to
        );
        Response::parse(&answer.payload).context("the answer is not a STUN response")
    }

    /// Allocate (401, then with credentials) for `user` from `flow`; an IPv6 relayed
    /// address when `ipv6`.
    pub fn allocate(
        &mut self,
        flow: ClientFlow,
        user: &User,
        ipv6: bool,
    ) -> Result<InMemoryClient> {
        let challenge = self.request(flow, &allocate_request(ipv6, None))?;
        let session = Session::from_challenge(user, &challenge)?;
        let response = self.request(flow, &allocate_request(ipv6, Some(&session)))?;
        ensure!(
            response.success,
            "Allocate failed: {:?} {}",
            response.error_code,
            response.reason
        );
        Ok(InMemoryClient {
            flow,
            relayed: response
                .relayed
                .context("Allocate success without XOR-RELAYED-ADDRESS")?,
            session,
        })
    }

    /// A request of `client`'s session: `method` with `attributes`, signed.
    pub fn signed(
        &mut self,
        client: &InMemoryClient,
        method: Method,
        attributes: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Result<Response> {
        let request = message(
            method,
            Class::Request,
            &transaction_id(),
            Some(&client.session),
            attributes,
        );
        self.request(client.flow, &request)
    }

    /// CreatePermission for `peers` (RFC 8656 §9.1).
    pub fn create_permission(
        &mut self,
        client: &InMemoryClient,
        peers: &[SocketAddr],
    ) -> Result<Response> {
        self.signed(client, Method::CREATE_PERMISSION, |builder| {
            for peer in peers {
                builder.xor_address(attr::XOR_PEER_ADDRESS, *peer);
            }
        })
    }

    /// ChannelBind `number` to `peer` (RFC 8656 §12.1).
    pub fn channel_bind(
        &mut self,
        client: &InMemoryClient,
        number: u16,
        peer: SocketAddr,
    ) -> Result<Response> {
        let mut value = [0u8; 4];
        value[..2].copy_from_slice(&number.to_be_bytes());
        self.signed(client, Method::CHANNEL_BIND, |builder| {
            builder
                .attribute(attr::CHANNEL_NUMBER, &value)
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
    }
}

/// `config` as the daemon parses it.
pub fn parse(config: &RelayConfig) -> Result<Config> {
    let text = config.to_toml();
    Config::parse(&text, "in-memory relay").map_err(|error| anyhow::anyhow!("{error}\n{text}"))
}
