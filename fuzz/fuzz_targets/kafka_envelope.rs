//! Kafka record values. The decoder accepts only version-1 envelopes whose message keeps
//! every field rule, and what it accepts round-trips: encoding it gives bytes that decode
//! to the same envelope and encode to the same bytes again.

#![no_main]

use chat_analytics::queue::{Envelope, ENVELOPE_VERSION};
use chat_analytics_fuzz::assert_field_rules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &[u8]| {
    let Ok(envelope) = Envelope::decode(value) else {
        return;
    };
    assert_eq!(envelope.v, ENVELOPE_VERSION);
    assert_field_rules(&envelope.message);

    let encoded = envelope.encode();
    let decoded = Envelope::decode(&encoded)
        .unwrap_or_else(|e| panic!("an encoded envelope does not decode: {e}"));
    assert_eq!(decoded, envelope);
    assert_eq!(decoded.encode(), encoded, "encoding is not stable");
});
