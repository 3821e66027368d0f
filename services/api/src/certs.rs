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

/// Splits a join token into (CA digest, secret), in base36 as written; a
/// token that is not `SWMTKN-1-<50 base36>-<25 base36>` gets SwarmKit's words.
pub fn parse_token(token: &str) -> Result<(&str, &str), &'static str> {
    let parts: Vec<&str> = token.trim().split('-').collect();
    let b36 = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    match parts.as_slice() {
        ["SWMTKN", "1", digest, secret] if digest.len() == 50 && secret.len() == 25 && b36(digest) && b36(secret) => {
            Ok((digest, secret))
        }
        _ => Err(INVALID_TOKEN),
    }
}

/// SwarmKit's words for a token that does not parse.
pub const INVALID_TOKEN: &str = "invalid join token";

/// The digest part of a join token for this CA certificate (DER).
pub fn ca_digest(ca_der: &[u8]) -> String {
    base36(&Sha256::digest(ca_der), 50)
}

/// The token's CA digest in hex (as SwarmKit names the expected fingerprint).
pub fn digest_hex(digest_b36: &str) -> String {
    let mut bytes = [0u8; 32];
    for c in digest_b36.bytes() {
        let mut carry = BASE36.iter().position(|&d| d == c).unwrap_or(0) as u32;
        for b in bytes.iter_mut().rev() {
            let cur = u32::from(*b) * 36 + carry;
            *b = (cur & 0xff) as u8;
            carry = cur >> 8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OU of a node certificate for a role (SwarmKit's names).
pub const MANAGER_OU: &str = "swarm-manager";
pub const WORKER_OU: &str = "swarm-worker";

/// A new key and a certificate signing request for node `node_id`: (CSR PEM, key PEM).
pub fn node_csr(node_id: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, node_id);
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// What a node certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// CN: the node ID.
    pub node_id: String,
    /// OU: `swarm-manager` or `swarm-worker`.
    pub role_ou: String,
    /// O: the cluster ID.
    pub cluster_id: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Reads a node certificate (PEM).
pub fn cert_info(cert_pem: &str) -> anyhow::Result<CertInfo> {
    let der = pem_to_der(cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| anyhow::anyhow!("certificate: {e}"))?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next().and_then(|a| a.as_str().ok());
    let ou = subject.iter_organizational_unit().next().and_then(|a| a.as_str().ok());
    let o = subject.iter_organization().next().and_then(|a| a.as_str().ok());
    Ok(CertInfo {
        node_id: cn.unwrap_or_default().to_string(),
        role_ou: ou.unwrap_or_default().to_string(),
        cluster_id: o.unwrap_or_default().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Signs a node certificate for the public key of `csr_pem`: CN `node_id`,
/// OU the role's, O `cluster_id`, valid for `expiry` from a little before
/// now (a tenth of `expiry`, at most an hour, for clock skew), usable for TLS servers and clients, with
/// DNS names the role and the node ID (what peers check).
pub fn sign_node_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    csr_pem: &str,
    node_id: &str,
    role_ou: &str,
    cluster_id: &str,
    expiry: std::time::Duration,
) -> anyhow::Result<String> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| anyhow::anyhow!("certificate signing request: {e}"))?;
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let mut params = rcgen::CertificateParams::new(vec![role_ou.to_string(), node_id.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, node_id);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, role_ou);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, cluster_id);
    let now = time::OffsetDateTime::now_utc();
    let skew = (expiry / 10).min(std::time::Duration::from_secs(3600));
    params.not_before = now - time::Duration::try_from(skew)?;
    params.not_after = now + time::Duration::try_from(expiry)?;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&csr.public_key, &issuer)?;
    Ok(cert.pem())
}

/// The swarm's root CA: (certificate PEM, certificate DER, key PEM).
pub fn new_root_ca() -> anyhow::Result<(String, Vec<u8>, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "swarm-ca");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
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

    #[test]
    fn tokens_parse_and_name_their_ca() {
        let (_, der, _) = new_root_ca().unwrap();
        let t = join_token(&der);
        let (digest, secret) = parse_token(&t).unwrap();
        assert_eq!(digest, ca_digest(&der));
        assert_eq!(secret.len(), 25);
        let hex: String = Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest_hex(digest), hex);
        for bad in [
            "",
            "SWMTKN-1-abc-def",
            "SWMTKN-2-0-x-y",
            &t.replace("SWMTKN", "XXX"),
            &t.to_uppercase(),
        ] {
            assert_eq!(parse_token(bad), Err(INVALID_TOKEN), "{bad}");
        }
    }

    #[test]
    fn node_certificates_name_node_role_and_cluster_and_chain_to_the_ca() {
        let (ca_pem, ca_der, ca_key) = new_root_ca().unwrap();
        let (csr, key) = node_csr("node1").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let day = std::time::Duration::from_secs(86_400);
        let pem = sign_node_cert(&ca_pem, &ca_key, &csr, "node1", WORKER_OU, "cluster1", day).unwrap();
        let info = cert_info(&pem).unwrap();
        assert_eq!(
            (info.node_id.as_str(), info.role_ou.as_str(), info.cluster_id.as_str()),
            ("node1", WORKER_OU, "cluster1")
        );
        assert_eq!(info.not_after - info.not_before, 86_400 + 3_600);
        // A TLS client that trusts the CA accepts it for the role's name.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(ca_der)).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
            .build()
            .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let leaf = rustls::pki_types::CertificateDer::from(pem_to_der(&pem));
        let name = rustls::pki_types::ServerName::try_from(WORKER_OU).unwrap();
        v.verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
        // A CSR that is not one is refused.
        assert!(sign_node_cert(&ca_pem, &ca_key, "junk", "n", WORKER_OU, "c", day).is_err());
    }
}
