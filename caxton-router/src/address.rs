//! A reader's map from the address of an agent id's text to the agent's slot in the
//! reader: open addressing with linear probing over a power-of-two array.
//!
//! It exists because it is on every routed message: a lookup is a multiply, a shift and
//! usually one compare, where a general hash map spends three to four times the
//! instructions on hashing and group probing. Keys are addresses of live allocations, so
//! 0 never occurs and marks an empty slot; nothing is ever removed, only cleared at once.

/// Slots before the first growth; a reader routing for a few agents never grows.
const INITIAL_SLOTS: usize = 16;

pub(crate) struct AddressTable {
    /// `(address, value)`; address 0 is empty.
    slots: Box<[(usize, u32)]>,
    len: usize,
}

impl AddressTable {
    pub(crate) fn new() -> Self {
        AddressTable {
            slots: vec![(0, 0); INITIAL_SLOTS].into_boxed_slice(),
            len: 0,
        }
    }

    /// Where probing for `address` starts. Allocation addresses share their low bits and
    /// come in strides (ids made one after another), which a bare multiply leaves
    /// clustered; a shift-multiply-shift mix spreads them.
    #[inline(always)]
    fn home(&self, address: usize) -> usize {
        let mut bits = address as u64;
        bits ^= bits >> 33;
        bits = bits.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        bits ^= bits >> 33;
        (bits as usize) & (self.slots.len() - 1)
    }

    #[inline(always)]
    pub(crate) fn get(&self, address: usize) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut at = self.home(address);
        loop {
            let (key, value) = self.slots[at];
            if key == address {
                return Some(value);
            }
            if key == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Maps `address` (not 0) to `value`, replacing an earlier value.
    pub(crate) fn insert(&mut self, address: usize, value: u32) {
        debug_assert_ne!(address, 0, "address 0 marks an empty slot");
        // At most half full, so probes stay short and a miss always finds an empty slot.
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        if self.place(address, value) {
            self.len += 1;
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn clear(&mut self) {
        self.slots.fill((0, 0));
        self.len = 0;
    }

    /// Writes the pair; returns whether the address is new.
    fn place(&mut self, address: usize, value: u32) -> bool {
        let mask = self.slots.len() - 1;
        let mut at = self.home(address);
        loop {
            let slot = &mut self.slots[at];
            if slot.0 == address {
                slot.1 = value;
                return false;
            }
            if slot.0 == 0 {
                *slot = (address, value);
                return true;
            }
            at = (at + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let larger = vec![(0, 0); self.slots.len() * 2].into_boxed_slice();
        let old = std::mem::replace(&mut self.slots, larger);
        for (address, value) in old.iter().copied().filter(|(address, _)| *address != 0) {
            self.place(address, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #[test]
        fn the_table_answers_as_a_hash_map_does(
            ops in proptest::collection::vec((1usize..5_000, any::<u32>(), 0u8..20), 0..600),
        ) {
            let mut table = AddressTable::new();
            let mut model = HashMap::new();
            for (address, value, op) in ops {
                // Addresses as allocations give them: multiples of 8.
                let address = address * 8;
                match op {
                    0 => {
                        table.clear();
                        model.clear();
                    }
                    1..=9 => {
                        table.insert(address, value);
                        model.insert(address, value);
                    }
                    _ => prop_assert_eq!(table.get(address), model.get(&address).copied()),
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for (address, value) in &model {
                prop_assert_eq!(table.get(*address), Some(*value));
            }
        }
    }

    #[test]
    fn a_missing_address_is_none_even_when_the_table_is_half_full() {
        let mut table = AddressTable::new();
        for n in 1..=8 {
            table.insert(n * 64, n as u32);
        }
        assert_eq!(table.len(), 8);
        assert_eq!(table.get(9 * 64), None);
        assert_eq!(table.get(3 * 64), Some(3));
    }
}
