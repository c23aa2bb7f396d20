//! What one agent instance keeps between calls into it: the agent's state, the buffers
//! handed out by `caxton_alloc` and the last reply.
//!
//! Addresses are plain `usize` here so the same logic runs on the host target, where
//! [`Harness`](crate::host::Harness) drives it; the `i32`/`i64` conversions of the wasm
//! exports live in [`crate::export`].

use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;
use core::ptr::NonNull;

use crate::agent::{Agent, InitError};
use crate::reply::error_reply;

/// Buffers at most this large are kept for the next message instead of being freed, so a
/// steady stream of messages allocates nothing while one huge message does not pin its
/// memory for the instance's life.
const SPARE_CAPACITY_LIMIT: usize = 64 * 1024;

/// Message buffers between `caxton_alloc` and `caxton_handle`.
///
/// Each allocation is its own buffer until the message in it is handled, so a host may
/// allocate several before handling any. A buffer the host never hands back stays
/// allocated until the instance is dropped.
#[derive(Debug, Default)]
pub(crate) struct InputBuffers {
    pending: Vec<Vec<u8>>,
    spare: Vec<u8>,
}

impl InputBuffers {
    pub(crate) const fn new() -> Self {
        Self {
            pending: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Address of `len` writable bytes, or `None` when memory ran out.
    pub(crate) fn alloc(&mut self, len: usize) -> Option<usize> {
        if len == 0 {
            // Nothing will be written or read: any non-null address will do.
            return Some(NonNull::<u8>::dangling().as_ptr() as usize);
        }
        let mut buffer = if self.spare.capacity() >= len {
            core::mem::take(&mut self.spare)
        } else {
            Vec::new()
        };
        if len > buffer.len() {
            buffer.try_reserve_exact(len - buffer.len()).ok()?;
            buffer.resize(len, 0);
        } else {
            buffer.truncate(len);
        }
        self.pending.try_reserve(1).ok()?;
        let address = buffer.as_mut_ptr() as usize;
        self.pending.push(buffer);
        Some(address)
    }

    /// The pending buffer holding `[address, address + len)`, removed from the pending list,
    /// with the message's range inside it.
    pub(crate) fn take(&mut self, address: usize, len: usize) -> Option<(Vec<u8>, Range<usize>)> {
        let index = self.position(address, len)?;
        let buffer = self.pending.swap_remove(index);
        let start = address - buffer.as_ptr() as usize;
        Some((buffer, start..start + len))
    }

    /// The bytes `[address, address + len)` of a pending buffer, for writing a message in.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn get_mut(&mut self, address: usize, len: usize) -> Option<&mut [u8]> {
        let index = self.position(address, len)?;
        let buffer = &mut self.pending[index];
        let start = address - buffer.as_ptr() as usize;
        buffer.get_mut(start..start + len)
    }

    /// Gives a handled buffer back, to be reused by the next `alloc` when it is worth keeping.
    pub(crate) fn recycle(&mut self, buffer: Vec<u8>) {
        if buffer.capacity() <= SPARE_CAPACITY_LIMIT && buffer.capacity() > self.spare.capacity() {
            self.spare = buffer;
        }
    }

    /// How many buffers were given out and not handled yet.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    fn position(&self, address: usize, len: usize) -> Option<usize> {
        let end = address.checked_add(len)?;
        self.pending.iter().position(|buffer| {
            let base = buffer.as_ptr() as usize;
            base <= address && end <= base + buffer.len()
        })
    }
}

/// One agent instance: its state, its message buffers and its last reply.
#[derive(Debug)]
pub(crate) struct Instance<A> {
    agent: Option<A>,
    inputs: InputBuffers,
    /// Kept until the next message is handled: the host reads it after `caxton_handle`
    /// returns.
    reply: Vec<u8>,
}

impl<A> Instance<A> {
    pub(crate) const fn new() -> Self {
        Self {
            agent: None,
            inputs: InputBuffers::new(),
            reply: Vec::new(),
        }
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn agent(&self) -> Option<&A> {
        self.agent.as_ref()
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn inputs_mut(&mut self) -> &mut InputBuffers {
        &mut self.inputs
    }
}

impl<A: Agent> Instance<A> {
    /// Starts the agent unless it already runs.
    pub(crate) fn init(&mut self) -> Result<(), InitError> {
        if self.agent.is_none() {
            self.agent = Some(A::init()?);
        }
        Ok(())
    }

    pub(crate) fn alloc(&mut self, len: usize) -> Option<usize> {
        self.inputs.alloc(len)
    }

    /// Handles the message at `[address, address + len)` and returns the reply, which stays
    /// in place until the next call of `handle`.
    pub(crate) fn handle(&mut self, address: usize, len: usize) -> &[u8] {
        self.reply = self.reply_to(address, len);
        &self.reply
    }

    fn reply_to(&mut self, address: usize, len: usize) -> Vec<u8> {
        let agent = match &mut self.agent {
            Some(agent) => agent,
            slot @ None => match A::init() {
                Ok(agent) => slot.insert(agent),
                Err(error) => {
                    // The message is dropped with its buffer; the reply says why.
                    if let Some((buffer, _)) = self.inputs.take(address, len) {
                        self.inputs.recycle(buffer);
                    }
                    return error_reply(&format!("agent is not ready: {}", error.reason()));
                }
            },
        };
        if len == 0 {
            return agent.handle(&[]);
        }
        match self.inputs.take(address, len) {
            Some((buffer, range)) => {
                let reply = agent.handle(&buffer[range]);
                self.inputs.recycle(buffer);
                reply
            }
            None => error_reply(&format!(
                "message region [{address:#x}, +{len}) is not inside a buffer from caxton_alloc"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use proptest::prelude::*;

    /// Replies with the message reversed and counts the messages it saw.
    #[derive(Debug)]
    struct Reverser {
        seen: usize,
    }

    impl Agent for Reverser {
        fn init() -> Result<Self, InitError> {
            Ok(Self { seen: 0 })
        }

        fn handle(&mut self, message: &[u8]) -> Vec<u8> {
            self.seen += 1;
            message.iter().rev().copied().collect()
        }
    }

    #[derive(Debug)]
    struct NeverReady;

    impl Agent for NeverReady {
        fn init() -> Result<Self, InitError> {
            Err(InitError::new("config key `model` is absent"))
        }

        fn handle(&mut self, _message: &[u8]) -> Vec<u8> {
            unreachable!("an agent that never starts gets no message")
        }
    }

    fn send<A: Agent>(instance: &mut Instance<A>, message: &[u8]) -> Vec<u8> {
        let address = instance.alloc(message.len()).unwrap();
        if !message.is_empty() {
            instance
                .inputs_mut()
                .get_mut(address, message.len())
                .unwrap()
                .copy_from_slice(message);
        }
        instance.handle(address, message.len()).to_vec()
    }

    fn reason(reply: &[u8]) -> String {
        let value: serde_json::Value = serde_json::from_slice(reply).unwrap();
        assert_eq!(value["kind"], "error");
        value["reason"].as_str().unwrap().into()
    }

    #[test]
    fn alloc_gives_distinct_buffers_until_they_are_handled() {
        let mut inputs = InputBuffers::new();
        let first = inputs.alloc(8).unwrap();
        let second = inputs.alloc(8).unwrap();
        assert_ne!(first, second);
        assert_eq!(inputs.pending(), 2);
        inputs
            .get_mut(first, 8)
            .unwrap()
            .copy_from_slice(b"first..!");
        inputs
            .get_mut(second, 8)
            .unwrap()
            .copy_from_slice(b"second.!");
        let (buffer, range) = inputs.take(second, 8).unwrap();
        assert_eq!(&buffer[range], b"second.!");
        let (buffer, range) = inputs.take(first, 8).unwrap();
        assert_eq!(&buffer[range], b"first..!");
        assert_eq!(inputs.pending(), 0);
    }

    #[test]
    fn handled_buffer_is_reused_for_the_next_message() {
        let mut inputs = InputBuffers::new();
        let address = inputs.alloc(100).unwrap();
        let (buffer, _) = inputs.take(address, 100).unwrap();
        inputs.recycle(buffer);
        assert_eq!(inputs.alloc(60), Some(address));
        assert_eq!(inputs.get_mut(address, 60).map(|b| b.len()), Some(60));
        assert!(inputs.get_mut(address, 61).is_none());
    }

    #[test]
    fn huge_buffers_are_freed_rather_than_kept() {
        let mut inputs = InputBuffers::new();
        let address = inputs.alloc(SPARE_CAPACITY_LIMIT + 1).unwrap();
        let (buffer, _) = inputs.take(address, SPARE_CAPACITY_LIMIT + 1).unwrap();
        inputs.recycle(buffer);
        assert_eq!(inputs.spare.capacity(), 0);
    }

    #[test]
    fn a_sub_range_of_a_buffer_is_accepted() {
        let mut inputs = InputBuffers::new();
        let address = inputs.alloc(10).unwrap();
        inputs
            .get_mut(address, 10)
            .unwrap()
            .copy_from_slice(b"0123456789");
        let (buffer, range) = inputs.take(address + 2, 3).unwrap();
        assert_eq!(&buffer[range], b"234");
    }

    #[test]
    fn regions_outside_every_buffer_are_refused() {
        let mut inputs = InputBuffers::new();
        let address = inputs.alloc(10).unwrap();
        assert!(inputs.take(address + 1, 10).is_none());
        assert!(inputs.take(address.wrapping_sub(1), 2).is_none());
        assert!(inputs.take(usize::MAX, 2).is_none());
        assert_eq!(inputs.pending(), 1);
    }

    #[test]
    fn empty_messages_need_no_buffer() {
        let mut instance = Instance::<Reverser>::new();
        assert_eq!(send(&mut instance, b""), b"");
        assert_eq!(instance.inputs.pending(), 0);
    }

    #[test]
    fn dispatch_starts_the_agent_once_and_keeps_its_state() {
        let mut instance = Instance::<Reverser>::new();
        assert!(instance.agent().is_none());
        instance.init().unwrap();
        assert_eq!(send(&mut instance, b"abc"), b"cba");
        instance.init().unwrap();
        assert_eq!(send(&mut instance, b"hello"), b"olleh");
        assert_eq!(instance.agent().unwrap().seen, 2);
        assert_eq!(instance.inputs.pending(), 0);
    }

    #[test]
    fn first_message_starts_an_agent_the_host_did_not_init() {
        let mut instance = Instance::<Reverser>::new();
        assert_eq!(send(&mut instance, b"xy"), b"yx");
        assert_eq!(instance.agent().unwrap().seen, 1);
    }

    #[test]
    fn reply_stays_in_place_until_the_next_message() {
        let mut instance = Instance::<Reverser>::new();
        let address = instance.alloc(3).unwrap();
        instance
            .inputs_mut()
            .get_mut(address, 3)
            .unwrap()
            .copy_from_slice(b"abc");
        let reply_address = instance.handle(address, 3).as_ptr() as usize;
        // The host allocates the next message before reading the reply; the reply must
        // survive that.
        let next = instance.alloc(3).unwrap();
        assert_eq!(instance.reply.as_ptr() as usize, reply_address);
        assert_eq!(instance.reply, b"cba");
        instance
            .inputs_mut()
            .get_mut(next, 3)
            .unwrap()
            .copy_from_slice(b"def");
        assert_eq!(instance.handle(next, 3), b"fed");
    }

    #[test]
    fn agent_that_fails_to_start_answers_with_an_error_reply() {
        let mut instance = Instance::<NeverReady>::new();
        assert_eq!(
            instance.init().unwrap_err().reason(),
            "config key `model` is absent"
        );
        let reply = send(&mut instance, br#"{"kind":"order"}"#);
        assert_eq!(
            reason(&reply),
            "agent is not ready: config key `model` is absent"
        );
        assert_eq!(instance.inputs.pending(), 0);
    }

    #[test]
    fn region_not_from_alloc_gets_an_error_reply() {
        let mut instance = Instance::<Reverser>::new();
        let reply = instance.handle(0x10, 4).to_vec();
        assert!(reason(&reply).contains("[0x10, +4) is not inside a buffer from caxton_alloc"));
        assert_eq!(instance.agent().unwrap().seen, 0);
    }

    proptest! {
        #[test]
        fn every_message_reaches_the_agent_intact(messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20)) {
            let mut instance = Instance::<Reverser>::new();
            for message in &messages {
                let reply = send(&mut instance, message);
                let mut expected = message.clone();
                expected.reverse();
                prop_assert_eq!(reply, expected);
            }
            prop_assert_eq!(instance.inputs.pending(), 0);
            let non_empty = messages.len();
            prop_assert_eq!(instance.agent().unwrap().seen, non_empty);
        }

        #[test]
        fn interleaved_allocations_never_overlap(lens in proptest::collection::vec(1usize..200, 1..12)) {
            let mut inputs = InputBuffers::new();
            let regions: Vec<(usize, usize)> = lens.iter().map(|&len| (inputs.alloc(len).unwrap(), len)).collect();
            for (i, &(address, len)) in regions.iter().enumerate() {
                inputs.get_mut(address, len).unwrap().fill(i as u8);
            }
            for (i, &(address, len)) in regions.iter().enumerate().rev() {
                let (buffer, range) = inputs.take(address, len).unwrap();
                prop_assert!(buffer[range].iter().all(|&b| b == i as u8));
            }
            prop_assert_eq!(inputs.pending(), 0);
        }
    }
}
