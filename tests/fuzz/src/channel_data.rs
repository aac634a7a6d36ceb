//! ChannelData framing (RFC 8656 §12.4–12.5): parsing never panics, accepts exactly the
//! datagrams whose length field fits (padding to 4 bytes optional over UDP) and whose
//! channel number is in range, and what it accepts re-encodes to the same bytes.

use turn_relay::protocol::stun::channel_data::{self, ChannelData, CHANNEL_RANGE, HEADER_LEN};

pub fn run(data: &[u8]) {
    let parsed = ChannelData::parse(data);
    let range = ChannelData::data_range(data);
    assert_eq!(
        parsed.is_some(),
        range.is_some(),
        "parse and data_range disagree"
    );
    let Some((message, range)) = parsed.zip(range) else {
        return;
    };
    assert!(
        channel_data::is_channel_data(data),
        "accepted a datagram that is not ChannelData"
    );
    assert!(CHANNEL_RANGE.contains(&message.number));
    assert_eq!(range.start, HEADER_LEN);
    assert_eq!(data.get(range.clone()), Some(message.data));
    let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
    assert_eq!(message.data.len(), declared);
    let padding = data.len() - range.end;
    assert!(padding < 4, "more than the padding after the data");
    let mut encoded = Vec::new();
    channel_data::encode(&mut encoded, message.number, message.data);
    assert_eq!(encoded, data[..range.end], "re-encoding differs");
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (number, data) in [
        (0x4000, &b""[..]),
        (0x4001, b"hello"),
        (0x7FFF, &[0x55; 64][..]),
    ] {
        let mut message = Vec::new();
        channel_data::encode(&mut message, number, data);
        seeds.push(message.clone());
        message.resize(HEADER_LEN + data.len().div_ceil(4) * 4, 0);
        seeds.push(message);
    }
    seeds
}
