//! AWS Signature V4 header auth for the benchmark's S3 requests: `UNSIGNED-PAYLOAD`, signed
//! headers `host;x-amz-content-sha256;x-amz-date`, no query string. Paths must be made of
//! unreserved characters and `/` (they are not URI-encoded here).

use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// An S3 access key.
#[derive(Debug, Clone)]
pub struct Key {
    /// Access key id.
    pub id: String,
    /// Secret.
    pub secret: String,
    /// Region name in the credential scope.
    pub region: String,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signing key of `secret` for `date` (YYYYMMDD), `region` and `service`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// `YYYYMMDDTHHMMSSZ` of `t`.
fn amz_date(t: SystemTime) -> String {
    // RFC 3339 `2030-01-31T12:00:00Z` without its separators.
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':'], "")
}

/// The headers that sign request `method` of `path` to `host` (`ip:port`) at `now`.
pub fn sign(key: &Key, method: &str, host: &str, path: &str, now: SystemTime) -> Vec<(&'static str, String)> {
    let stamp = amz_date(now);
    let date = &stamp[..8];
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{stamp}\n\n\
         host;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD"
    );
    let scope = format!("{date}/{}/s3/aws4_request", key.region);
    let to_sign = format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let signature = hex(&hmac(&signing_key(&key.secret, date, &key.region, "s3"), to_sign.as_bytes()));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
         Signature={signature}",
        key.id
    );
    vec![
        ("x-amz-date", stamp),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD".to_string()),
        ("authorization", authorization),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn the_signing_key_matches_the_aws_documentation_example() {
        // "Derive a signing key for SigV4" in the AWS IAM user guide.
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam");
        assert_eq!(hex(&key), "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
    }

    #[test]
    fn dates_are_in_the_compact_iso_form() {
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        assert_eq!(amz_date(t), "20150830T123600Z");
        let key = Key { id: "AK".into(), secret: "s".into(), region: "us-east-1".into() };
        let headers = sign(&key, "GET", "127.0.0.1:7002", "/b/k", t);
        let auth = &headers.iter().find(|(n, _)| *n == "authorization").expect("signed").1;
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/s3/aws4_request, "), "{auth}");
    }
}
