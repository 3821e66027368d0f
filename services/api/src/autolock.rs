//! Autolock: this manager host's secrets key, sealed with the swarm's unlock
//! key while `Spec.EncryptionConfig.AutoLockManagers` is on, and the
//! endpoints around it (`GET /swarm/unlockkey`, `POST /swarm/unlock`).
//!
//! The secrets key lives in `<data-dir>/secrets.key` (see
//! `shoal_shared::secrets::KeyFile`): in the clear without autolock, sealed
//! with a key derived from the unlock key with it. The unlock key itself is
//! in the store, sealed with the secrets key (`Cluster.SealedUnlockKey`), so
//! an unlocked manager can show it and re-seal its file when it changes. An
//! API that starts and finds its file sealed is locked: every manager
//! request gets Docker's 503 "Swarm is encrypted and needs to be unlocked
//! ...", until `docker swarm unlock` gives it the key. This host's
//! dispatcher asks the API for the key over `shoal.manager.key.<node-id>`
//! and is answered only once the API holds it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use shoal_shared::envelope::{self, Reply};
use shoal_shared::model::Cluster;
use shoal_shared::secrets::{KeyAnswer, KeyFile, SecretKey, UnlockKey, KEY_FILE};
use shoal_shared::ShoalError;

use crate::error::{ApiError, ApiResult, NOT_IN_SWARM};
use crate::request::Body;
use crate::spec::decode;
use crate::state::{AppState, SwarmView};

/// Docker's answer while a manager is locked (`errSwarmLocked`, 503).
pub const SWARM_LOCKED: &str =
    "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";
/// Docker's answer to `swarm leave` without `--force` on a locked manager.
pub const LOCKED_LEAVE: &str =
    "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.";

#[derive(Default)]
struct KeyState {
    loaded: bool,
    /// The key, when this API holds it.
    key: Option<Arc<SecretKey>>,
    /// The sealed key as found on disk, while locked.
    sealed: Option<String>,
    /// The `SealedUnlockKey` the file is sealed under; `None` for a plain file (or none).
    mark: Option<String>,
}

/// This host's secrets key, as the API holds it.
pub struct Keys {
    path: PathBuf,
    state: Mutex<KeyState>,
}

impl Keys {
    pub fn new(data_dir: &std::path::Path) -> Keys {
        Keys {
            path: data_dir.join(KEY_FILE),
            state: Mutex::new(KeyState::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut KeyState) -> ApiResult<T>) -> ApiResult<T> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.loaded {
            match KeyFile::read(&self.path).map_err(ApiError::internal)? {
                None => {}
                Some(KeyFile::Plain(k)) => st.key = Some(Arc::new(*k)),
                Some(KeyFile::Sealed { sealed, mark }) => {
                    st.sealed = Some(sealed);
                    st.mark = Some(mark);
                }
            }
            st.loaded = true;
        }
        f(&mut st)
    }

    /// Whether this host's key file is sealed and no unlock gave the key yet.
    pub fn locked(&self) -> bool {
        self.with(|st| Ok(st.key.is_none() && st.sealed.is_some()))
            .unwrap_or(false)
    }

    /// The key; made (in the clear) when this host has none; 503 while locked.
    pub fn key(&self) -> ApiResult<Arc<SecretKey>> {
        self.with(|st| {
            if let Some(k) = &st.key {
                return Ok(k.clone());
            }
            if st.sealed.is_some() {
                return Err(ApiError::unavailable(SWARM_LOCKED));
            }
            let k = Arc::new(SecretKey::load_or_create(&self.path).map_err(ApiError::internal)?);
            st.key = Some(k.clone());
            Ok(k)
        })
    }

    /// Opens the sealed file with `u`: Docker's 409 when not locked, 401 for a wrong key.
    pub fn unlock(&self, u: &UnlockKey) -> ApiResult<()> {
        self.with(|st| {
            let Some(sealed) = st.sealed.clone().filter(|_| st.key.is_none()) else {
                return Err(ApiError::new(StatusCode::CONFLICT, "swarm is not locked"));
            };
            let key = KeyFile::unseal(&sealed, u).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "swarm could not be unlocked: invalid key provided",
                )
            })?;
            st.key = Some(Arc::new(key));
            st.sealed = None;
            Ok(())
        })
    }

    /// Brings the file in line with the cluster once this API holds the key:
    /// sealed under the cluster's current unlock key with autolock on (a
    /// rotation by any manager re-seals every manager's file as its API next
    /// reads the cluster), in the clear with it off.
    pub fn follow(&self, cluster: &Cluster) -> ApiResult<()> {
        self.with(|st| {
            let Some(key) = st.key.clone() else {
                return Ok(());
            };
            let want = Some(cluster.sealed_unlock_key.clone())
                .filter(|m| cluster.spec.encryption_config.auto_lock_managers && !m.is_empty());
            if want == st.mark {
                return Ok(());
            }
            match &want {
                Some(m) => {
                    let u = key.open_unlock_key(m).map_err(ApiError::internal)?;
                    KeyFile::write_sealed(&self.path, &key, &u, m).map_err(ApiError::internal)?;
                }
                None => KeyFile::write_plain(&self.path, &key).map_err(ApiError::internal)?,
            }
            st.mark = want;
            Ok(())
        })
    }

    /// The swarm's key, received by a host joining as a manager: written in
    /// the clear (sealed at the next [`Keys::follow`] when autolock is on)
    /// and held, replacing whatever key this host had.
    pub fn install(&self, bytes: &[u8]) -> ApiResult<()> {
        let key = SecretKey::from_bytes(bytes).map_err(ApiError::internal)?;
        KeyFile::write_plain(&self.path, &key).map_err(ApiError::internal)?;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *st = KeyState {
            loaded: true,
            key: Some(Arc::new(key)),
            ..KeyState::default()
        };
        Ok(())
    }

    /// A locked host leaving the swarm: the sealed key is of no use any more
    /// (a later `swarm init` makes a new one).
    pub fn discard_if_locked(&self) {
        let _ = self.with(|st| {
            if st.key.is_none() && st.sealed.is_some() {
                let _ = std::fs::remove_file(&self.path);
                *st = KeyState {
                    loaded: true,
                    ..KeyState::default()
                };
            }
            Ok(())
        });
    }
}

/// A new unlock key for `cluster`, sealed with this host's key into
/// `SealedUnlockKey`; the human form is returned.
pub fn new_unlock_key(state: &AppState, cluster: &mut Cluster) -> ApiResult<()> {
    let key = state.keys.key()?;
    let u = UnlockKey::generate().map_err(ApiError::internal)?;
    cluster.sealed_unlock_key = key.seal_unlock_key(&u).map_err(ApiError::internal)?;
    Ok(())
}

/// `GET /swarm/unlockkey`: `SWMKEY-1-...`, or empty without autolock.
pub async fn unlock_key(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let cluster = state.manager_or(NOT_IN_SWARM).await?.cluster;
    if !cluster.spec.encryption_config.auto_lock_managers || cluster.sealed_unlock_key.is_empty() {
        return Ok(HttpResponse::Ok().json(json!({"UnlockKey": ""})));
    }
    let u = state
        .keys
        .key()?
        .open_unlock_key(&cluster.sealed_unlock_key)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({"UnlockKey": u.human()})))
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct UnlockRequest {
    unlock_key: String,
}

/// `POST /swarm/unlock`.
pub async fn unlock(state: web::Data<AppState>, body: Body) -> ApiResult<HttpResponse> {
    let r: UnlockRequest = decode(&body)?;
    if matches!(state.view().await?, SwarmView::Inactive) {
        return Err(ApiError::unavailable(NOT_IN_SWARM));
    }
    if !state.keys.locked() {
        return Err(ApiError::new(StatusCode::CONFLICT, "swarm is not locked"));
    }
    let u = UnlockKey::parse(&r.unlock_key).map_err(ApiError::bad_request)?;
    state.keys.unlock(&u)?;
    tracing::info!(node = %state.node_id, "swarm unlocked");
    Ok(HttpResponse::Ok().finish())
}

/// Answers this host's dispatcher on `shoal.manager.key.<node-id>` with the
/// key once this host is a manager of a swarm and its API holds the key (an
/// error reply before, and while locked): a host that is about to join as a
/// manager must not hand out a key of its own, it gets the swarm's at join.
pub async fn serve_key(nats: async_nats::Client, state: web::Data<AppState>) -> anyhow::Result<()> {
    let mut sub = nats
        .subscribe(shoal_shared::subjects::manager_key(&state.node_id))
        .await?;
    actix_web::rt::spawn(async move {
        while let Some(msg) = sub.next().await {
            let key = match state.manager().await {
                Ok(_) => state.keys.key(),
                Err(e) => Err(e),
            };
            let reply: Reply<KeyAnswer> = match key {
                Ok(k) => Reply::Ok(KeyAnswer {
                    key: k.bytes().to_vec(),
                }),
                Err(e) => Reply::Err(ShoalError::unavailable(e.message)),
            };
            envelope::respond(&nats, &msg, &reply).await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_locks_until_the_right_key_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new(dir.path());
        let key = keys.key().unwrap();
        let u = UnlockKey::generate().unwrap();
        let mut cluster = Cluster::new("c", Default::default());
        cluster.spec.encryption_config.auto_lock_managers = true;
        cluster.sealed_unlock_key = key.seal_unlock_key(&u).unwrap();
        keys.follow(&cluster).unwrap();
        assert!(!keys.locked(), "the process that sealed it keeps the key");
        // A restarted API.
        let again = Keys::new(dir.path());
        assert!(again.locked());
        assert_eq!(again.key().unwrap_err().message, SWARM_LOCKED);
        let wrong = again.unlock(&UnlockKey::generate().unwrap()).unwrap_err();
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        again.unlock(&u).unwrap();
        assert_eq!(again.key().unwrap().bytes(), key.bytes());
        assert_eq!(again.unlock(&u).unwrap_err().status, StatusCode::CONFLICT);
        // Autolock off: the file is plain again and a restart is not locked.
        cluster.spec.encryption_config.auto_lock_managers = false;
        cluster.sealed_unlock_key.clear();
        again.follow(&cluster).unwrap();
        assert!(!Keys::new(dir.path()).locked());
    }
}
