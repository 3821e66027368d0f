//! The swarm's certificates: the root CA `swarm init` makes, the join
//! tokens derived from its digest, and the `TLSInfo` Docker shows for it
//! (issuer and public key read from the certificate's DER).

use sha2::{Digest, Sha256};
use shoal_shared::model::TlsInfo;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Big-endian bytes as base36, left-padded with `0` to `width`.
pub fn base36(bytes: &[u8], width: usize) -> String {
    let mut num: Vec<u8> = bytes.to_vec();
    let mut digits = Vec::new();
    while num.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(BASE36[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).expect("ascii")
}

/// A swarm join token: `SWMTKN-1-<sha256 of the CA cert DER, base36, 50>-<128 random bits, base36, 25>`.
pub fn join_token(ca_der: &[u8]) -> String {
    let digest = Sha256::digest(ca_der);
    let secret: [u8; 16] = rand::random();
    format!("SWMTKN-1-{}-{}", base36(&digest, 50), base36(&secret, 25))
}

/// The swarm's root CA: (certificate PEM, certificate DER, key PEM).
pub fn new_root_ca() -> anyhow::Result<(String, Vec<u8>, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "swarm-ca");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2044, 1, 1);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), cert.der().to_vec(), key.serialize_pem()))
}

/// One DER element: (tag, whole element, contents, what follows).
type Der<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn der_next(b: &[u8]) -> Option<Der<'_>> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if end > b.len() {
        return None;
    }
    Some((tag, &b[..end], &b[hdr..end], &b[end..]))
}

/// The issuer Name and the SubjectPublicKeyInfo of a certificate, both DER
/// (what Docker's `TLSInfo.CertIssuerSubject` / `CertIssuerPublicKey` hold for a self-signed root).
pub fn issuer_and_key(cert_der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, _, cert, _) = der_next(cert_der)?;
    let (_, _, tbs, _) = der_next(cert)?;
    let mut rest = tbs;
    let (tag, _, _, r) = der_next(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    let (_, _, _, rest) = der_next(rest)?; // serial
    let (_, _, _, rest) = der_next(rest)?; // signature algorithm
    let (_, issuer, _, rest) = der_next(rest)?;
    let (_, _, _, rest) = der_next(rest)?; // validity
    let (_, _, _, rest) = der_next(rest)?; // subject
    let (_, spki, _, _) = der_next(rest)?;
    Some((issuer.to_vec(), spki.to_vec()))
}

/// Standard base64 with padding (how Go writes a `[]byte` in JSON).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The cluster's `TLSInfo`: the root CA and, base64 as Docker writes them, its subject and public key.
pub fn tls_info(ca_pem: &str, ca_der: &[u8]) -> TlsInfo {
    let (subject, key) = issuer_and_key(ca_der).unwrap_or_default();
    TlsInfo {
        trust_root: ca_pem.to_string(),
        cert_issuer_subject: base64(&subject),
        cert_issuer_public_key: base64(&key),
    }
}

/// The DER bytes of the first PEM block (for the token digest); empty if none.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_swarmkits_shape_and_share_the_ca_digest() {
        assert_eq!(base36(&[0], 3), "000");
        assert_eq!(base36(&[1, 0], 1), "74");
        let (pem, der, key) = new_root_ca().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        let a = join_token(&der);
        let b = join_token(&der);
        let pa: Vec<&str> = a.split('-').collect();
        let pb: Vec<&str> = b.split('-').collect();
        assert_eq!((pa[0], pa[1], pa[2].len(), pa[3].len()), ("SWMTKN", "1", 50, 25));
        assert_eq!(pa[2], pb[2], "same CA, same digest");
        assert_ne!(pa[3], pb[3], "fresh secret");
        let (issuer, spki) = issuer_and_key(&der).unwrap();
        assert_eq!(issuer[0], 0x30);
        assert!(spki.len() > 60, "an EC P-256 SubjectPublicKeyInfo");
        assert!(der.windows(issuer.len()).any(|w| w == issuer.as_slice()));
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
    }
}
