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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use slab::Slab;
use smallvec::SmallVec;

use super::clock::monotonic_ns;
use super::maps::{AllocationRecord, ChannelRecord, MapAddress, Tables};
use crate::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath, DatapathError, PermissionEntry,
    RelayedTraffic,
};

/// An allocation as installed (its relayed address is the key that finds it), and the
/// permissions and channels installed for it: a handful each, bounded by the core's
/// per-allocation caps, usually one.
#[derive(Debug)]
struct Installed {
    flow: ClientFlow,
    expires_at: Instant,
    bytes_per_second: u64,
    permissions: SmallVec<[IpAddr; 1]>,
    channels: SmallVec<[InstalledChannel; 1]>,
}

/// A channel as installed; its relayed address is its allocation's.
#[derive(Debug)]
struct InstalledChannel {
    peer: SocketAddr,
    number: u16,
    expires_at: Instant,
    /// The channel's client flow when it is not its allocation's (the core always gives
    /// a channel its allocation's flow, so this is None but for other callers).
    other_flow: Option<Box<ClientFlow>>,
}

impl Installed {
    /// Channel `channel` of this allocation on `relay`, as the entry it was installed from.
    fn channel_entry(&self, relay: SocketAddr, channel: &InstalledChannel) -> ChannelEntry {
        ChannelEntry {
            flow: channel.other_flow.as_deref().copied().unwrap_or(self.flow),
            relay,
            peer: channel.peer,
            number: channel.number,
            expires_at: channel.expires_at,
        }
    }

    fn installed_channel(&self, entry: &ChannelEntry) -> InstalledChannel {
        InstalledChannel {
            peer: entry.peer,
            number: entry.number,
            expires_at: entry.expires_at,
            other_flow: (entry.flow != self.flow).then(|| Box::new(entry.flow)),
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
    /// Relayed address → its allocation's slot.
    slots: HashMap<SocketAddr, u32>,
    /// The installed allocations by slot (their index in TRAFFIC and BANDWIDTH); vacant
    /// entries are the free slots, taken again first.
    installed: Slab<Installed>,
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
            slots: HashMap::new(),
            installed: Slab::new(),
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

    /// The allocation installed on `relay` and its slot.
    fn get(&self, relay: SocketAddr) -> Option<(u32, &Installed)> {
        let slot = *self.slots.get(&relay)?;
        Some((slot, self.installed.get(usize::try_from(slot).ok()?)?))
    }

    fn get_mut(&mut self, relay: SocketAddr) -> Option<&mut Installed> {
        let slot = *self.slots.get(&relay)?;
        self.installed.get_mut(usize::try_from(slot).ok()?)
    }

    fn channel_record(&self, entry: &ChannelEntry) -> Result<ChannelRecord, DatapathError> {
        let relay = entry.relay;
        same_family(relay, entry.peer.ip())?;
        let (slot, installed) = self
            .get(relay)
            .ok_or_else(|| DatapathError::Update(format!("no fast-path allocation for {relay}")))?;
        let expires_at = entry.expires_at.min(installed.expires_at);
        Ok(ChannelRecord {
            client: MapAddress::socket(entry.flow.client),
            listener: specific("listener", entry.flow.listener)?,
            relay: specific("relayed address", entry.relay)?,
            peer: MapAddress::socket(entry.peer),
            number: entry.number,
            slot,
            expires_ns: monotonic_ns(expires_at),
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

    fn remove_channel_entries(&mut self, entry: &ChannelEntry) {
        let record = ChannelRecord {
            client: MapAddress::socket(entry.flow.client),
            listener: MapAddress::socket(entry.flow.listener),
            relay: MapAddress::socket(entry.relay),
            peer: MapAddress::socket(entry.peer),
            number: entry.number,
            slot: 0,
            expires_ns: 0,
        };
        if let Err(error) = self.tables.remove_channel(&record) {
            tracing::warn!(%error, relay = %entry.relay, channel = entry.number, "removing a fast-path channel failed");
        }
    }

    /// Channel `number` of the allocation on `relay`, as installed.
    fn installed_channel(&self, relay: SocketAddr, number: u16) -> Option<ChannelEntry> {
        let (_, installed) = self.get(relay)?;
        let channel = installed
            .channels
            .iter()
            .find(|channel| channel.number == number)?;
        Some(installed.channel_entry(relay, channel))
    }

    fn remove_permission_entry(&mut self, relay: SocketAddr, peer: IpAddr) {
        if let Err(error) = self
            .tables
            .remove_permission(MapAddress::socket(relay), MapAddress::ip(peer))
        {
            tracing::warn!(%error, %relay, %peer, "removing a fast-path permission failed");
        }
    }
}

impl Datapath for BpfDatapath {
    fn install_allocation(&mut self, entry: AllocationEntry) -> Result<(), DatapathError> {
        let relay = entry.relay;
        let previous = self
            .get(relay)
            .map(|(slot, installed)| (slot, installed.flow, installed.bytes_per_second));
        let slot = match previous {
            Some((slot, ..)) => slot,
            None => self.free_slot()?,
        };
        let record = Self::allocation_record(&entry, slot)?;
        if let Some((_, flow, bytes_per_second)) = previous {
            if flow != entry.flow {
                self.remove_allocation(flow, relay);
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
                self.remove_allocation(entry.flow, relay);
            } else if let Err(cleanup) = self.tables.remove_allocation(&record) {
                // Leave nothing half-installed (one of the two maps may have taken it).
                tracing::warn!(error = %cleanup, %relay, "cleaning up a failed fast-path allocation failed");
            }
            return Err(error);
        }
        let Some(installed) = self.get_mut(relay) else {
            let taken = self.installed.insert(Installed {
                flow: entry.flow,
                expires_at: entry.expires_at,
                bytes_per_second: entry.bytes_per_second,
                permissions: SmallVec::new(),
                channels: SmallVec::new(),
            });
            debug_assert_eq!(usize::try_from(slot).ok(), Some(taken));
            self.slots.insert(relay, slot);
            return Ok(());
        };
        installed.expires_at = entry.expires_at;
        installed.bytes_per_second = entry.bytes_per_second;
        // A refresh moves the bound of this allocation's channels' expiry.
        let records = self
            .get(relay)
            .map(|(_, installed)| {
                installed
                    .channels
                    .iter()
                    .map(|channel| self.channel_record(&installed.channel_entry(relay, channel)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        for record in &records {
            self.tables.insert_channel(record)?;
        }
        Ok(())
    }

    fn remove_allocation(&mut self, flow: ClientFlow, relay: SocketAddr) {
        let Some(slot) = self.slots.remove(&relay) else {
            return;
        };
        let Some(installed) = usize::try_from(slot)
            .ok()
            .and_then(|slot| self.installed.try_remove(slot))
        else {
            return;
        };
        let record = AllocationRecord {
            client: MapAddress::socket(flow.client),
            listener: MapAddress::socket(flow.listener),
            relay: MapAddress::socket(relay),
            slot,
            expires_ns: 0,
        };
        if let Err(error) = self.tables.remove_allocation(&record) {
            tracing::warn!(%error, %relay, "removing a fast-path allocation failed");
        }
        for &peer in &installed.permissions {
            self.remove_permission_entry(relay, peer);
        }
        for channel in &installed.channels {
            self.remove_channel_entries(&installed.channel_entry(relay, channel));
        }
    }

    fn install_permission(&mut self, entry: PermissionEntry) -> Result<(), DatapathError> {
        let relay = entry.relay;
        same_family(relay, entry.peer_ip)?;
        if self.get(relay).is_none() {
            // Without its allocation the entry would never be used: keep the map for others.
            return Err(DatapathError::Update(format!(
                "no fast-path allocation for {relay}"
            )));
        }
        let relay_address = specific("relayed address", relay)?;
        let peer = entry.peer_ip;
        self.tables.insert_permission(
            relay_address,
            MapAddress::ip(peer),
            entry.ports.first..=entry.ports.last,
            monotonic_ns(entry.expires_at),
        )?;
        if let Some(installed) = self.get_mut(relay) {
            if !installed.permissions.contains(&peer) {
                installed.permissions.push(peer);
            }
        }
        Ok(())
    }

    fn remove_permission(&mut self, relay: SocketAddr, peer: IpAddr) {
        let Some(installed) = self.get_mut(relay) else {
            return;
        };
        let Some(index) = installed.permissions.iter().position(|&p| p == peer) else {
            return;
        };
        installed.permissions.swap_remove(index);
        self.remove_permission_entry(relay, peer);
    }

    fn install_channel(&mut self, entry: ChannelEntry) -> Result<(), DatapathError> {
        let record = self.channel_record(&entry)?;
        // Re-binding a number to another peer (or a peer to another number) must not
        // leave the old pairing relaying.
        if let Some(previous) = self.installed_channel(entry.relay, entry.number) {
            if previous.peer != entry.peer || previous.flow != entry.flow {
                self.remove_channel_entries(&previous);
            }
        }
        self.tables.insert_channel(&record)?;
        if let Some(installed) = self.get_mut(entry.relay) {
            let channel = installed.installed_channel(&entry);
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
        let Some(installed) = self.get_mut(relay) else {
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
        let entry = installed.channel_entry(relay, &channel);
        self.remove_channel_entries(&entry);
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
