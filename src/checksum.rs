//! CRC32C checksums of request and response fields, shared by the gRPC edge
//! (which checks what arrives and sums what it sends) and the client (which
//! does the same from the other side). Both must agree byte for byte, so the
//! one definition lives here, outside the server.

use std::collections::HashMap;

/// CRC32C (Castagnoli) of bytes.
pub fn crc(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

/// CRC32C of an encryption context's canonical encoding (what Keyward authenticates).
pub fn context_crc(ctx: &HashMap<String, String>) -> u32 {
    crc(&keyward_crypto::EncryptionContext::new(ctx.iter().map(|(k, v)| (k.clone(), v.clone()))).canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(crc(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn context_sum_ignores_map_order() {
        let a: HashMap<String, String> =
            [("a", "1"), ("b", "2")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let b: HashMap<String, String> =
            [("b", "2"), ("a", "1")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(context_crc(&a), context_crc(&b));
    }
}
