//! The one owner of the XDP program's maps: their names, their sizes, and every read
//! and write userspace does on them. (Pinning for restarts would go here too.)

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{anyhow, Context as _};
use aya::maps::Array;
use aya::maps::{
    DevMapHash, HashMap, IterableMap as _, MapData, MapError, PerCpuArray, PerCpuValues,
};
use aya::{Ebpf, EbpfLoader};
use turn_common::bandwidth::Bandwidth;
use turn_common::counters::{Counter, Outcome};
use turn_common::maps::{
    cache_version_bucket, gray_code, v4_bytes, AllocationTraffic, AllocationValue,
    ClientChannelKey, ClientChannelValue, ClientSide, FlowKey, PeerChannelKey, PeerChannelValue,
    PermissionKey, PermissionValue, PortFilter, RelayKey, RelayValue, CACHE_VERSION_BUCKETS,
    CACHE_VERSION_CYCLE, CONTROL_LIMITS, CONTROL_ROUTING_GENERATION, FAMILY_V4, FAMILY_V6,
};

use super::XdpCounters;
use crate::protocol::datapath::DatapathError;

// Map names, as declared in turn-ebpf/src/main.rs.
const COUNTERS: &str = "COUNTERS";
const RELAYS: &str = "RELAYS";
const CLIENT_ALLOCATIONS: &str = "CLIENT_ALLOCATIONS";
const PERMISSIONS: &str = "PERMISSIONS";
const CLIENT_CHANNELS: &str = "CLIENT_CHANNELS";
const PEER_CHANNELS: &str = "PEER_CHANNELS";
const TRAFFIC: &str = "TRAFFIC";
const EGRESS: &str = "EGRESS";
const PORT_FILTER: &str = "PORT_FILTER";
const CONTROL: &str = "CONTROL";
// Declared in turn-ebpf/src/channel_cache.rs.
const CHANNEL_CACHE: &str = "CHANNEL_CACHE";
const CHANNEL_CACHE_V6: &str = "CHANNEL_CACHE_V6";
const SEND_CACHE: &str = "SEND_CACHE";
const SEND_CACHE_V6: &str = "SEND_CACHE_V6";
const CACHE_VERSIONS: &str = "CACHE_VERSIONS";
// Declared in turn-ebpf/src/bandwidth.rs.
const BANDWIDTH: &str = "BANDWIDTH";
const RELAY_BANDWIDTH: &str = "RELAY_BANDWIDTH";
const RATE_LIMITED: &str = "RATE_LIMITED";

/// Entries per map for a given number of allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapSizes {
    /// RELAYS, CLIENT_ALLOCATIONS, TRAFFIC and BANDWIDTH slots (one per relayed address).
    pub allocations: u32,
    pub permissions: u32,
    pub channels: u32,
}

/// The most allocations the maps are sized for (a larger max_allocations still works:
/// allocations beyond the maps' capacity are relayed in userspace).
pub const MAX_FAST_PATH_ALLOCATIONS: u32 = 1 << 18;
/// The most entries a permission or channel map gets, bounding its kernel memory (about
/// 100 bytes per preallocated entry). Beyond it, the fast path refuses entries and the
/// [`crate::protocol::datapath::FastPath`] hands those allocations to userspace.
const MAX_FAST_PATH_ENTRIES: u32 = 1 << 22;

impl MapSizes {
    /// Sized so that no map fills up before the core refuses with 508: every allocation
    /// may hold its full quota of permissions and channels
    /// ([`crate::protocol::turn::ServerLimits`]), up to the bounds above.
    pub(crate) fn new(
        max_allocations: u32,
        permissions_per_allocation: u32,
        channels_per_allocation: u32,
    ) -> MapSizes {
        let allocations = max_allocations.clamp(1, MAX_FAST_PATH_ALLOCATIONS);
        let per_map = |per_allocation: u32| {
            per_allocation
                .max(1)
                .saturating_mul(allocations)
                .min(MAX_FAST_PATH_ENTRIES)
        };
        MapSizes {
            allocations,
            permissions: per_map(permissions_per_allocation),
            channels: per_map(channels_per_allocation),
        }
    }

    /// Sized for the default per-allocation caps of the core.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn for_allocations(max_allocations: u32) -> MapSizes {
        let limits = crate::protocol::turn::ServerLimits::default();
        let cap = |per_allocation: usize| u32::try_from(per_allocation).unwrap_or(u32::MAX);
        MapSizes::new(
            max_allocations,
            cap(limits.max_permissions_per_allocation),
            cap(limits.max_channels_per_allocation),
        )
    }
}

/// Sets the size of every map that scales with the number of allocations.
pub(crate) fn size_maps(loader: &mut EbpfLoader<'_>, sizes: MapSizes) {
    loader
        .map_max_entries(RELAYS, sizes.allocations)
        .map_max_entries(CLIENT_ALLOCATIONS, sizes.allocations)
        .map_max_entries(TRAFFIC, sizes.allocations)
        .map_max_entries(BANDWIDTH, sizes.allocations)
        .map_max_entries(PERMISSIONS, sizes.permissions)
        .map_max_entries(CLIENT_CHANNELS, sizes.channels)
        .map_max_entries(PEER_CHANNELS, sizes.channels);
}

/// Handles to the program's maps, taken out of the loaded object.
pub(crate) struct Maps {
    counters: PerCpuArray<MapData, Counter>,
    /// Dropped by a bandwidth limit, per direction (`turn_common::bandwidth::TO_PEER`,
    /// `TO_CLIENT`).
    rate_limited: PerCpuArray<MapData, Counter>,
    egress: DevMapHash<MapData>,
    /// The program's per-CPU caches of channels and of Send indications' client–peer
    /// pairs, IPv4 and IPv6 (only their memory is read here).
    channel_caches: [MapData; 4],
    /// Handed to the next-hop watcher once.
    routing_generation: Option<RoutingGeneration>,
    /// Handed to the [`super::BpfDatapath`] once.
    tables: Option<Tables>,
}

impl Maps {
    pub(crate) fn take(ebpf: &mut Ebpf, sizes: MapSizes) -> anyhow::Result<Maps> {
        fn take_map(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("the XDP object has no map {name}"))
        }
        let counters = PerCpuArray::try_from(take_map(ebpf, COUNTERS)?).context(COUNTERS)?;
        let egress = DevMapHash::try_from(take_map(ebpf, EGRESS)?).context(EGRESS)?;
        let rate_limited =
            PerCpuArray::try_from(take_map(ebpf, RATE_LIMITED)?).context(RATE_LIMITED)?;
        let mut channel_cache = |name| match take_map(ebpf, name)? {
            aya::maps::Map::PerCpuArray(data) => Ok(data),
            _ => Err(anyhow!("{name} is not a per-CPU array")),
        };
        let channel_caches = [
            channel_cache(CHANNEL_CACHE)?,
            channel_cache(CHANNEL_CACHE_V6)?,
            channel_cache(SEND_CACHE)?,
            channel_cache(SEND_CACHE_V6)?,
        ];
        let control_words = Array::try_from(take_map(ebpf, CONTROL)?).context(CONTROL)?;
        let control = Control::new(&control_words).context(CONTROL)?;
        let routing_generation = RoutingGeneration(control_words);
        let tables = Tables {
            relays: HashMap::try_from(take_map(ebpf, RELAYS)?).context(RELAYS)?,
            client_allocations: HashMap::try_from(take_map(ebpf, CLIENT_ALLOCATIONS)?)
                .context(CLIENT_ALLOCATIONS)?,
            permissions: HashMap::try_from(take_map(ebpf, PERMISSIONS)?).context(PERMISSIONS)?,
            client_channels: HashMap::try_from(take_map(ebpf, CLIENT_CHANNELS)?)
                .context(CLIENT_CHANNELS)?,
            peer_channels: HashMap::try_from(take_map(ebpf, PEER_CHANNELS)?)
                .context(PEER_CHANNELS)?,
            traffic: PerCpuArray::try_from(take_map(ebpf, TRAFFIC)?).context(TRAFFIC)?,
            bandwidth: Array::try_from(take_map(ebpf, BANDWIDTH)?).context(BANDWIDTH)?,
            relay_bandwidth: Array::try_from(take_map(ebpf, RELAY_BANDWIDTH)?)
                .context(RELAY_BANDWIDTH)?,
            control,
            cache_versions: CacheVersions::new(
                Array::try_from(take_map(ebpf, CACHE_VERSIONS)?).context(CACHE_VERSIONS)?,
            ),
            ports: Ports::empty(
                Array::try_from(take_map(ebpf, PORT_FILTER)?).context(PORT_FILTER)?,
            ),
            sizes,
        };
        Ok(Maps {
            counters,
            rate_limited,
            egress,
            channel_caches,
            routing_generation: Some(routing_generation),
            tables: Some(tables),
        })
    }

    /// The routing generation, for the one next-hop watcher.
    pub(crate) fn take_routing_generation(&mut self) -> Option<RoutingGeneration> {
        self.routing_generation.take()
    }

    /// Lets the program redirect frames out of interface `ifindex` (of the calling
    /// thread's network namespace): only for interfaces the program is attached to.
    pub(crate) fn add_egress(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding interface {ifindex} to {EGRESS}"))
    }

    pub(crate) fn counters(&self) -> anyhow::Result<XdpCounters> {
        let mut counters = Vec::with_capacity(Outcome::ALL.len());
        for outcome in Outcome::ALL {
            counters.push(
                summed(&self.counters, *outcome as u32)
                    .with_context(|| format!("reading counter {}", outcome.name()))?,
            );
        }
        let mut rate_limited = [Counter::default(); 2];
        for (direction, counter) in rate_limited.iter_mut().enumerate() {
            *counter = summed(&self.rate_limited, direction as u32)
                .with_context(|| format!("reading {RATE_LIMITED}[{direction}]"))?;
        }
        Ok(XdpCounters {
            counters,
            rate_limited,
        })
    }

    /// The flow tables, for the one [`super::BpfDatapath`].
    pub(crate) fn take_tables(&mut self) -> Option<Tables> {
        self.tables.take()
    }

    /// Kernel memory charged for all maps (`memlock` in their fdinfo), while this
    /// still holds the tables.
    pub(crate) fn memory_bytes(&self) -> anyhow::Result<u64> {
        let mut total = memlock_bytes(self.counters.map())?
            + memlock_bytes(self.rate_limited.map())?
            + memlock_bytes(self.egress.map())?
            + self
                .channel_caches
                .iter()
                .map(memlock_bytes)
                .sum::<anyhow::Result<u64>>()?;
        if let Some(generation) = &self.routing_generation {
            total += memlock_bytes(generation.0.map())?;
        }
        if let Some(tables) = &self.tables {
            total += tables.memory_bytes()?;
        }
        Ok(total)
    }
}

/// The program's routing generation (see `next_hop`): cached next hops of another
/// generation are looked up again; 0 turns the cache off. A word of the program's
/// `CONTROL`, whose other words [`Control`] writes.
pub(crate) struct RoutingGeneration(Array<MapData, u32>);

impl RoutingGeneration {
    pub(crate) fn get(&self) -> Result<u32, MapError> {
        self.0.get(&CONTROL_ROUTING_GENERATION, 0)
    }

    pub(crate) fn set(&mut self, generation: u32) -> Result<(), MapError> {
        self.0.set(CONTROL_ROUTING_GENERATION, generation, 0)
    }
}

/// The word of the program's `CONTROL` that follows the tables (through a handle of its
/// own; [`RoutingGeneration`] writes the routing generation): whether a bandwidth limit
/// was ever set. Until then the program skips the limits.
struct Control {
    map: Array<MapData, u32>,
    limits: bool,
}

impl Control {
    fn new(words: &Array<MapData, u32>) -> anyhow::Result<Control> {
        let fd = words
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the map's descriptor")?;
        let map = Array::try_from(aya::maps::Map::Array(MapData::from_fd(fd)?))?;
        Ok(Control { map, limits: false })
    }

    /// Makes the program look at the limits from now on (before the first is written).
    fn enable_limits(&mut self) -> Result<(), MapError> {
        if !self.limits {
            self.map.set(CONTROL_LIMITS, 1, 0)?;
            self.limits = true;
        }
        Ok(())
    }
}

/// The program's `CACHE_VERSIONS`: per bucket of addresses (`cache_version_bucket`), the
/// version the per-CPU channel cache's copies keyed by those addresses must carry. Each
/// write or removal of an entry moves on the versions of its client's and relayed
/// address's buckets ([`CacheVersions::invalidate`]), after it, so that no CPU uses a
/// copy of the entry as it was before; the copies of other allocations' entries stay.
/// Gray-coded ([`gray_code`]): the map update copies bytes while the program may read
/// the word.
struct CacheVersions {
    map: Array<MapData, u32>,
    /// Per bucket, how many times its version moved (the map holds its Gray code).
    moves: Box<[u32]>,
}

impl CacheVersions {
    /// The versions of a freshly loaded program: all 0 (Gray code of no move).
    fn new(map: Array<MapData, u32>) -> CacheVersions {
        CacheVersions {
            map,
            moves: vec![0; CACHE_VERSION_BUCKETS as usize].into_boxed_slice(),
        }
    }

    /// Moves the versions of the buckets of `client` and `relay` on: no CPU uses its
    /// copies of entries keyed by either any more.
    fn invalidate(&mut self, client: MapAddress, relay: MapAddress) -> Result<(), DatapathError> {
        let client = client.cache_version_bucket();
        let relay = relay.cache_version_bucket();
        self.move_on(client)?;
        if relay != client {
            self.move_on(relay)?;
        }
        Ok(())
    }

    fn move_on(&mut self, bucket: u32) -> Result<(), DatapathError> {
        let Some(moves) = self.moves.get_mut(bucket as usize) else {
            return Err(DatapathError::Update(format!(
                "{CACHE_VERSIONS}: no bucket {bucket}"
            )));
        };
        *moves = (*moves + 1) % CACHE_VERSION_CYCLE;
        self.map
            .set(bucket, gray_code(*moves), 0)
            .map_err(|error| DatapathError::Update(format!("{CACHE_VERSIONS}: {error}")))
    }
}

/// The hash maps userspace writes and the per-allocation traffic array it reads.
pub(crate) struct Tables {
    relays: HashMap<MapData, RelayKey, RelayValue>,
    client_allocations: HashMap<MapData, FlowKey, AllocationValue>,
    permissions: HashMap<MapData, PermissionKey, PermissionValue>,
    client_channels: HashMap<MapData, ClientChannelKey, ClientChannelValue>,
    peer_channels: HashMap<MapData, PeerChannelKey, PeerChannelValue>,
    traffic: PerCpuArray<MapData, AllocationTraffic>,
    /// Per allocation slot: its bandwidth limit and buckets.
    bandwidth: Array<MapData, Bandwidth>,
    /// The relay's total bandwidth limit and buckets (one entry).
    relay_bandwidth: Array<MapData, Bandwidth>,
    /// The limits switch.
    control: Control,
    /// The channel cache's versions by address.
    cache_versions: CacheVersions,
    /// The ports the entries are keyed by.
    ports: Ports,
    sizes: MapSizes,
}

/// The program's PORT_FILTER ([`PortFilter`]) and the copy userspace keeps of it: every
/// listener port and relayed port an entry was ever keyed by. The program skips the
/// lookups of frames to other ports, so a port must be in it before the first entry
/// keyed by it goes in (each `insert_*` of [`Tables`] adds them first), and is never
/// removed (a stale bit costs one missed lookup, a missing one would pass up a frame
/// that an entry relays).
///
/// Taken from the entries, not from the configuration: so it holds by construction for
/// any listener (several addresses and ports, one inside the relay port range on
/// another IP) and any relayed port, also for the test harnesses that load the program
/// without the daemon; and `server.listen` and `server.port_range` need no reload
/// handling (both need a restart anyway). A write replaces the whole value while the
/// program may read it, but only ever sets bits, so the program sees each byte either
/// as before or as after: never a bit missing that an installed entry needs.
struct Ports {
    map: Array<MapData, PortFilter>,
    filter: Box<PortFilter>,
}

impl Ports {
    /// The filter of a freshly loaded program: empty, as the map starts (no entry yet,
    /// so every lookup is skipped).
    fn empty(map: Array<MapData, PortFilter>) -> Ports {
        Ports {
            map,
            filter: Box::new(PortFilter::EMPTY),
        }
    }

    /// Adds the ports of an entry about to be inserted: its listener's, if it has a
    /// client side, and its relayed address's; writes the map if one of them is new.
    fn cover(
        &mut self,
        listener: Option<MapAddress>,
        relay: MapAddress,
    ) -> Result<(), DatapathError> {
        if add_ports(&mut self.filter, listener, relay) {
            self.map
                .set(0, *self.filter, 0)
                .map_err(|error| DatapathError::Update(format!("{PORT_FILTER}: {error}")))?;
        }
        Ok(())
    }
}

/// Adds `listener`'s port (if any) and `relay`'s to `filter`; whether one was new.
fn add_ports(filter: &mut PortFilter, listener: Option<MapAddress>, relay: MapAddress) -> bool {
    let listening =
        listener.is_some_and(|listener| filter.add_listening(u16::from_be_bytes(listener.port)));
    let relayed = filter.add_relayed(u16::from_be_bytes(relay.port));
    listening || relayed
}

/// An address as the maps store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MapAddress {
    pub family: u8,
    pub ip: [u8; 16],
    pub port: [u8; 2],
}

impl MapAddress {
    /// `ip` exactly as given: an IPv6 address stays IPv6 whatever it embeds (the core
    /// refuses IPv4-mapped peers; a NAT64 peer is an IPv6 peer), so the maps only ever
    /// hold the addresses the core checked.
    pub(crate) fn ip(ip: IpAddr) -> MapAddress {
        match ip {
            IpAddr::V4(v4) => MapAddress {
                family: FAMILY_V4,
                ip: v4_bytes(v4.octets()),
                port: [0; 2],
            },
            IpAddr::V6(v6) => MapAddress {
                family: FAMILY_V6,
                ip: v6.octets(),
                port: [0; 2],
            },
        }
    }

    pub(crate) fn socket(address: SocketAddr) -> MapAddress {
        MapAddress {
            port: address.port().to_be_bytes(),
            ..MapAddress::ip(address.ip())
        }
    }

    /// The address's bucket of the channel cache's versions, as the program computes it
    /// from a frame (words and port in memory order).
    fn cache_version_bucket(&self) -> u32 {
        let mut words = [0u32; 4];
        for (word, bytes) in words.iter_mut().zip(self.ip.chunks_exact(4)) {
            *word = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        cache_version_bucket(&words, u16::from_ne_bytes(self.port))
    }
}

/// One allocation's entries, as [`Tables`] writes them.
pub(crate) struct AllocationRecord {
    pub client: MapAddress,
    pub listener: MapAddress,
    pub relay: MapAddress,
    pub slot: u32,
    pub expires_ns: u64,
}

/// One channel's entries.
pub(crate) struct ChannelRecord {
    pub client: MapAddress,
    pub listener: MapAddress,
    pub relay: MapAddress,
    pub peer: MapAddress,
    pub number: u16,
    pub slot: u32,
    /// The earliest of the channel's, its permission's and its allocation's expiry.
    pub expires_ns: u64,
}

impl Tables {
    pub(crate) fn sizes(&self) -> MapSizes {
        self.sizes
    }

    pub(crate) fn insert_allocation(
        &mut self,
        record: &AllocationRecord,
    ) -> Result<(), DatapathError> {
        self.ports.cover(Some(record.listener), record.relay)?;
        let relay_key = RelayKey::new(record.relay.family, record.relay.ip, record.relay.port);
        let relay_value = RelayValue::new(
            client_side(record.client, record.listener),
            record.slot,
            record.expires_ns,
        );
        let relays = insert(&mut self.relays, relay_key, relay_value);
        let allocation = AllocationValue::new(
            record.relay.ip,
            record.relay.port,
            record.slot,
            record.expires_ns,
        );
        let inserted = relays
            .and_then(|()| insert(&mut self.client_allocations, flow_key(record), allocation));
        // After the writes, whether they succeeded or not (see `CacheVersions`).
        self.cache_versions
            .invalidate(record.client, record.relay)?;
        inserted
    }

    pub(crate) fn remove_allocation(
        &mut self,
        record: &AllocationRecord,
    ) -> Result<(), DatapathError> {
        let relays = remove(
            &mut self.relays,
            &RelayKey::new(record.relay.family, record.relay.ip, record.relay.port),
        );
        let removed = relays.and_then(|()| remove(&mut self.client_allocations, &flow_key(record)));
        // After the removals, whether they succeeded or not.
        self.cache_versions
            .invalidate(record.client, record.relay)?;
        removed
    }

    /// A permission for `peer` covering its ports `ports`, of the allocation of `client`
    /// on `relay`.
    pub(crate) fn insert_permission(
        &mut self,
        client: MapAddress,
        relay: MapAddress,
        peer: MapAddress,
        ports: RangeInclusive<u16>,
        expires_ns: u64,
    ) -> Result<(), DatapathError> {
        self.ports.cover(None, relay)?;
        let inserted = insert(
            &mut self.permissions,
            permission_key(relay, peer),
            PermissionValue::new(expires_ns, *ports.start(), *ports.end()),
        );
        // After the write: it may have replaced an entry (a refresh, other ports).
        self.cache_versions.invalidate(client, relay)?;
        inserted
    }

    /// The permission for `peer` of the allocation of `client` on `relay`.
    pub(crate) fn remove_permission(
        &mut self,
        client: MapAddress,
        relay: MapAddress,
        peer: MapAddress,
    ) -> Result<(), DatapathError> {
        let removed = remove(&mut self.permissions, &permission_key(relay, peer));
        self.cache_versions.invalidate(client, relay)?;
        removed
    }

    /// Both channel entries or none: when the second insert fails, the first is rolled
    /// back, so no direction relays on a half-installed channel.
    pub(crate) fn insert_channel(&mut self, record: &ChannelRecord) -> Result<(), DatapathError> {
        self.ports.cover(Some(record.listener), record.relay)?;
        let number = record.number.to_be_bytes();
        let client_value = ClientChannelValue::new(
            record.peer.family,
            record.peer.ip,
            record.peer.port,
            record.relay.ip,
            record.relay.port,
            record.slot,
            record.expires_ns,
        );
        insert(
            &mut self.client_channels,
            client_channel_key(record),
            client_value,
        )?;
        let inserted = insert(
            &mut self.peer_channels,
            peer_channel_key(record),
            PeerChannelValue::new(
                number,
                client_side(record.client, record.listener),
                record.slot,
                record.expires_ns,
            ),
        );
        if inserted.is_err() {
            if let Err(error) = remove(&mut self.client_channels, &client_channel_key(record)) {
                tracing::warn!(%error, "rolling back a half-installed fast-path channel failed");
            }
        }
        // After the writes (see `CacheVersions`): a new key changes no copy of an
        // entry, but ends the peer's "no channel" copies, and this one may have replaced
        // an entry (a refresh, a rebind).
        self.cache_versions
            .invalidate(record.client, record.relay)?;
        inserted
    }

    pub(crate) fn remove_channel(&mut self, record: &ChannelRecord) -> Result<(), DatapathError> {
        let client_side = remove(&mut self.client_channels, &client_channel_key(record));
        let peer_side = remove(&mut self.peer_channels, &peer_channel_key(record));
        // After the removals, whether they succeeded or not.
        self.cache_versions
            .invalidate(record.client, record.relay)?;
        client_side.and(peer_side)
    }

    /// Zeroes an allocation slot's traffic (a new allocation starts from nothing).
    pub(crate) fn reset_traffic(&mut self, slot: u32) -> Result<(), DatapathError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, error)| DatapathError::Update(format!("{what}: {error}")))?;
        let zeroes = PerCpuValues::try_from(vec![AllocationTraffic::default(); cpus])
            .map_err(|error| DatapathError::Update(error.to_string()))?;
        self.traffic
            .set(slot, zeroes, 0)
            .map_err(|error| DatapathError::Update(error.to_string()))
    }

    /// Sets an allocation slot's bandwidth limit (0: unlimited), with full buckets.
    pub(crate) fn limit_bandwidth(
        &mut self,
        slot: u32,
        bytes_per_second: u64,
    ) -> Result<(), DatapathError> {
        self.enable_limits(bytes_per_second)?;
        self.bandwidth
            .set(slot, Bandwidth::new(bytes_per_second), 0)
            .map_err(|error| DatapathError::Update(error.to_string()))
    }

    /// Sets the relay's total bandwidth limit (0: unlimited), with full buckets.
    pub(crate) fn limit_relay_bandwidth(
        &mut self,
        bytes_per_second: u64,
    ) -> Result<(), DatapathError> {
        self.enable_limits(bytes_per_second)?;
        self.relay_bandwidth
            .set(0, Bandwidth::new(bytes_per_second), 0)
            .map_err(|error| DatapathError::Update(error.to_string()))
    }

    /// Before a limit of `bytes_per_second` is written: the program must look at the
    /// limits if it is one (0: unlimited).
    fn enable_limits(&mut self, bytes_per_second: u64) -> Result<(), DatapathError> {
        if bytes_per_second == 0 {
            return Ok(());
        }
        self.control
            .enable_limits()
            .map_err(|error| DatapathError::Update(format!("{CONTROL}: {error}")))
    }

    /// An allocation slot's traffic summed over CPUs.
    pub(crate) fn traffic(&self, slot: u32) -> Result<AllocationTraffic, MapError> {
        let per_cpu = self.traffic.get(&slot, 0)?;
        Ok(per_cpu
            .iter()
            .fold(AllocationTraffic::default(), |sum, cpu| AllocationTraffic {
                to_peer_packets: sum.to_peer_packets + cpu.to_peer_packets,
                to_peer_bytes: sum.to_peer_bytes + cpu.to_peer_bytes,
                to_client_packets: sum.to_client_packets + cpu.to_client_packets,
                to_client_bytes: sum.to_client_bytes + cpu.to_client_bytes,
            }))
    }

    pub(crate) fn memory_bytes(&self) -> anyhow::Result<u64> {
        Ok(memlock_bytes(self.relays.map())?
            + memlock_bytes(self.client_allocations.map())?
            + memlock_bytes(self.permissions.map())?
            + memlock_bytes(self.client_channels.map())?
            + memlock_bytes(self.peer_channels.map())?
            + memlock_bytes(self.traffic.map())?
            + memlock_bytes(self.bandwidth.map())?
            + memlock_bytes(self.relay_bandwidth.map())?
            + memlock_bytes(self.ports.map.map())?
            + memlock_bytes(self.cache_versions.map.map())?)
    }
}

fn client_side(client: MapAddress, listener: MapAddress) -> ClientSide {
    ClientSide::new(
        client.family,
        client.ip,
        client.port,
        listener.ip,
        listener.port,
    )
}

fn flow_key(record: &AllocationRecord) -> FlowKey {
    FlowKey::new(
        record.client.family,
        record.client.ip,
        record.client.port,
        record.listener.ip,
        record.listener.port,
        record.relay.family,
    )
}

fn permission_key(relay: MapAddress, peer: MapAddress) -> PermissionKey {
    PermissionKey::new(relay.family, relay.ip, relay.port, peer.ip)
}

fn client_channel_key(record: &ChannelRecord) -> ClientChannelKey {
    ClientChannelKey::new(
        record.client.family,
        record.client.ip,
        record.client.port,
        record.listener.ip,
        record.listener.port,
        record.number.to_be_bytes(),
    )
}

fn peer_channel_key(record: &ChannelRecord) -> PeerChannelKey {
    PeerChannelKey::new(
        record.relay.family,
        record.relay.ip,
        record.relay.port,
        record.peer.ip,
        record.peer.port,
    )
}

fn insert<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: K,
    value: V,
) -> Result<(), DatapathError> {
    map.insert(key, value, 0).map_err(|error| match &error {
        // A full hash map refuses new keys with E2BIG.
        MapError::SyscallError(syscall) if syscall.io_error.raw_os_error() == Some(libc::E2BIG) => {
            DatapathError::MapFull
        }
        _ => DatapathError::Update(error.to_string()),
    })
}

fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
) -> Result<(), DatapathError> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        Err(MapError::SyscallError(syscall))
            if syscall.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(MapError::KeyNotFound) => Ok(()),
        Err(error) => Err(DatapathError::Update(error.to_string())),
    }
}

/// Entry `index` of a per-CPU counter array, summed over CPUs.
fn summed(array: &PerCpuArray<MapData, Counter>, index: u32) -> Result<Counter, MapError> {
    Ok(array
        .get(&index, 0)?
        .iter()
        .fold(Counter::default(), |sum, counter| Counter {
            packets: sum.packets + counter.packets,
            bytes: sum.bytes + counter.bytes,
        }))
}

fn memlock_bytes(map: &MapData) -> anyhow::Result<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let path = format!("/proc/self/fdinfo/{fd}");
    let fdinfo = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .ok_or_else(|| anyhow!("{path} has no memlock line"))?
        .trim()
        .parse()
        .with_context(|| format!("parsing memlock in {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_stored_exactly_as_the_core_checked_them() {
        let mapped: SocketAddr = "[::ffff:198.18.0.1]:5000".parse().expect("addr");
        let stored = MapAddress::socket(mapped);
        assert_eq!(stored.family, FAMILY_V6);
        assert_eq!(
            stored.ip,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1]
        );
        assert_eq!(stored.port, 5000u16.to_be_bytes());
        let nat64: IpAddr = "64:ff9b::198.18.0.1".parse().expect("ip");
        assert_eq!(MapAddress::ip(nat64).family, FAMILY_V6);
        let v4: IpAddr = "198.18.0.1".parse().expect("ip");
        let stored = MapAddress::ip(v4);
        assert_eq!(
            (stored.family, stored.ip),
            (FAMILY_V4, v4_bytes([198, 18, 0, 1]))
        );
    }

    #[test]
    fn the_port_filter_holds_the_listener_and_relayed_ports_of_every_entry() {
        let socket = |text: &str| MapAddress::socket(text.parse().expect("address"));
        let mut filter = PortFilter::EMPTY;
        // An allocation: its client flow's listener port and its relayed port.
        assert!(add_ports(
            &mut filter,
            Some(socket("198.18.0.1:3478")),
            socket("198.18.0.1:49152")
        ));
        // A permission: only its relayed port, here already in.
        assert!(!add_ports(&mut filter, None, socket("198.18.0.1:49152")));
        // A channel of another listener, IPv6, whose port lies in the relay port range
        // (allowed on an IP that is not a relay address): both bits, independently.
        assert!(add_ports(
            &mut filter,
            Some(socket("[2001:db8::1]:50000")),
            socket("[2001:db8::2]:65535")
        ));
        let listening: Vec<u16> = (0..=u16::MAX)
            .filter(|port| filter.is_listening(*port))
            .collect();
        let relayed: Vec<u16> = (0..=u16::MAX)
            .filter(|port| filter.is_relayed(*port))
            .collect();
        assert_eq!(listening, [3478, 50000]);
        assert_eq!(relayed, [49152, 65535]);
    }

    #[test]
    fn maps_hold_every_allocation_at_its_caps() {
        let sizes = MapSizes::new(16_384, 10, 12);
        assert_eq!(
            sizes,
            MapSizes {
                allocations: 16_384,
                permissions: 163_840,
                channels: 196_608,
            }
        );
        assert_eq!(
            MapSizes::for_allocations(100),
            MapSizes::new(
                100,
                crate::protocol::turn::DEFAULT_MAX_PERMISSIONS_PER_ALLOCATION as u32,
                crate::protocol::turn::DEFAULT_MAX_CHANNELS_PER_ALLOCATION as u32
            )
        );
        // Bounded: the kernel memory of a map stays bounded whatever the configuration.
        let huge = MapSizes::new(u32::MAX, u32::MAX, 0);
        assert_eq!(huge.allocations, MAX_FAST_PATH_ALLOCATIONS);
        assert_eq!(huge.permissions, MAX_FAST_PATH_ENTRIES);
        assert_eq!(huge.channels, MAX_FAST_PATH_ALLOCATIONS);
    }
}
