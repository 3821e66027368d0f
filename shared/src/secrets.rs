//! The managers' key for secret data at rest, and the payloads that carry
//! secret and config data to the one agent that needs them.
//!
//! The key is 32 random bytes in a file of the manager's data dir
//! (`<data-dir>/secrets.key`, mode 0600, base64), made by whichever manager
//! process needs it first (API or dispatcher; an exclusive create, so two
//! racing processes end up with the same key). Secret data is sealed with
//! ChaCha20-Poly1305 (ring), a random 96-bit nonce per seal and the
//! secret's ID as associated data, so a sealed value moved onto another
//! secret does not open.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The file name of the key in a manager's data dir.
pub const KEY_FILE: &str = "secrets.key";

/// The managers' key for secret data.
pub struct SecretKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl SecretKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, String> {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| "a secrets key is 32 bytes".to_string())?;
        Ok(SecretKey {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Reads the key at `path`, creating it (32 random bytes, mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, String> {
        let shown = path.display();
        match std::fs::read_to_string(path) {
            Ok(text) => return SecretKey::parse(&text).map_err(|e| format!("secrets key {shown}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read the secrets key {shown}: {e}")),
        }
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "no randomness for a secrets key".to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut f) => {
                f.write_all(format!("{}\n", b64().encode(bytes)).as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| format!("cannot write the secrets key {shown}: {e}"))?;
                SecretKey::from_bytes(&bytes)
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
                SecretKey::parse(&text).map_err(|e| format!("secrets key {shown}: {e}"))
            }
            Err(e) => Err(format!("cannot create the secrets key {shown}: {e}")),
        }
    }

    fn parse(text: &str) -> Result<SecretKey, String> {
        let bytes = b64().decode(text.trim()).map_err(|e| format!("not base64: {e}"))?;
        SecretKey::from_bytes(&bytes)
    }

    /// `base64(nonce || ciphertext || tag)` of `plain`, bound to `id`.
    pub fn seal(&self, id: &str, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut buf)
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(b64().encode(out))
    }

    /// The data `seal(id, ..)` sealed; an error for another key, another id or altered bytes.
    pub fn open(&self, id: &str, sealed: &str) -> Result<Vec<u8>, String> {
        let raw = b64()
            .decode(sealed)
            .map_err(|_| "sealed data is not base64".to_string())?;
        if raw.len() < NONCE_LEN {
            return Err("sealed data is too short".into());
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut buf)
            .map_err(|_| format!("secret {id}: sealed data does not open with this manager's key"))?;
        Ok(plain.to_vec())
    }
}

/// One secret's or config's data, sent to an agent with the assignment of a
/// task that uses it. `Debug` never prints the data.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub id: String,
    pub name: String,
    /// The data, base64 on the wire.
    #[serde(with = "b64_bytes")]
    pub data: Vec<u8>,
    /// The template driver (`golang`) when the data is a template the
    /// agent expands per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templating: Option<String>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

mod b64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64().encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::b64().decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_id() {
        let dir = tempfile_dir();
        let path = dir.join("k/secrets.key");
        let key = SecretKey::load_or_create(&path).unwrap();
        let again = SecretKey::load_or_create(&path).unwrap();
        let sealed = key.seal("id1", b"hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, key.seal("id1", b"hunter2").unwrap(), "a fresh nonce per seal");
        assert_eq!(again.open("id1", &sealed).unwrap(), b"hunter2");
        assert!(key.open("id2", &sealed).is_err(), "bound to the secret's id");
        let other = SecretKey::from_bytes(&[7u8; 32]).unwrap();
        assert!(other.open("id1", &sealed).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn payloads_never_print_their_data() {
        let p = Payload {
            id: "s".into(),
            name: "pw".into(),
            data: b"hunter2".to_vec(),
            templating: None,
        };
        assert!(!format!("{p:?}").contains("hunter2"));
        let json = serde_json::to_string(&p).unwrap();
        let back: Payload = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let mut b = [0u8; 8];
        SystemRandom::new().fill(&mut b).unwrap();
        std::env::temp_dir().join(format!(
            "shoal-key-test-{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ))
    }
}
