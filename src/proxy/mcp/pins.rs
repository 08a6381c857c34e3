//! Tool description pins: the digest of each tool's definition the first time it was seen,
//! kept on disk, so a server that later changes what a tool tells the model (a "rug pull") is
//! noticed by the policy (`tool.description_digest` ≠ `tool.pinned_digest`).
//!
//! The file is shared by every portcullis process of a machine: writes take an exclusive lock
//! on `<file>.lock`, re-read the file and merge, so a pin written by another process is never
//! overwritten by a first sight here. Writes are atomic (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::sync::lock;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PinFile {
    version: u32,
    /// `server/tool` → `sha256:<hex>`.
    pins: BTreeMap<String, String>,
}

/// Why the pin file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("pin file {path}: {message}")]
    File { path: PathBuf, message: String },
}

/// The pins of one machine (or one test).
pub struct Pins {
    path: PathBuf,
    pins: Mutex<BTreeMap<String, String>>,
}

/// The digest of what a tool tells the model and the client: everything in its definition
/// but the name (the key). Keys are sorted, so the digest does not depend on their order.
pub fn digest(tool: &Value) -> String {
    let mut def = tool.clone();
    if let Value::Object(m) = &mut def {
        m.remove("name");
    }
    let bytes = serde_json::to_vec(&json!(def)).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

impl Pins {
    /// Load `path`; a missing file is no pins yet, a malformed one is an error (never a silent
    /// reset, which would accept a changed description as a first sight).
    pub fn load(path: &Path) -> Result<Pins, PinError> {
        let pins = read(path)?;
        Ok(Pins {
            path: path.to_path_buf(),
            pins: Mutex::new(pins),
        })
    }

    /// The pin of `server/tool`, if it has one.
    pub fn get(&self, server: &str, tool: &str) -> Option<String> {
        lock(&self.pins).get(&format!("{server}/{tool}")).cloned()
    }

    /// The pin of `server/tool`, pinning `digest` if there is none. A pin another process wrote
    /// meanwhile wins over this first sight.
    pub fn pin(&self, server: &str, tool: &str, digest: &str) -> String {
        let key = format!("{server}/{tool}");
        if let Some(p) = lock(&self.pins).get(&key) {
            return p.clone();
        }
        self.write(&key, digest, false)
    }

    /// Replace the pin of `server/tool` (after a human approved the changed definition).
    pub fn repin(&self, server: &str, tool: &str, digest: &str) {
        self.write(&format!("{server}/{tool}"), digest, true);
    }

    fn write(&self, key: &str, digest: &str, replace: bool) -> String {
        let mut pins = lock(&self.pins);
        let result = self.merge_to_disk(&mut pins, key, digest, replace);
        if let Err(e) = &result {
            // Kept in memory: this process still compares against it.
            tracing::error!(error = %e, pin = key, "tool pin not saved");
            if replace || !pins.contains_key(key) {
                pins.insert(key.to_string(), digest.to_string());
            }
        }
        pins.get(key).cloned().unwrap_or_else(|| digest.to_string())
    }

    fn merge_to_disk(
        &self,
        pins: &mut BTreeMap<String, String>,
        key: &str,
        digest: &str,
        replace: bool,
    ) -> Result<(), PinError> {
        let err = |message: String| PinError::File {
            path: self.path.clone(),
            message,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("create directory: {e}")))?;
        }
        let lock_path = self.path.with_extension("lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(format!("open {}: {e}", lock_path.display())))?;
        lock_file.lock().map_err(|e| err(format!("lock: {e}")))?;
        let mut on_disk = read(&self.path)?;
        for (k, v) in pins.iter() {
            on_disk.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if replace {
            on_disk.insert(key.to_string(), digest.to_string());
        } else {
            on_disk
                .entry(key.to_string())
                .or_insert_with(|| digest.to_string());
        }
        let file = PinFile {
            version: 1,
            pins: on_disk,
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| err(e.to_string()))?;
        bytes.push(b'\n');
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| err(format!("create: {e}")))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| err(format!("write: {e}")))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(format!("rename: {e}")))?;
        *pins = file.pins;
        Ok(())
    }
}

fn read(path: &Path) -> Result<BTreeMap<String, String>, PinError> {
    let err = |message: String| PinError::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let file: PinFile = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
    if file.version != 1 {
        return Err(err(format!("unsupported version {}", file.version)));
    }
    Ok(file.pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sight_pins_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.json");
        let a = Pins::load(&path).unwrap();
        assert_eq!(a.pin("fs", "read", "sha256:1"), "sha256:1");
        assert_eq!(a.pin("fs", "read", "sha256:2"), "sha256:1", "a pin is kept");
        let b = Pins::load(&path).unwrap();
        assert_eq!(
            b.pin("fs", "read", "sha256:3"),
            "sha256:1",
            "read back from disk"
        );
        b.repin("fs", "read", "sha256:3");
        assert_eq!(
            Pins::load(&path).unwrap().pin("fs", "read", "x"),
            "sha256:3"
        );
    }

    #[test]
    fn another_process_pin_wins_over_a_first_sight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.json");
        let a = Pins::load(&path).unwrap();
        let b = Pins::load(&path).unwrap();
        assert_eq!(a.pin("fs", "t", "sha256:a"), "sha256:a");
        // b loaded before a pinned: its first sight must still find a's pin on disk.
        assert_eq!(b.pin("fs", "t", "sha256:b"), "sha256:a");
        assert_eq!(b.pin("fs", "u", "sha256:u"), "sha256:u");
        let c = Pins::load(&path).unwrap();
        assert_eq!(c.pin("fs", "t", "-"), "sha256:a");
        assert_eq!(c.pin("fs", "u", "-"), "sha256:u");
    }

    #[test]
    fn malformed_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = Pins::load(&path).err().unwrap().to_string();
        assert!(e.contains("pins.json"), "{e}");
    }

    #[test]
    fn digest_ignores_key_order_and_name_but_not_description() {
        let a = json!({"name": "x", "description": "d", "inputSchema": {"type": "object", "properties": {}}});
        let b = json!({"inputSchema": {"properties": {}, "type": "object"}, "description": "d", "name": "y"});
        let c = json!({"name": "x", "description": "d!", "inputSchema": {"type": "object", "properties": {}}});
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
    }
}
