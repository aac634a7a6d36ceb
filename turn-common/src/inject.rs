//! The entries of the live-frames generator's pacing map (`INJECT`, an array of `u64`):
//! written by the benchmark between runs, read and updated by the generator program
//! (`xdp_transmit` in turn-ebpf) per frame. One definition for both sides, so their
//! order cannot drift apart.

/// An entry of the `INJECT` map; its discriminant is the array index.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inject {
    /// ns between two transmitted frames (0: as fast as possible).
    Interval,
    /// When the next frame is due (bpf_ktime_get_ns).
    Due,
    /// Frames transmitted.
    Sent,
    /// When the first and the last frame were transmitted.
    First,
    Last,
    /// Frames sent back to back when a burst is due (0 or 1: one), and those of the
    /// current burst still to send.
    Burst,
    BurstLeft,
    /// Frames in the `INJECT_FRAMES` map (flows), sent round-robin.
    Flows,
}

impl Inject {
    /// The number of entries of the map.
    pub const COUNT: u32 = Inject::Flows as u32 + 1;
}

#[cfg(test)]
mod tests {
    use super::Inject;

    #[test]
    fn every_entry_has_its_own_index_below_the_count() {
        assert_eq!(Inject::COUNT, 8);
        assert_eq!(Inject::Interval as u32, 0);
        assert_eq!(Inject::Flows as u32, Inject::COUNT - 1);
    }
}
