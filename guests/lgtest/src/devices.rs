//! What the guest decides about its devices, as pure data: the layouts of the device page and of
//! the devices' pages are the ABI's (`lg_core::abi::dev`); whether a descriptor is usable, the
//! network slots' MACs and routing, and DMA sections are parsed and decided here, so the
//! arithmetic can be unit-tested on the host.

use lg_core::abi::dev::net::PROMISC;
use lg_core::abi::dev::{kind, Descriptor};
use lg_core::abi::PAGE_SIZE;
use lg_core::dma::{MAX_IRQ, MAX_SECTIONS};

/// Is the descriptor usable: a known type, an irq a binding may use (1..=31), and an area inside
/// `[lo, hi)` (the device region after the device page)?
pub fn usable(d: &Descriptor, lo: u64, hi: u64) -> bool {
    let pages = u64::from(d.num_pages.max(1));
    let end = d
        .pfn
        .checked_add(pages)
        .and_then(|p| p.checked_mul(PAGE_SIZE));
    matches!(d.kind, kind::CONSOLE | kind::NET | kind::BLOCK)
        && (1..=MAX_IRQ).contains(&u64::from(d.irq))
        && d.area() >= lo
        && end.is_some_and(|e| e <= hi)
}

// ------------------------------------------------------------------------------------------------
// Network pages.
// ------------------------------------------------------------------------------------------------

/// The MAC a guest uses: `02:00` then its guest id, big-endian, in the last four bytes.
pub fn mac_for(guest_id: u64) -> [u8; 6] {
    let id = (guest_id as u32).to_be_bytes();
    [0x02, 0x00, id[0], id[1], id[2], id[3]]
}

/// A slot is empty when its MAC is all zeros.
pub fn slot_empty(mac: &[u8; 6]) -> bool {
    mac.iter().all(|&b| b == 0)
}

/// Does a frame for destination `dest` go to the interface in a slot holding `mac` and `flags`
/// (not our own slot, not empty)? Broadcast and multicast frames go everywhere, a promiscuous
/// interface gets everything, anything else only if the MAC matches.
pub fn frame_for_slot(dest: &[u8; 6], mac: &[u8; 6], flags: u8) -> bool {
    if slot_empty(mac) {
        return false;
    }
    dest[0] & 1 != 0 || flags & PROMISC != 0 || dest == mac
}

/// `aa:bb:cc:dd:ee:ff` into a buffer of 17 bytes.
pub fn mac_text(mac: &[u8; 6]) -> [u8; 17] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b':'; 17];
    for (i, b) in mac.iter().enumerate() {
        if let (Some(hi), Some(lo)) = (HEX.get(usize::from(b >> 4)), HEX.get(usize::from(b & 15))) {
            out[3 * i] = *hi;
            out[3 * i + 1] = *lo;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// DMA sections.
// ------------------------------------------------------------------------------------------------

/// Split the guest-physical range `[gpa, gpa + len)` into sections that each stay inside one
/// page (what the host requires). `None` if it needs more than [`MAX_SECTIONS`].
pub fn page_sections(gpa: u64, len: usize) -> Option<([(u64, u16); MAX_SECTIONS], usize)> {
    let mut out = [(0u64, 0u16); MAX_SECTIONS];
    let mut n = 0;
    let mut at = gpa;
    let end = gpa.checked_add(len as u64)?;
    while at < end {
        let page_end = (at & !(PAGE_SIZE - 1)) + PAGE_SIZE;
        let take = page_end.min(end) - at;
        *out.get_mut(n)? = (at, take as u16);
        n += 1;
        at += take;
    }
    Some((out, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lg_core::abi::dev::net::{NOCSUM, SLOT_MASK};

    #[test]
    fn parses_descriptors() {
        let mut b = [0u8; 24];
        b[0] = 2;
        b[2..4].copy_from_slice(&(3u16 | NOCSUM).to_le_bytes());
        b[6] = 1;
        b[8] = 2;
        b[16..24].copy_from_slice(&0x4002u64.to_le_bytes());
        let d = Descriptor::parse(&b);
        assert_eq!(
            d,
            Descriptor {
                kind: kind::NET,
                features: 3 | NOCSUM,
                status: 0,
                num_pages: 1,
                irq: 2,
                pfn: 0x4002
            }
        );
        assert_eq!(d.area(), 0x400_2000);
        assert!(usable(&d, 0x400_1000, 0x400_4000));
        assert!(!usable(&d, 0x400_3000, 0x400_4000), "area below the region");
        assert!(!usable(&d, 0x400_1000, 0x400_2800), "area past the region");
        assert_eq!(d.features & SLOT_MASK, 3);
        assert_eq!(
            Descriptor::parse(&b[..10]).pfn,
            0,
            "short slice reads as zeros"
        );
        let mut bad = d;
        bad.irq = 32;
        assert!(!usable(&bad, 0, u64::MAX));
        bad.irq = 0;
        assert!(!usable(&bad, 0, u64::MAX));
        let mut huge = d;
        huge.pfn = u64::MAX;
        assert!(!usable(&huge, 0, u64::MAX), "overflowing area");
    }

    #[test]
    fn macs_and_frame_routing() {
        assert_eq!(mac_for(5), [2, 0, 0, 0, 0, 5]);
        assert_eq!(mac_for(0x0102_0304), [2, 0, 1, 2, 3, 4]);
        assert_eq!(
            &mac_text(&[2, 0, 0xab, 0, 0x10, 0xff]),
            b"02:00:ab:00:10:ff"
        );
        let me = [2, 0, 0, 0, 0, 1];
        let other = [2, 0, 0, 0, 0, 2];
        let bcast = [0xff; 6];
        let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
        assert!(frame_for_slot(&me, &me, 0));
        assert!(!frame_for_slot(&other, &me, 0));
        assert!(frame_for_slot(&other, &me, PROMISC));
        assert!(frame_for_slot(&bcast, &me, 0));
        assert!(frame_for_slot(&mcast, &me, 0));
        assert!(!frame_for_slot(&bcast, &[0; 6], PROMISC), "empty slot");
        assert!(slot_empty(&[0; 6]));
        assert!(!slot_empty(&[0, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn sections_never_cross_pages() {
        let (s, n) = page_sections(0x1ffa, 11).expect("fits");
        assert_eq!(&s[..n], &[(0x1ffa, 6), (0x2000, 5)]);
        let (s, n) = page_sections(0x3000, 4096).expect("fits");
        assert_eq!(&s[..n], &[(0x3000, 4096)]);
        let (_, n) = page_sections(0x3000, 0).expect("fits");
        assert_eq!(n, 0);
        let (s, n) = page_sections(0x10000, 16 * 4096).expect("fits");
        assert_eq!(n, 16);
        assert!(s.iter().all(|&(a, l)| a % 4096 == 0 && l == 4096));
        assert!(page_sections(0x10800, 16 * 4096).is_none(), "17 sections");
        assert!(page_sections(u64::MAX - 2, 8).is_none(), "wraps");
    }
}
