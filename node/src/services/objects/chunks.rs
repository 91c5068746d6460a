//! Chunk files on this node: `{data_dir}/objects/chunks/{hh}/{hash}` named by the BLAKE3 hash
//! of their bytes. A write goes to a temporary file, is fsynced, renamed into place and the
//! directory fsynced, so a chunk present under its name is whole; a read re-hashes the bytes
//! and refuses a file that no longer matches its name. A file's mtime is when this node last
//! stored (or re-stored) the chunk: the collector ([`ChunkStore::remove_if_older`]) never
//! deletes a chunk stored within its grace period.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

/// Hex of a hash.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a chunk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// Not stored here.
    #[error("chunk {0} is not stored here")]
    Missing(String),
    /// Stored, but its bytes no longer hash to its name.
    #[error("chunk {0} is corrupt")]
    Corrupt(String),
    /// The disk failed.
    #[error("chunk I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// A file in the chunk store, as listed.
#[derive(Debug, Clone)]
pub struct ChunkFile {
    /// The chunk's hash (`None`: a temporary file of a write in progress or interrupted).
    pub hash: Option<[u8; 32]>,
    /// The file.
    pub path: PathBuf,
    /// Its mtime: when the chunk was last stored here.
    pub modified: SystemTime,
    /// Bytes.
    pub len: u64,
}

/// Parses a 64-digit lower-case hex file name.
fn parse_hex(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// See the module docs.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    /// Held while `put` finds a whole copy and renews its mtime, and while the collector checks
    /// a file's mtime and deletes it: a chunk a write just found present is never deleted
    /// under it.
    renew: Mutex<()>,
}

impl ChunkStore {
    /// The chunk store under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("objects").join("chunks"), renew: Mutex::new(()) }
    }

    fn path(&self, hash: &[u8; 32]) -> PathBuf {
        let name = hex(hash);
        self.dir.join(&name[..2]).join(name)
    }

    /// Whether chunk `hash` is stored here (not checked).
    pub async fn has(&self, hash: &[u8; 32]) -> bool {
        tokio::fs::try_exists(self.path(hash)).await.unwrap_or(false)
    }

    /// Stores `data` under `hash` durably (fsynced) unless a whole copy is there already.
    /// Refuses bytes that do not hash to `hash`.
    pub async fn put(self: &std::sync::Arc<Self>, hash: [u8; 32], data: Bytes) -> Result<(), ChunkError> {
        let path = self.path(&hash);
        let me = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            if blake3::hash(&data).as_bytes() != &hash {
                return Err(ChunkError::Corrupt(hex(&hash)));
            }
            // A whole copy is there already (a corrupt one is replaced): it counts as stored
            // now, so the collector's grace period starts again.
            if std::fs::read(&path).is_ok_and(|d| blake3::hash(&d).as_bytes() == &hash) {
                let _held = me.renew.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let renewed =
                    std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
                if renewed.is_ok() {
                    return Ok(());
                }
                // Deleted meanwhile: store it again below.
            }
            let dir = path.parent().ok_or_else(|| io::Error::other("chunk path has no parent"))?;
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".tmp-{}-{:016x}", hex(&hash), rand::random::<u64>()));
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(())
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// The bytes of chunk `hash`, checked against the hash.
    pub async fn get(&self, hash: [u8; 32]) -> Result<Bytes, ChunkError> {
        let path = self.path(&hash);
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(data) if blake3::hash(&data).as_bytes() == &hash => Ok(Bytes::from(data)),
            Ok(_) => Err(ChunkError::Corrupt(hex(&hash))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ChunkError::Missing(hex(&hash))),
            Err(e) => Err(ChunkError::Io(e)),
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }
}

impl ChunkStore {
    /// The files of shard `shard` (the chunks whose hash starts with that byte), temporary
    /// files included; none if the shard does not exist.
    pub async fn list_shard(&self, shard: u8) -> Result<Vec<ChunkFile>, ChunkError> {
        let dir = self.dir.join(format!("{shard:02x}"));
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(ChunkError::Io(e)),
            };
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let hash = parse_hex(&name);
                if hash.is_none() && !name.starts_with(".tmp-") {
                    continue;
                }
                // Gone since the listing (collected, or a temporary file renamed): skip it.
                let Ok(meta) = entry.metadata() else { continue };
                let modified = meta.modified()?;
                out.push(ChunkFile { hash, path: entry.path(), modified, len: meta.len() });
            }
            Ok(out)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Deletes `file` unless it was stored at or after `cutoff` (checked again now, under the
    /// lock `put` renews under); answers the bytes freed, or `None` when kept or already gone.
    pub async fn remove_if_older(
        self: &std::sync::Arc<Self>,
        file: &ChunkFile,
        cutoff: SystemTime,
    ) -> Result<Option<u64>, ChunkError> {
        let me = std::sync::Arc::clone(self);
        let path = file.path.clone();
        tokio::task::spawn_blocking(move || {
            let _held = me.renew.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(ChunkError::Io(e)),
            };
            if meta.modified()? >= cutoff {
                return Ok(None);
            }
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(Some(meta.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ChunkError::Io(e)),
            }
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_round_trip_and_corruption_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(ChunkStore::new(dir.path()));
        let data = Bytes::from_static(b"hello chunk");
        let hash = *blake3::hash(&data).as_bytes();
        assert!(matches!(store.get(hash).await, Err(ChunkError::Missing(_))));
        assert!(matches!(store.put([0; 32], data.clone()).await, Err(ChunkError::Corrupt(_))));
        store.put(hash, data.clone()).await.expect("put");
        store.put(hash, data.clone()).await.expect("put again");
        assert_eq!(store.get(hash).await.expect("get"), data);
        std::fs::write(store.path(&hash), b"hello chunK").expect("corrupt");
        assert!(matches!(store.get(hash).await, Err(ChunkError::Corrupt(_))));
    }

    #[tokio::test]
    async fn only_chunks_stored_before_the_cutoff_are_collected_and_a_put_renews_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(ChunkStore::new(dir.path()));
        let data = Bytes::from_static(b"old chunk");
        let hash = *blake3::hash(&data).as_bytes();
        store.put(hash, data.clone()).await.expect("put");
        let listed = |store: std::sync::Arc<ChunkStore>| async move {
            store.list_shard(hash[0]).await.expect("list").into_iter().find(|f| f.hash == Some(hash))
        };
        let file = listed(std::sync::Arc::clone(&store)).await.expect("listed");
        assert_eq!(file.len, data.len() as u64);
        // Stored after the cutoff: kept.
        let cutoff = file.modified - std::time::Duration::from_secs(60);
        assert_eq!(store.remove_if_older(&file, cutoff).await.expect("gc"), None);
        // Made old, then stored again: the put renews it, so it is kept.
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&file.path).and_then(|f| f.set_modified(old)).expect("age");
        store.put(hash, data.clone()).await.expect("put again");
        let cutoff = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(store.remove_if_older(&file, cutoff).await.expect("gc"), None);
        // Old and not stored again: collected, once.
        std::fs::File::options().write(true).open(&file.path).and_then(|f| f.set_modified(old)).expect("age");
        assert_eq!(store.remove_if_older(&file, cutoff).await.expect("gc"), Some(data.len() as u64));
        assert_eq!(store.remove_if_older(&file, cutoff).await.expect("gc"), None);
        assert!(matches!(store.get(hash).await, Err(ChunkError::Missing(_))));
        assert!(listed(store).await.is_none());
    }
}
