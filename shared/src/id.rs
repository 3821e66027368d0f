//! Object IDs as Docker makes them: 25 lowercase base36 characters carrying
//! 128 random bits.

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A new random object ID.
pub fn new_id() -> String {
    encode(rand::random::<u128>())
}

/// 25 base36 digits of `n`, zero-padded (36^25 > 2^128, so every u128 fits).
pub fn encode(mut n: u128) -> String {
    let mut out = [b'0'; 25];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// Whether `s` has the shape of a full object ID.
pub fn is_id(s: &str) -> bool {
    s.len() == 25 && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_25_lowercase_base36_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert!(is_id(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(encode(0), "0".repeat(25));
        assert_eq!(encode(u128::MAX), "f5lxx1zz5pnorynqglhzmsp33");
        assert!(!is_id("ABC"));
    }
}
