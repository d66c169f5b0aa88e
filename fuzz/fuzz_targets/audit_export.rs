//! The audit export parser used by `keyward audit verify --offline`
//! (`keyward_format::export::parse`) and the offline verifier over what it
//! parses: arbitrary bytes never panic; whatever parses re-serialises to an
//! export that parses to the same thing; the verifier reports on anything.
#![no_main]

use std::sync::OnceLock;

use keyward_crypto::{AuditPublicKey, AuditSigningKey};
use keyward_format::export;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static AuditPublicKey {
    static KEY: OnceLock<AuditPublicKey> = OnceLock::new();
    KEY.get_or_init(|| AuditSigningKey::generate().unwrap().public_key())
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = export::parse(data) else { return };
    let report = export::verify(&parsed, key());
    // A signature by a key the input cannot know never verifies, so an
    // export holding checkpoints is never reported intact.
    if !parsed.checkpoints.is_empty() {
        assert!(!report.intact(), "a checkpoint verified under an unknown key");
    }
    let mut again = Vec::new();
    for r in &parsed.records {
        again.extend(export::record_line(r.seq, &r.bytes));
    }
    for c in &parsed.checkpoints {
        again.extend(export::checkpoint_line(c));
    }
    let reparsed = export::parse(&again).expect("a re-serialised export parses");
    assert_eq!(reparsed.records, parsed.records);
    assert_eq!(reparsed.checkpoints, parsed.checkpoints);
});
