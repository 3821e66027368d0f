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
    bytes: [u8; 32],
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
        let mut own = [0u8; 32];
        own.copy_from_slice(bytes);
        Ok(SecretKey {
            key: LessSafeKey::new(unbound),
            bytes: own,
        })
    }

    /// A new random key.
    pub fn generate() -> Result<SecretKey, String> {
        SecretKey::from_bytes(&random32()?)
    }

    /// The key's 32 bytes (to seal it with an unlock key, or hand it to this
    /// host's dispatcher).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Reads the key at `path`, creating it (32 random bytes, mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, String> {
        let shown = path.display();
        match std::fs::read_to_string(path) {
            Ok(text) => return SecretKey::parse(&text).map_err(|e| format!("secrets key {shown}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read the secrets key {shown}: {e}")),
        }
        let bytes = random32()?;
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
        if text.trim_start().starts_with('{') {
            return Err(LOCKED_FILE.into());
        }
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

fn random32() -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness for a key".to_string())?;
    Ok(bytes)
}

/// What [`SecretKey::load_or_create`] says of a key file sealed with an unlock key.
pub const LOCKED_FILE: &str = "the key is sealed with the swarm's unlock key (autolock)";

/// The associated data the cluster's unlock key is sealed under.
const UNLOCK_KEY_AAD: &str = "shoal unlock key";

/// Docker's prefix of a human-readable unlock key.
const HUMAN_PREFIX: &str = "SWMKEY-1-";

/// A swarm's unlock key (autolock): 32 random bytes, shown as Docker shows
/// them (`SWMKEY-1-` + unpadded base64). It never leaves the cluster in the
/// clear: the store holds it sealed with the secrets key, and each manager's
/// key file holds the secrets key sealed with a key derived from it.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; 32]);

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

impl UnlockKey {
    pub fn generate() -> Result<UnlockKey, String> {
        Ok(UnlockKey(random32()?))
    }

    /// Parses `SWMKEY-1-...`; SwarmKit's words when it is not one.
    pub fn parse(human: &str) -> Result<UnlockKey, String> {
        let bad = || "invalid key string".to_string();
        let rest = human.trim().strip_prefix(HUMAN_PREFIX).ok_or_else(bad)?;
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(rest)
            .map_err(|_| bad())?;
        // A well-formed key of another length can never be right: Docker
        // answers it as a wrong key, not a malformed one.
        let mut b = [0u8; 32];
        if raw.len() == 32 {
            b.copy_from_slice(&raw);
        }
        Ok(UnlockKey(b))
    }

    pub fn human(&self) -> String {
        format!(
            "{HUMAN_PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0)
        )
    }

    /// The key that seals a manager's secrets key: HKDF-SHA256 of the unlock key.
    fn wrapping_key(&self) -> SecretKey {
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"shoal autolock").extract(&self.0);
        let mut out = [0u8; 32];
        prk.expand(&[b"secrets key"], ring::hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SecretKey::from_bytes(&out).expect("32 bytes")
    }
}

impl SecretKey {
    /// The cluster's unlock key sealed with this key (the store-only
    /// `Cluster.SealedUnlockKey`).
    pub fn seal_unlock_key(&self, u: &UnlockKey) -> Result<String, String> {
        self.seal(UNLOCK_KEY_AAD, &u.0)
    }

    pub fn open_unlock_key(&self, sealed: &str) -> Result<UnlockKey, String> {
        let raw = self.open(UNLOCK_KEY_AAD, sealed)?;
        let mut b = [0u8; 32];
        if raw.len() != 32 {
            return Err("the sealed unlock key is not 32 bytes".into());
        }
        b.copy_from_slice(&raw);
        Ok(UnlockKey(b))
    }
}

/// A manager's key file as found on disk.
#[derive(Debug)]
pub enum KeyFile {
    /// The secrets key in the clear (autolock off).
    Plain(Box<SecretKey>),
    /// The secrets key sealed with an unlock key; `mark` is the cluster's
    /// `SealedUnlockKey` it was sealed under (a rotation changes it).
    Sealed { sealed: String, mark: String },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SealedFile {
    sealed_key: String,
    mark: String,
}

impl KeyFile {
    /// The file at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<KeyFile>, String> {
        let shown = path.display();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read the secrets key {shown}: {e}")),
        };
        if text.trim_start().starts_with('{') {
            let f: SealedFile = serde_json::from_str(&text).map_err(|e| format!("secrets key {shown}: {e}"))?;
            return Ok(Some(KeyFile::Sealed {
                sealed: f.sealed_key,
                mark: f.mark,
            }));
        }
        SecretKey::parse(&text)
            .map(|k| Some(KeyFile::Plain(Box::new(k))))
            .map_err(|e| format!("secrets key {shown}: {e}"))
    }

    /// The secrets key a sealed file holds, if `u` is the key it was sealed with.
    pub fn unseal(sealed: &str, u: &UnlockKey) -> Option<SecretKey> {
        let raw = u.wrapping_key().open("secrets key", sealed).ok()?;
        SecretKey::from_bytes(&raw).ok()
    }

    /// Writes `key` in the clear (mode 0600, written then renamed).
    pub fn write_plain(path: &Path, key: &SecretKey) -> Result<(), String> {
        write_atomic(path, format!("{}\n", b64().encode(key.bytes)).as_bytes())
    }

    /// Writes `key` sealed with `u`, marked with the cluster's sealed unlock key.
    pub fn write_sealed(path: &Path, key: &SecretKey, u: &UnlockKey, mark: &str) -> Result<(), String> {
        let f = SealedFile {
            sealed_key: u.wrapping_key().seal("secrets key", &key.bytes)?,
            mark: mark.to_string(),
        };
        let text = serde_json::to_string(&f).map_err(|e| e.to_string())?;
        write_atomic(path, format!("{text}\n").as_bytes())
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {shown}: {e}"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The API's answer on [`crate::subjects::manager_key`]: the secrets key's
/// bytes, base64. `Debug` never prints them.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyAnswer {
    #[serde(with = "b64_bytes")]
    pub key: Vec<u8>,
}

impl std::fmt::Debug for KeyAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyAnswer(..)")
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
    fn a_sealed_key_file_opens_only_with_its_unlock_key() {
        let dir = tempfile_dir();
        let path = dir.join("secrets.key");
        let key = SecretKey::load_or_create(&path).unwrap();
        let u = UnlockKey::generate().unwrap();
        let human = u.human();
        assert!(human.starts_with("SWMKEY-1-"), "{human}");
        assert_eq!(UnlockKey::parse(&human).unwrap(), u);
        assert_eq!(UnlockKey::parse("SWMKEY-2-abc").unwrap_err(), "invalid key string");
        assert_eq!(UnlockKey::parse("SWMKEY-1-!!").unwrap_err(), "invalid key string");
        let mark = key.seal_unlock_key(&u).unwrap();
        assert_eq!(key.open_unlock_key(&mark).unwrap(), u);
        KeyFile::write_sealed(&path, &key, &u, &mark).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&b64().encode(key.bytes())),
            "the key is not in the clear"
        );
        assert!(SecretKey::load_or_create(&path).unwrap_err().contains(LOCKED_FILE));
        let Some(KeyFile::Sealed { sealed, mark: m }) = KeyFile::read(&path).unwrap() else {
            panic!("sealed")
        };
        assert_eq!(m, mark);
        assert!(KeyFile::unseal(&sealed, &UnlockKey::generate().unwrap()).is_none());
        let opened = KeyFile::unseal(&sealed, &u).unwrap();
        assert_eq!(opened.bytes(), key.bytes());
        KeyFile::write_plain(&path, &opened).unwrap();
        assert_eq!(SecretKey::load_or_create(&path).unwrap().bytes(), key.bytes());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
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
