//! Chunk files on this node: `{data_dir}/objects/chunks/{hh}/{hash}` named by the BLAKE3 hash
//! of their bytes. A write goes to a temporary file, is fsynced, renamed into place and the
//! directory fsynced, so a chunk present under its name is whole; a read re-hashes the bytes
//! and refuses a file that no longer matches its name.

use std::io;
use std::path::{Path, PathBuf};

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

/// See the module docs.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
}

impl ChunkStore {
    /// The chunk store under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("objects").join("chunks") }
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
    pub async fn put(&self, hash: [u8; 32], data: Bytes) -> Result<(), ChunkError> {
        let path = self.path(&hash);
        tokio::task::spawn_blocking(move || {
            if blake3::hash(&data).as_bytes() != &hash {
                return Err(ChunkError::Corrupt(hex(&hash)));
            }
            // A whole copy is there already (a corrupt one is replaced).
            if std::fs::read(&path).is_ok_and(|d| blake3::hash(&d).as_bytes() == &hash) {
                return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_round_trip_and_corruption_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::new(dir.path());
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
}
