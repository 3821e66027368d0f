//! Snapshot files: the state machine's keys, encoded without copying the
//! map, written beside the log and `fsync`ed.

use super::*;

/// Snapshot contents (as sent to peers): every key of the state machine.
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotData {
    pub(super) entries: Vec<(String, serde_bytes::ByteBuf)>,
}

/// Encodes a map as [`SnapshotData`] without copying it first.
pub(super) struct SnapshotRef<'a>(pub(super) &'a Kv);

impl Serialize for SnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Entries<'a>(&'a Kv);
        impl Serialize for Entries<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(k, v)| (k, serde_bytes::Bytes::new(v))))
            }
        }
        let mut st = s.serialize_struct("SnapshotData", 1)?;
        st.serialize_field("entries", &Entries(self.0))?;
        st.end()
    }
}

pub(super) fn decode_snapshot(bytes: &[u8]) -> Result<Kv, StorageError> {
    let data: SnapshotData = codec::decode(bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
    let mut kv = Kv::default();
    for (k, v) in data.entries {
        if LEGACY_PREFIXES.iter().any(|p| k.starts_with(p)) {
            continue;
        }
        kv.insert(&k, v.into_vec());
    }
    Ok(kv)
}

/// The replica's snapshot file in its data dir: `snapshot` holds the
/// latest; a new one is written to `snapshot.tmp`, fsynced, renamed over it,
/// and the directory fsynced.
///
/// Layout: `SHOALSN1 | meta length: u32 LE | meta (MessagePack) | data | crc32: u32 LE`
/// (the CRC covers everything before it; data is [`SnapshotData`]).
pub fn snapshot_file(dir: &Path) -> PathBuf {
    dir.join("snapshot")
}

pub(super) const SNAP_MAGIC: &[u8; 8] = b"SHOALSN1";

/// Writes a snapshot durably (blocking) unless the file already holds a
/// later one; `current` (the file's meta) serializes writers.
pub(super) fn save_snapshot(
    current: &Mutex<Option<SnapshotMeta>>,
    dir: &Path,
    meta: &SnapshotMeta,
    data: &[u8],
) -> std::io::Result<()> {
    let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
    if cur.as_ref().is_some_and(|c| c.last_log_id > meta.last_log_id) {
        return Ok(());
    }
    write_snapshot_file(dir, meta, data)?;
    *cur = Some(meta.clone());
    Ok(())
}

pub(super) fn write_snapshot_file(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> std::io::Result<()> {
    let path = snapshot_file(dir);
    let tmp = dir.join("snapshot.tmp");
    let meta_bytes = codec::encode(meta);
    let mut crc = crc32fast::Hasher::new();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for part in [
        &SNAP_MAGIC[..],
        &(meta_bytes.len() as u32).to_le_bytes(),
        &meta_bytes,
        data,
    ] {
        crc.update(part);
        f.write_all(part)?;
    }
    f.write_all(&crc.finalize().to_le_bytes())?;
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the snapshot file: its meta and data, or `None` if there is none.
pub(super) fn read_snapshot_file(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let path = snapshot_file(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(sm_err(ErrorVerb::Read, format!("{}: {e}", path.display()))),
    };
    let bad = |why: &str| sm_err(ErrorVerb::Read, format!("snapshot {}: {why}", path.display()));
    if bytes.len() < 16 || &bytes[..8] != SNAP_MAGIC {
        return Err(bad("not a shoal snapshot file"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err(bad("checksum mismatch"));
    }
    let meta_len = u32::from_le_bytes(body[8..12].try_into().unwrap()) as usize;
    if 12 + meta_len > body.len() {
        return Err(bad("meta runs past the end"));
    }
    let meta: SnapshotMeta = codec::decode(&body[12..12 + meta_len]).map_err(|e| bad(&e.to_string()))?;
    Ok(Some((meta, body[12 + meta_len..].to_vec())))
}
