//! [`BpfDatapath`]: the [`Datapath`] the core's fast-path commands are applied to, writing
//! the XDP program's maps through [`super::maps::Tables`] and keeping a mirror of what it
//! installed (to cascade removals and bound channel expiries by their allocation's). The
//! mirror holds each allocation's permissions and channels with the allocation, so a
//! refresh or a removal touches only that allocation's entries, however many others exist.
//!
//! The mirror is compact, because it holds one entry per allocation: the allocations sit
//! in a slab indexed by their TRAFFIC slot (a vacant entry is a free slot), found by their
//! relayed address through a map to that slot; each keeps only what its refresh and
//! removal need, with its permissions and channels inline while it has one of each.
//!
//! Every key and value holds exactly the addresses of the entry, as the core checked
//! them: nothing is canonicalised (an IPv4-mapped or NAT64 peer is an IPv6 address), and
//! a peer of another family than its relayed address is refused, because the program
//! writes the relayed address as the source of the peer's family.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};

use hashbrown::HashTable;
use slab::Slab;
use smallvec::SmallVec;

use super::clock::monotonic_ns;
use super::maps::{AllocationRecord, ChannelRecord, MapAddress, Tables};
use crate::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath, DatapathError, PermissionEntry,
    RelayedTraffic,
};

/// A client flow as the maps key it. Fast-path flows are UDP (the core installs no
/// entries for TCP or TLS allocations), so the addresses are the whole flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowAddresses {
    client: MapAddress,
    listener: MapAddress,
}

impl FlowAddresses {
    fn of(flow: &ClientFlow) -> FlowAddresses {
        FlowAddresses {
            client: MapAddress::socket(flow.client),
            listener: MapAddress::socket(flow.listener),
        }
    }
}

/// An allocation as installed, and the permissions and channels installed for it: a
/// handful each, bounded by the core's per-allocation caps, usually one. Addresses are
/// kept as the maps hold them (19 bytes, not a 32-byte `SocketAddr`) and expiries as the
/// CLOCK_MONOTONIC nanoseconds written to them.
#[derive(Debug)]
struct Installed {
    relay: MapAddress,
    flow: FlowAddresses,
    expires_ns: u64,
    bytes_per_second: u64,
    permissions: SmallVec<[MapAddress; 1]>,
    channels: SmallVec<[InstalledChannel; 1]>,
}

/// A channel as installed; its relayed address is its allocation's.
#[derive(Debug)]
struct InstalledChannel {
    peer: MapAddress,
    number: u16,
    /// The channel's own expiry; its allocation's bounds it in the maps.
    expires_ns: u64,
    /// The channel's client flow when it is not its allocation's (the core always gives
    /// a channel its allocation's flow, so this is None but for other callers).
    other_flow: Option<Box<FlowAddresses>>,
}

impl Installed {
    /// The entries of `channel` of this allocation in `slot`, its expiry bounded by the
    /// allocation's.
    fn channel_record(&self, slot: u32, channel: &InstalledChannel) -> ChannelRecord {
        let flow = channel.other_flow.as_deref().unwrap_or(&self.flow);
        ChannelRecord {
            client: flow.client,
            listener: flow.listener,
            relay: self.relay,
            peer: channel.peer,
            number: channel.number,
            slot,
            expires_ns: channel.expires_ns.min(self.expires_ns),
        }
    }
}

/// The XDP program's flow tables, as a [`Datapath`]. Obtained from
/// [`super::XdpRelay::datapath`].
///
/// Listener and relayed addresses must be specific (not 0.0.0.0 / ::): the program
/// matches on the addresses frames carry. Entries with a wildcard are refused, so the
/// core keeps relaying those flows in userspace.
pub struct BpfDatapath {
    /// Boxed: the map handles are large and the datapath is moved around by value.
    tables: Box<Tables>,
    /// The installed allocations by slot (their index in TRAFFIC and BANDWIDTH); vacant
    /// entries are the free slots, taken again first.
    installed: Slab<Installed>,
    /// Relayed address → slot: an index that holds slots only (the address is in the
    /// entry).
    by_relay: HashTable<u32>,
    /// Keyed SipHash: relayed addresses are the relay's own, but ports follow clients.
    hasher: RandomState,
}

impl std::fmt::Debug for BpfDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |entries: fn(&Installed) -> usize| -> usize {
            self.installed
                .iter()
                .map(|(_, installed)| entries(installed))
                .sum()
        };
        f.debug_struct("BpfDatapath")
            .field("allocations", &self.installed.len())
            .field(
                "permissions",
                &count(|installed| installed.permissions.len()),
            )
            .field("channels", &count(|installed| installed.channels.len()))
            .finish_non_exhaustive()
    }
}

/// Refuses a peer whose family differs from its relayed address's.
fn same_family(relay: SocketAddr, peer: IpAddr) -> Result<(), DatapathError> {
    if relay.is_ipv4() != peer.is_ipv4() {
        return Err(DatapathError::Update(format!(
            "peer {peer} is not of the family of the relayed address {relay}"
        )));
    }
    Ok(())
}

fn specific(what: &str, address: SocketAddr) -> Result<MapAddress, DatapathError> {
    if address.ip().is_unspecified() || address.port() == 0 {
        return Err(DatapathError::Update(format!(
            "{what} {address} is not a specific address"
        )));
    }
    Ok(MapAddress::socket(address))
}

impl BpfDatapath {
    pub(crate) fn new(tables: Tables) -> BpfDatapath {
        BpfDatapath {
            tables: Box::new(tables),
            installed: Slab::new(),
            by_relay: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    fn allocation_record(
        entry: &AllocationEntry,
        slot: u32,
    ) -> Result<AllocationRecord, DatapathError> {
        Ok(AllocationRecord {
            client: MapAddress::socket(entry.flow.client),
            listener: specific("listener", entry.flow.listener)?,
            relay: specific("relayed address", entry.relay)?,
            slot,
            expires_ns: monotonic_ns(entry.expires_at),
        })
    }

    /// The slot of the allocation installed on `relay`.
    fn slot(&self, relay: SocketAddr) -> Option<u32> {
        let relay = MapAddress::socket(relay);
        self.by_relay
            .find(self.hasher.hash_one(relay), |&slot| {
                self.entry(slot)
                    .is_some_and(|installed| installed.relay == relay)
            })
            .copied()
    }

    fn entry(&self, slot: u32) -> Option<&Installed> {
        self.installed.get(usize::try_from(slot).ok()?)
    }

    /// The allocation installed on `relay` and its slot.
    fn get(&self, relay: SocketAddr) -> Option<(u32, &Installed)> {
        let slot = self.slot(relay)?;
        Some((slot, self.entry(slot)?))
    }

    fn get_mut(&mut self, relay: SocketAddr) -> Option<(u32, &mut Installed)> {
        let slot = self.slot(relay)?;
        Some((slot, self.installed.get_mut(usize::try_from(slot).ok()?)?))
    }

    /// Takes `installed` into `slot` (the slab's next vacant key).
    fn insert(&mut self, slot: u32, installed: Installed) {
        let hash = self.hasher.hash_one(installed.relay);
        let taken = self.installed.insert(installed);
        debug_assert_eq!(usize::try_from(slot).ok(), Some(taken));
        let (entries, hasher) = (&self.installed, &self.hasher);
        self.by_relay.insert_unique(hash, slot, |&other| {
            usize::try_from(other)
                .ok()
                .and_then(|other| entries.get(other))
                .map_or(0, |installed| hasher.hash_one(installed.relay))
        });
    }

    /// Takes the allocation in `slot` out of the mirror (not out of the maps).
    fn take(&mut self, slot: u32) -> Option<Installed> {
        let installed = self.installed.try_remove(usize::try_from(slot).ok()?)?;
        let hash = self.hasher.hash_one(installed.relay);
        if let Ok(entry) = self.by_relay.find_entry(hash, |&other| other == slot) {
            entry.remove();
        }
        Some(installed)
    }

    /// The channel `entry` as installed, its addresses checked.
    fn installed_channel(
        installed: &Installed,
        entry: &ChannelEntry,
    ) -> Result<InstalledChannel, DatapathError> {
        same_family(entry.relay, entry.peer.ip())?;
        specific("relayed address", entry.relay)?;
        let flow = FlowAddresses {
            client: MapAddress::socket(entry.flow.client),
            listener: specific("listener", entry.flow.listener)?,
        };
        Ok(InstalledChannel {
            peer: MapAddress::socket(entry.peer),
            number: entry.number,
            expires_ns: monotonic_ns(entry.expires_at),
            other_flow: (flow != installed.flow).then(|| Box::new(flow)),
        })
    }

    /// The slot a new allocation gets: the last one freed, else the next unused one.
    fn free_slot(&self) -> Result<u32, DatapathError> {
        let slot =
            u32::try_from(self.installed.vacant_key()).map_err(|_| DatapathError::MapFull)?;
        if slot >= self.tables.sizes().allocations {
            return Err(DatapathError::MapFull);
        }
        Ok(slot)
    }

    fn remove_channel_entries(&mut self, record: &ChannelRecord, relay: SocketAddr) {
        if let Err(error) = self.tables.remove_channel(record) {
            tracing::warn!(%error, %relay, channel = record.number, "removing a fast-path channel failed");
        }
    }

    /// Removes the entry of the permission for `peer` of the allocation of `client` on
    /// `relay`.
    fn remove_permission_entry(&mut self, client: MapAddress, relay: SocketAddr, peer: MapAddress) {
        if let Err(error) = self
            .tables
            .remove_permission(client, MapAddress::socket(relay), peer)
        {
            tracing::warn!(%error, %relay, "removing a fast-path permission failed");
        }
    }

    /// Removes the allocation installed on `relay` with its permissions and channels,
    /// from the maps and the mirror.
    fn remove_installed(&mut self, relay: SocketAddr) {
        let Some(slot) = self.slot(relay) else {
            return;
        };
        let Some(installed) = self.take(slot) else {
            return;
        };
        let record = AllocationRecord {
            client: installed.flow.client,
            listener: installed.flow.listener,
            relay: installed.relay,
            slot,
            expires_ns: 0,
        };
        if let Err(error) = self.tables.remove_allocation(&record) {
            tracing::warn!(%error, %relay, "removing a fast-path allocation failed");
        }
        for &peer in &installed.permissions {
            self.remove_permission_entry(installed.flow.client, relay, peer);
        }
        for channel in &installed.channels {
            let record = installed.channel_record(slot, channel);
            self.remove_channel_entries(&record, relay);
        }
    }
}

impl Datapath for BpfDatapath {
    fn install_allocation(&mut self, entry: AllocationEntry) -> Result<(), DatapathError> {
        let relay = entry.relay;
        let flow = FlowAddresses::of(&entry.flow);
        let previous = self
            .get(relay)
            .map(|(slot, installed)| (slot, installed.flow, installed.bytes_per_second));
        let slot = match previous {
            Some((slot, ..)) => slot,
            None => self.free_slot()?,
        };
        let record = Self::allocation_record(&entry, slot)?;
        if let Some((_, installed_flow, bytes_per_second)) = previous {
            if installed_flow != flow {
                self.remove_installed(relay);
                return self.install_allocation(entry);
            }
            // A refresh keeps the buckets (a rewrite would fill them up again).
            if bytes_per_second != entry.bytes_per_second {
                self.tables.limit_bandwidth(slot, entry.bytes_per_second)?;
            }
        } else {
            self.tables.reset_traffic(slot)?;
            self.tables.limit_bandwidth(slot, entry.bytes_per_second)?;
        }
        if let Err(error) = self.tables.insert_allocation(&record) {
            if previous.is_some() {
                // Leave nothing of it behind, its permissions and channels included: the
                // caller hands the allocation to userspace.
                self.remove_installed(relay);
            } else if let Err(cleanup) = self.tables.remove_allocation(&record) {
                // Leave nothing half-installed (one of the two maps may have taken it).
                tracing::warn!(error = %cleanup, %relay, "cleaning up a failed fast-path allocation failed");
            }
            return Err(error);
        }
        let Some((slot, installed)) = self.get_mut(relay) else {
            self.insert(
                slot,
                Installed {
                    relay: record.relay,
                    flow,
                    expires_ns: record.expires_ns,
                    bytes_per_second: entry.bytes_per_second,
                    permissions: SmallVec::new(),
                    channels: SmallVec::new(),
                },
            );
            return Ok(());
        };
        installed.expires_ns = record.expires_ns;
        installed.bytes_per_second = entry.bytes_per_second;
        // A refresh moves the bound of this allocation's channels' expiry.
        let installed = &*installed;
        let records: Vec<ChannelRecord> = installed
            .channels
            .iter()
            .map(|channel| installed.channel_record(slot, channel))
            .collect();
        for record in &records {
            self.tables.insert_channel(record)?;
        }
        Ok(())
    }

    /// The flow is the one installed with the allocation on `relay`.
    fn remove_allocation(&mut self, _flow: ClientFlow, relay: SocketAddr) {
        self.remove_installed(relay);
    }

    fn install_permission(&mut self, entry: PermissionEntry) -> Result<(), DatapathError> {
        let relay = entry.relay;
        same_family(relay, entry.peer_ip)?;
        let Some((_, installed)) = self.get(relay) else {
            // Without its allocation the entry would never be used: keep the map for others.
            return Err(DatapathError::Update(format!(
                "no fast-path allocation for {relay}"
            )));
        };
        let client = installed.flow.client;
        let relay_address = specific("relayed address", relay)?;
        let peer = MapAddress::ip(entry.peer_ip);
        self.tables.insert_permission(
            client,
            relay_address,
            peer,
            entry.ports.first..=entry.ports.last,
            monotonic_ns(entry.expires_at),
        )?;
        if let Some((_, installed)) = self.get_mut(relay) {
            if !installed.permissions.contains(&peer) {
                installed.permissions.push(peer);
            }
        }
        Ok(())
    }

    fn remove_permission(&mut self, relay: SocketAddr, peer: IpAddr) {
        let peer = MapAddress::ip(peer);
        let Some((_, installed)) = self.get_mut(relay) else {
            return;
        };
        let Some(index) = installed.permissions.iter().position(|&p| p == peer) else {
            return;
        };
        installed.permissions.swap_remove(index);
        let client = installed.flow.client;
        self.remove_permission_entry(client, relay, peer);
    }

    fn install_channel(&mut self, entry: ChannelEntry) -> Result<(), DatapathError> {
        let relay = entry.relay;
        let (slot, installed) = self
            .get(relay)
            .ok_or_else(|| DatapathError::Update(format!("no fast-path allocation for {relay}")))?;
        let channel = Self::installed_channel(installed, &entry)?;
        let record = installed.channel_record(slot, &channel);
        // Re-binding a number to another peer (or a peer to another number) must not
        // leave the old pairing relaying.
        let previous = installed
            .channels
            .iter()
            .find(|installed| installed.number == entry.number)
            .map(|previous| installed.channel_record(slot, previous))
            .filter(|previous| {
                (previous.peer, previous.client, previous.listener)
                    != (record.peer, record.client, record.listener)
            });
        if let Some(previous) = previous {
            self.remove_channel_entries(&previous, relay);
        }
        self.tables.insert_channel(&record)?;
        if let Some((_, installed)) = self.get_mut(relay) {
            match installed
                .channels
                .iter_mut()
                .find(|installed| installed.number == entry.number)
            {
                Some(installed) => *installed = channel,
                None => installed.channels.push(channel),
            }
        }
        Ok(())
    }

    fn remove_channel(&mut self, relay: SocketAddr, number: u16) {
        let Some((slot, installed)) = self.get_mut(relay) else {
            return;
        };
        let Some(index) = installed
            .channels
            .iter()
            .position(|channel| channel.number == number)
        else {
            return;
        };
        let channel = installed.channels.swap_remove(index);
        let record = installed.channel_record(slot, &channel);
        self.remove_channel_entries(&record, relay);
    }

    fn relayed_traffic(&self, relay: SocketAddr) -> RelayedTraffic {
        let Some((slot, _)) = self.get(relay) else {
            return RelayedTraffic::default();
        };
        match self.tables.traffic(slot) {
            Ok(traffic) => RelayedTraffic {
                to_peer_packets: traffic.to_peer_packets,
                to_peer_bytes: traffic.to_peer_bytes,
                to_client_packets: traffic.to_client_packets,
                to_client_bytes: traffic.to_client_bytes,
            },
            Err(error) => {
                tracing::warn!(%error, %relay, "reading fast-path traffic failed");
                RelayedTraffic::default()
            }
        }
    }

    fn limit_relay_bandwidth(&mut self, bytes_per_second: u64) -> Result<(), DatapathError> {
        self.tables.limit_relay_bandwidth(bytes_per_second)
    }
}
