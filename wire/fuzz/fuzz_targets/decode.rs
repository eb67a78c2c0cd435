//! Feeds arbitrary bytes to the batch decoder: it must return, never panic or over-allocate,
//! and whatever it accepts must re-encode to a batch that decodes to the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waggle_wire::{decode, BatchBuilder};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode(data) {
        let mut builder = BatchBuilder::new();
        let events: Vec<_> = batch.events().collect();
        for e in &events {
            builder.push(e);
        }
        let again = decode(&builder.finish(&batch.header)).expect("re-encoded batch decodes");
        assert_eq!(again.events().collect::<Vec<_>>(), events);
    }
});
