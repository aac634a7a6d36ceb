//! [`BpfDatapath`]: the [`Datapath`] the core's fast-path commands are applied to, writing
//! the XDP program's maps through [`super::maps::Tables`] and keeping a mirror of what it
//! installed (to cascade removals and bound channel expiries by their allocation's). The
//! mirror holds each allocation's permissions and channels with the allocation, so a
//! refresh or a removal touches only that allocation's entries, however many others exist.
//!
//! Every key and value holds exactly the addresses of the entry, as the core checked
//! them: nothing is canonicalised (an IPv4-mapped or NAT64 peer is an IPv6 address), and
//! a peer of another family than its relayed address is refused, because the program
//! writes the relayed address as the source of the peer's family.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::clock::monotonic_ns;
use super::maps::{AllocationRecord, ChannelRecord, MapAddress, Tables};
use crate::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath, DatapathError, PermissionEntry,
    RelayedTraffic,
};

/// An allocation as installed: its entry, its TRAFFIC slot, and the permissions and
/// channels installed for it (a handful each: bounded by the core's per-allocation caps).
#[derive(Debug)]
struct Installed {
    entry: AllocationEntry,
    slot: u32,
    permissions: Vec<IpAddr>,
    channels: Vec<ChannelEntry>,
}

/// Adds `item` growing `list` by one slot only: these lists usually hold one or two
/// entries, and one allocation's spare capacity would otherwise cost more than its entries.
fn push_exact<T>(list: &mut Vec<T>, item: T) {
    list.reserve_exact(1);
    list.push(item);
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
    /// Keyed by relayed address.
    allocations: HashMap<SocketAddr, Installed>,
    free_slots: Vec<u32>,
    next_slot: u32,
}

impl std::fmt::Debug for BpfDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |entries: fn(&Installed) -> usize| -> usize {
            self.allocations.values().map(entries).sum()
        };
        f.debug_struct("BpfDatapath")
            .field("allocations", &self.allocations.len())
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
            allocations: HashMap::new(),
            free_slots: Vec::new(),
            next_slot: 0,
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

    fn channel_record(&self, entry: &ChannelEntry) -> Result<ChannelRecord, DatapathError> {
        let relay = entry.relay;
        same_family(relay, entry.peer.ip())?;
        let installed = self
            .allocations
            .get(&relay)
            .ok_or_else(|| DatapathError::Update(format!("no fast-path allocation for {relay}")))?;
        let expires_at = entry.expires_at.min(installed.entry.expires_at);
        Ok(ChannelRecord {
            client: MapAddress::socket(entry.flow.client),
            listener: specific("listener", entry.flow.listener)?,
            relay: specific("relayed address", entry.relay)?,
            peer: MapAddress::socket(entry.peer),
            number: entry.number,
            slot: installed.slot,
            expires_ns: monotonic_ns(expires_at),
        })
    }

    fn take_slot(&mut self) -> Result<u32, DatapathError> {
        if let Some(slot) = self.free_slots.pop() {
            return Ok(slot);
        }
        if self.next_slot >= self.tables.sizes().allocations {
            return Err(DatapathError::MapFull);
        }
        self.next_slot += 1;
        Ok(self.next_slot - 1)
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
        self.allocations
            .get(&relay)?
            .channels
            .iter()
            .find(|channel| channel.number == number)
            .copied()
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
            .allocations
            .get(&relay)
            .map(|installed| (installed.slot, installed.entry));
        let slot = match previous {
            Some((slot, _)) => slot,
            None => self.take_slot()?,
        };
        let record = match Self::allocation_record(&entry, slot) {
            Ok(record) => record,
            Err(error) => {
                if previous.is_none() {
                    self.free_slots.push(slot);
                }
                return Err(error);
            }
        };
        if let Some((_, installed)) = previous {
            if installed.flow != entry.flow {
                self.remove_allocation(installed.flow, relay);
                return self.install_allocation(entry);
            }
            // A refresh keeps the buckets (a rewrite would fill them up again).
            if installed.bytes_per_second != entry.bytes_per_second {
                self.tables.limit_bandwidth(slot, entry.bytes_per_second)?;
            }
        } else if let Err(error) = self
            .tables
            .reset_traffic(slot)
            .and_then(|()| self.tables.limit_bandwidth(slot, entry.bytes_per_second))
        {
            self.free_slots.push(slot);
            return Err(error);
        }
        if let Err(error) = self.tables.insert_allocation(&record) {
            // Leave nothing half-installed (one of the two maps may have taken it).
            if let Err(cleanup) = self.tables.remove_allocation(&record) {
                tracing::warn!(error = %cleanup, %relay, "cleaning up a failed fast-path allocation failed");
            }
            if previous.is_none() {
                self.free_slots.push(slot);
            } else {
                self.allocations.remove(&relay);
            }
            return Err(error);
        }
        self.allocations
            .entry(relay)
            .and_modify(|installed| installed.entry = entry)
            .or_insert(Installed {
                entry,
                slot,
                permissions: Vec::new(),
                channels: Vec::new(),
            });
        // A refresh moves the bound of this allocation's channels' expiry.
        let records = self
            .allocations
            .get(&relay)
            .map(|installed| {
                installed
                    .channels
                    .iter()
                    .map(|channel| self.channel_record(channel))
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
        let Some(installed) = self.allocations.remove(&relay) else {
            return;
        };
        let record = AllocationRecord {
            client: MapAddress::socket(flow.client),
            listener: MapAddress::socket(flow.listener),
            relay: MapAddress::socket(relay),
            slot: installed.slot,
            expires_ns: 0,
        };
        if let Err(error) = self.tables.remove_allocation(&record) {
            tracing::warn!(%error, %relay, "removing a fast-path allocation failed");
        }
        for &peer in &installed.permissions {
            self.remove_permission_entry(relay, peer);
        }
        for channel in &installed.channels {
            self.remove_channel_entries(channel);
        }
        self.free_slots.push(installed.slot);
    }

    fn install_permission(&mut self, entry: PermissionEntry) -> Result<(), DatapathError> {
        let relay = entry.relay;
        same_family(relay, entry.peer_ip)?;
        let Some(installed) = self.allocations.get_mut(&relay) else {
            // Without its allocation the entry would never be used: keep the map for others.
            return Err(DatapathError::Update(format!(
                "no fast-path allocation for {relay}"
            )));
        };
        let relay_address = specific("relayed address", relay)?;
        let peer = entry.peer_ip;
        self.tables.insert_permission(
            relay_address,
            MapAddress::ip(peer),
            entry.ports.first..=entry.ports.last,
            monotonic_ns(entry.expires_at),
        )?;
        if !installed.permissions.contains(&peer) {
            push_exact(&mut installed.permissions, peer);
        }
        Ok(())
    }

    fn remove_permission(&mut self, relay: SocketAddr, peer: IpAddr) {
        let Some(installed) = self.allocations.get_mut(&relay) else {
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
        if let Some(installed) = self.allocations.get_mut(&entry.relay) {
            match installed
                .channels
                .iter_mut()
                .find(|channel| channel.number == entry.number)
            {
                Some(channel) => *channel = entry,
                None => push_exact(&mut installed.channels, entry),
            }
        }
        Ok(())
    }

    fn remove_channel(&mut self, relay: SocketAddr, number: u16) {
        let Some(installed) = self.allocations.get_mut(&relay) else {
            return;
        };
        let Some(index) = installed
            .channels
            .iter()
            .position(|channel| channel.number == number)
        else {
            return;
        };
        let entry = installed.channels.swap_remove(index);
        self.remove_channel_entries(&entry);
    }

    fn relayed_traffic(&self, relay: SocketAddr) -> RelayedTraffic {
        let Some(installed) = self.allocations.get(&relay) else {
            return RelayedTraffic::default();
        };
        match self.tables.traffic(installed.slot) {
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
