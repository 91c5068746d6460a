//! Short codes and what a link may be: pure functions, unit-tested.
//!
//! Generated codes are 7 base62 characters. Each is a value reserved from a cluster counter
//! (unique by construction) passed through a keyed permutation of `[0, 62^7)`, so consecutive
//! values give unrelated codes and nobody without the cluster's key can enumerate them.

/// Characters of a generated code.
pub const CODE_LEN: usize = 7;
/// Codes that exist: 62^7.
pub const CODE_SPACE: u64 = 62u64.pow(CODE_LEN as u32);
/// Longest target URL, in bytes.
pub const MAX_URL: usize = 2048;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Half of the Feistel network's domain: 2 × 21 bits = 42 bits ≥ log2(62^7) ≈ 41.7.
const HALF_BITS: u32 = 21;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
const ROUNDS: u8 = 4;

/// Words no alias or code may be (they name, or may one day name, Shoal's own paths).
const RESERVED: &[&str] = &[
    "v1",
    "v2",
    "api",
    "admin",
    "healthz",
    "readyz",
    "metrics",
    "status",
    "static",
    "assets",
    "login",
    "logout",
    "favicon.ico",
    "robots.txt",
    "shoal",
];

/// The keyed permutation of `[0, CODE_SPACE)` behind generated codes.
#[derive(Clone)]
pub struct Permutation {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Permutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permutation(<key>)")
    }
}

impl Permutation {
    /// A permutation keyed by `secret` (the cluster's; at least 16 bytes).
    pub fn new(secret: &[u8]) -> Self {
        Self { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret) }
    }

    fn round(&self, round: u8, half: u64) -> u64 {
        let mut msg = [0u8; 9];
        msg[0] = round;
        msg[1..].copy_from_slice(&half.to_le_bytes());
        let tag = ring::hmac::sign(&self.key, &msg);
        let mut word = [0u8; 8];
        word.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_le_bytes(word) & HALF_MASK
    }

    /// A balanced Feistel network on 42 bits: a bijection of `[0, 2^42)`.
    fn feistel(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> HALF_BITS, x & HALF_MASK);
        for r in 0..ROUNDS {
            (left, right) = (right, left ^ self.round(r, right));
        }
        (left << HALF_BITS) | right
    }

    /// The image of `index` (< [`CODE_SPACE`]), also below [`CODE_SPACE`]: cycle-walking the
    /// 42-bit permutation until it lands inside keeps it a bijection of `[0, CODE_SPACE)`.
    pub fn apply(&self, index: u64) -> u64 {
        debug_assert!(index < CODE_SPACE);
        let mut x = self.feistel(index);
        while x >= CODE_SPACE {
            x = self.feistel(x);
        }
        x
    }

    /// The code for reserved counter value `value` (1-based), or `None` once the space is used up.
    pub fn code(&self, value: u64) -> Option<String> {
        let index = value.checked_sub(1).filter(|i| *i < CODE_SPACE)?;
        Some(base62(self.apply(index)))
    }
}

/// `n` (< [`CODE_SPACE`]) as exactly [`CODE_LEN`] base62 characters.
pub fn base62(mut n: u64) -> String {
    let mut out = [b'0'; CODE_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Whether `word` is reserved (case-insensitive).
pub fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

/// Whether `code` has the shape of a code or alias (`[A-Za-z0-9_-]{3,32}`), so it is worth a
/// lookup.
pub fn is_code_shaped(code: &str) -> bool {
    (3..=32).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a requested alias; the error is a sentence for the client.
pub fn check_alias(alias: &str) -> Result<(), String> {
    if !is_code_shaped(alias) {
        return Err("an alias is 3 to 32 characters of A-Z, a-z, 0-9, '_' and '-'".into());
    }
    if is_reserved(alias) {
        return Err(format!("`{alias}` is reserved; choose another alias"));
    }
    Ok(())
}

/// The `host:port` a URL points at (default ports filled in), lower-cased.
pub fn authority(url: &url::Url) -> Option<String> {
    Some(format!("{}:{}", url.host_str()?.to_ascii_lowercase(), url.port_or_known_default()?))
}

/// Checks a target URL: http(s), at most [`MAX_URL`] bytes, a host, no credentials, and not one
/// of `own` (`host:port` of this cluster's short links, which would redirect in a loop).
pub fn check_target(raw: &str, own: &[String]) -> Result<url::Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("the URL is {} bytes; at most {MAX_URL} are allowed", raw.len()));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("only http and https URLs can be shortened, not {}:", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not carry credentials (user:password@)".into());
    }
    let here = authority(&url).ok_or_else(|| "the URL has no host".to_string())?;
    if own.iter().any(|o| o.eq_ignore_ascii_case(&here)) {
        return Err("the URL points at this cluster's own short links".into());
    }
    Ok(url)
}

/// Counter whose values become generated codes. Not a valid name for the public counter API
/// (`:`), so users cannot advance it.
pub const CODE_COUNTER: &str = "shoal:url_codes";

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::LazyLock;

    use super::*;

    static TEST_PERMUTATION: LazyLock<Permutation> = LazyLock::new(|| Permutation::new(b"0123456789abcdef"));

    #[test]
    fn base62_is_fixed_width_and_ordered() {
        assert_eq!(base62(0), "0000000");
        assert_eq!(base62(61), "000000z");
        assert_eq!(base62(62), "0000010");
        assert_eq!(base62(CODE_SPACE - 1), "zzzzzzz");
    }

    #[test]
    fn the_permutation_is_a_bijection_inside_the_code_space() {
        let p = &*TEST_PERMUTATION;
        // Distinct inputs give distinct outputs, all inside the space.
        let outputs: HashSet<u64> = (0..20_000).map(|i| p.apply(i)).collect();
        assert_eq!(outputs.len(), 20_000);
        assert!(outputs.iter().all(|o| *o < CODE_SPACE));
        // The top of the space too (cycle-walking must not escape it).
        let top: HashSet<u64> = (CODE_SPACE - 5_000..CODE_SPACE).map(|i| p.apply(i)).collect();
        assert_eq!(top.len(), 5_000);
        assert!(top.iter().all(|o| *o < CODE_SPACE));
    }

    #[test]
    fn consecutive_values_give_unrelated_codes_and_keys_matter() {
        let p = &*TEST_PERMUTATION;
        let a = p.code(1).expect("code");
        let b = p.code(2).expect("code");
        assert_eq!(a.len(), CODE_LEN);
        // Not sequential: the codes share no long prefix.
        assert_ne!(a[..4], b[..4]);
        let other = Permutation::new(b"another secret key!!");
        assert_ne!(other.code(1), p.code(1));
        assert_eq!(p.code(0), None);
        assert_eq!(p.code(CODE_SPACE + 1), None);
        assert!(p.code(CODE_SPACE).is_some());
    }

    #[test]
    fn aliases_are_checked() {
        assert!(check_alias("my-link_1").is_ok());
        assert!(check_alias("ab").is_err());
        assert!(check_alias(&"a".repeat(33)).is_err());
        assert!(check_alias("has space").is_err());
        assert!(check_alias("a/b").is_err());
        assert!(check_alias("healthz").is_err());
        assert!(check_alias("Metrics").is_err());
    }

    #[test]
    fn targets_are_checked() {
        let own = vec!["127.0.0.1:7001".to_string(), "sho.al:443".to_string()];
        assert!(check_target("https://example.com/a?b=c", &own).is_ok());
        assert!(check_target("http://example.com:8080/", &own).is_ok());
        assert!(check_target("ftp://example.com/", &own).unwrap_err().contains("http"));
        assert!(check_target("javascript:alert(1)", &own).is_err());
        assert!(check_target("not a url", &own).is_err());
        assert!(check_target("https://user:pw@example.com/", &own).unwrap_err().contains("credentials"));
        assert!(check_target("https://user@example.com/", &own).is_err());
        assert!(check_target("http://127.0.0.1:7001/abcdefg", &own).unwrap_err().contains("own"));
        assert!(check_target("https://SHO.AL/x", &own).is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert!(check_target(&long, &own).unwrap_err().contains("2048"));
    }
}
