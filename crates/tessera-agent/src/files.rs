//! File transfer inside an automatic session: what the sender walks and
//! reads, and what the receiver writes.
//!
//! The receiver writes each file to a hidden temporary name beside its
//! final one and renames it only after the whole file arrived and its
//! BLAKE3 hash matched, so a failed or cancelled transfer never leaves a
//! half-written file under the final name. Paths from the sender are
//! relative and may not climb out of the inbox.
//!
//! A file is never written twice: when its name (or one of its `name (n)`
//! variants) already holds the same content, the received copy is dropped
//! and the file is reported as already there. When the name holds another
//! file, the received one takes the first free `name (n)` and is reported
//! as renamed, so the sender can be told.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Bytes per chunk on the wire.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("refused path {0:?}: it must be relative and stay inside the inbox")]
    Path(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: the content does not match its hash")]
    Hash(String),
    #[error("{0}: expected {1} bytes, got {2}")]
    Size(String, u64, u64),
    #[error("chunk for an unknown or out-of-order file")]
    Sequence,
    #[error("more than {MAX_OPEN} files in flight at once")]
    TooManyOpen,
    #[error("file {0} was started twice")]
    Duplicate(u32),
}

/// Files a sender may have started and not finished at once.
pub const MAX_OPEN: usize = 16;

/// A relative path from the sender, made safe: no root, no `..`, no empty
/// or `.` parts, no NUL.
pub fn safe_relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\0') || path.len() > 4096 {
        return None;
    }
    let mut out = PathBuf::new();
    for part in path.split('/') {
        let c = Path::new(part).components().next();
        match c {
            Some(Component::Normal(p)) if Path::new(part).components().count() == 1 => out.push(p),
            _ => return None,
        }
    }
    Some(out)
}

/// One file to send: where it is, and its name relative to what was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub source: PathBuf,
    pub name: String,
    pub size: u64,
}

/// Expands files and folders into the files to send (folders recursively,
/// names keep the folder's own name). Symlinks are not followed.
pub fn walk(paths: &[PathBuf]) -> std::io::Result<Vec<Outgoing>> {
    let mut out = Vec::new();
    for p in paths {
        let base = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{}: no file name", p.display()),
                )
            })?;
        add(p, &base, &mut out)?;
    }
    Ok(out)
}

fn add(path: &Path, name: &str, out: &mut Vec<Outgoing>) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let child = format!("{name}/{}", e.file_name().to_string_lossy());
            add(&e.path(), &child, out)?;
        }
    } else if meta.is_file() {
        out.push(Outgoing {
            source: path.to_owned(),
            name: name.to_owned(),
            size: meta.len(),
        });
    }
    Ok(())
}

struct Incoming {
    name: String,
    final_path: PathBuf,
    temp_path: PathBuf,
    file: File,
    hasher: blake3::Hasher,
    size: u64,
    written: u64,
}

/// How a received file ended up in the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Under the name it was sent with.
    Saved,
    /// Under a new name: a different file had its name.
    Renamed,
    /// Not written: an identical file was there already.
    AlreadyThere,
}

/// Where one received file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Its name as sent.
    pub name: String,
    /// Where it is now (the file that was there, for `AlreadyThere`).
    pub path: PathBuf,
    pub how: Placement,
}

/// Writes received files into `root`.
pub struct Receiver {
    root: PathBuf,
    open: HashMap<u32, Incoming>,
    pub files: u32,
    pub bytes: u64,
    /// The files of this transfer not saved under their own name.
    pub moved: Vec<Placed>,
}

fn io(name: &str) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |e| TransferError::Io(name.to_owned(), e)
}

/// `name`, then `name (1)`, `name (2)`, …: where a received file may land.
fn candidates(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    std::iter::once(path.to_owned())
        .chain((1..1000).map(move |i| path.with_file_name(format!("{stem} ({i}){ext}"))))
}

/// Whether `path` is a regular file (not a link) of `size` bytes whose
/// BLAKE3 hash is `hash`. Anything unreadable counts as different. Opened
/// without following a link and checked on the open handle, so a link
/// swapped in meanwhile is never read through.
fn same_content(path: &Path, size: u64, hash: &[u8]) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
    else {
        return false;
    };
    match file.metadata() {
        Ok(m) if m.file_type().is_file() && m.len() == size => {}
        _ => return false,
    }
    let mut h = blake3::Hasher::new();
    match h.update_reader(file) {
        Ok(_) => h.finalize().as_bytes() == hash,
        Err(_) => false,
    }
}

/// How many names in a row are compared by content before the search
/// only looks for a free one: a sender cannot make the receiver hash
/// hundreds of same-size files for each file it sends.
const COMPARED_NAMES: usize = 16;

/// Private to the person the agent runs as: what trusted devices send is
/// not for the machine's other users.
const INBOX_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Moves a verified file to the first free name, never replacing one that
/// exists (a hard link fails if the name is taken, unlike a rename); a
/// name on the way that already holds the same content ends the search
/// and the received copy is dropped.
fn place(
    temp: &Path,
    wanted: &Path,
    size: u64,
    hash: &[u8],
) -> std::io::Result<(PathBuf, Placement)> {
    for (i, target) in candidates(wanted).enumerate() {
        match fs::hard_link(temp, &target) {
            Ok(()) => {
                fs::remove_file(temp)?;
                let how = if i == 0 {
                    Placement::Saved
                } else {
                    Placement::Renamed
                };
                return Ok((target, how));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if i < COMPARED_NAMES && same_content(&target, size, hash) {
                    fs::remove_file(temp)?;
                    return Ok((target, Placement::AlreadyThere));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free name",
    ))
}

impl Receiver {
    pub fn new(root: PathBuf) -> Receiver {
        Receiver {
            root,
            open: HashMap::new(),
            files: 0,
            bytes: 0,
            moved: Vec::new(),
        }
    }

    pub fn start(&mut self, id: u32, path: &str, size: u64) -> Result<(), TransferError> {
        if self.open.contains_key(&id) {
            return Err(TransferError::Duplicate(id));
        }
        if self.open.len() >= MAX_OPEN {
            return Err(TransferError::TooManyOpen);
        }
        let rel = safe_relative(path).ok_or_else(|| TransferError::Path(path.to_owned()))?;
        let final_path = self.root.join(&rel);
        let dir = self.make_dirs(&rel, path)?;
        let file_name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A fresh random name, created new (never opened through a link,
        // never shared with another transfer into the same folder).
        let nonce = tessera_core::secret::hex(&tessera_core::secret::random_bytes::<8>());
        let temp_path = dir.join(format!(".{file_name}.{nonce}.tessera-partial"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp_path)
            .map_err(io(path))?;
        self.open.insert(
            id,
            Incoming {
                name: path.to_owned(),
                final_path,
                temp_path,
                file,
                hasher: blake3::Hasher::new(),
                size,
                written: 0,
            },
        );
        Ok(())
    }

    pub fn chunk(&mut self, id: u32, offset: u64, data: &[u8]) -> Result<u64, TransferError> {
        let f = self.open.get_mut(&id).ok_or(TransferError::Sequence)?;
        if offset != f.written || f.written + data.len() as u64 > f.size {
            return Err(TransferError::Sequence);
        }
        f.file.write_all(data).map_err(io(&f.name))?;
        f.hasher.update(data);
        f.written += data.len() as u64;
        Ok(data.len() as u64)
    }

    /// Verifies the hash and moves the file to its final name (or drops
    /// it when an identical file is there already).
    pub fn end(&mut self, id: u32, hash: &[u8]) -> Result<Placed, TransferError> {
        let mut f = self.open.remove(&id).ok_or(TransferError::Sequence)?;
        let result = (|| {
            if f.written != f.size {
                return Err(TransferError::Size(f.name.clone(), f.size, f.written));
            }
            if f.hasher.finalize().as_bytes() != hash {
                return Err(TransferError::Hash(f.name.clone()));
            }
            f.file.flush().map_err(io(&f.name))?;
            f.file.sync_all().map_err(io(&f.name))?;
            place(&f.temp_path, &f.final_path, f.size, hash).map_err(io(&f.name))
        })();
        match result {
            Ok((path, how)) => {
                self.files += 1;
                self.bytes += f.size;
                let placed = Placed {
                    name: f.name.clone(),
                    path,
                    how,
                };
                if how != Placement::Saved {
                    self.moved.push(placed.clone());
                }
                Ok(placed)
            }
            Err(e) => {
                let _ = fs::remove_file(&f.temp_path);
                Err(e)
            }
        }
    }

    /// Creates the folders of `rel` under the root one by one, refusing any
    /// that is a link (a link planted in the inbox must not lead out of it).
    fn make_dirs(&self, rel: &Path, name: &str) -> Result<PathBuf, TransferError> {
        let refuse = || TransferError::Path(name.to_owned());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(INBOX_MODE)
            .create(&self.root)
            .map_err(io(name))?;
        let mut dir = self.root.clone();
        let parts: Vec<_> = rel.components().collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => return Err(refuse()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
                    .mode(INBOX_MODE)
                    .create(&dir)
                    .map_err(io(name))?,
                Err(e) => return Err(io(name)(e)),
            }
        }
        Ok(dir)
    }

    /// Where `path` (a file in the inbox) is, relative to the inbox and
    /// '/'-separated, as the sender is told.
    pub fn relative(&self, path: &Path) -> String {
        // Always under the root (it is joined from it); were it not, only
        // its file name is told, never where it is on this machine.
        let rel = path
            .strip_prefix(&self.root)
            .unwrap_or_else(|_| Path::new(path.file_name().unwrap_or_default()));
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Starts counting a new transfer.
    pub fn reset_counts(&mut self) {
        self.files = 0;
        self.bytes = 0;
        self.moved.clear();
    }

    /// Drops every unfinished file.
    pub fn abort(&mut self) {
        for (_, f) in self.open.drain() {
            let _ = fs::remove_file(&f.temp_path);
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_paths_cannot_escape_the_inbox() {
        assert_eq!(safe_relative("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/./b",
            "a\0b",
            "a/..",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_file_appears_under_its_name_only_when_whole_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver::new(dir.path().to_owned());
        let data = b"hello world";
        r.start(1, "docs/a.txt", data.len() as u64).unwrap();
        r.chunk(1, 0, &data[..5]).unwrap();
        assert!(!dir.path().join("docs/a.txt").exists());
        r.chunk(1, 5, &data[5..]).unwrap();
        let p = r.end(1, blake3::hash(data).as_bytes()).unwrap();
        assert_eq!(fs::read(&p.path).unwrap(), data);

        // A wrong hash: nothing under the final name, no partial left.
        r.start(2, "docs/b.txt", 3).unwrap();
        r.chunk(2, 0, b"abc").unwrap();
        assert!(matches!(r.end(2, &[0u8; 32]), Err(TransferError::Hash(_))));
        assert!(!dir.path().join("docs/b.txt").exists());
        // An aborted transfer leaves nothing either.
        r.start(3, "c.bin", 10).unwrap();
        r.chunk(3, 0, b"12345").unwrap();
        r.abort();
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("docs")]);
        assert_eq!(fs::read_dir(dir.path().join("docs")).unwrap().count(), 1);
    }

    #[test]
    fn out_of_order_or_oversized_chunks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver::new(dir.path().to_owned());
        r.start(1, "x", 4).unwrap();
        assert!(matches!(r.chunk(1, 2, b"ab"), Err(TransferError::Sequence)));
        assert!(matches!(
            r.chunk(1, 0, b"abcde"),
            Err(TransferError::Sequence)
        ));
        assert!(matches!(r.chunk(9, 0, b"a"), Err(TransferError::Sequence)));
    }

    #[test]
    fn folders_are_walked_with_their_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("photos");
        fs::create_dir_all(top.join("2026")).unwrap();
        fs::write(top.join("a.jpg"), b"1").unwrap();
        fs::write(top.join("2026/b.jpg"), b"22").unwrap();
        let names: Vec<String> = walk(&[top]).unwrap().into_iter().map(|o| o.name).collect();
        assert_eq!(names, ["photos/2026/b.jpg", "photos/a.jpg"]);
    }

    #[test]
    fn an_existing_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), b"mine").unwrap();
        let mut r = Receiver::new(dir.path().to_owned());
        r.start(1, "a.txt", 5).unwrap();
        r.chunk(1, 0, b"yours").unwrap();
        let p = r.end(1, blake3::hash(b"yours").as_bytes()).unwrap();
        assert_eq!(p.path, dir.path().join("a (1).txt"));
        assert_eq!(p.how, Placement::Renamed);
        assert_eq!(r.relative(&p.path), "a (1).txt");
        assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"mine");
        assert_eq!(fs::read(&p.path).unwrap(), b"yours");
        assert_eq!(r.moved, vec![p]);
    }

    fn receive(r: &mut Receiver, id: u32, name: &str, data: &[u8]) -> Placed {
        r.start(id, name, data.len() as u64).unwrap();
        r.chunk(id, 0, data).unwrap();
        r.end(id, blake3::hash(data).as_bytes()).unwrap()
    }

    #[test]
    fn a_file_identical_to_one_there_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver::new(dir.path().to_owned());
        let first = receive(&mut r, 1, "docs/a.txt", b"same");
        assert_eq!(first.how, Placement::Saved);
        assert!(
            r.moved.is_empty(),
            "a file under its own name is not listed"
        );
        let again = receive(&mut r, 2, "docs/a.txt", b"same");
        assert_eq!(again.how, Placement::AlreadyThere);
        assert_eq!(again.path, dir.path().join("docs/a.txt"));
        assert_eq!(r.relative(&again.path), "docs/a.txt");
        // Another content under that name is renamed; sending it again
        // finds it under its new name.
        let other = receive(&mut r, 3, "docs/a.txt", b"other");
        assert_eq!(other.how, Placement::Renamed);
        let other_again = receive(&mut r, 4, "docs/a.txt", b"other");
        assert_eq!(other_again.how, Placement::AlreadyThere);
        assert_eq!(other_again.path, dir.path().join("docs/a (1).txt"));
        let names: Vec<_> = fs::read_dir(dir.path().join("docs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(r.files, 4);
        assert_eq!(r.moved.len(), 3);
        r.reset_counts();
        assert!(r.moved.is_empty());
    }

    #[test]
    fn a_link_with_the_same_name_is_never_taken_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("x"), b"same").unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), dir.path().join("a.txt")).unwrap();
        let mut r = Receiver::new(dir.path().to_owned());
        let p = receive(&mut r, 1, "a.txt", b"same");
        assert_eq!(p.how, Placement::Renamed);
        assert_eq!(fs::read(dir.path().join("a (1).txt")).unwrap(), b"same");
    }

    #[test]
    fn a_link_planted_in_the_inbox_does_not_lead_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        fs::create_dir_all(&inbox).unwrap();
        std::os::unix::fs::symlink(outside.path(), inbox.join("docs")).unwrap();
        let mut r = Receiver::new(inbox.clone());
        assert!(matches!(
            r.start(1, "docs/evil.sh", 1),
            Err(TransferError::Path(_))
        ));
        assert!(matches!(
            r.start(2, "docs/deeper/evil.sh", 1),
            Err(TransferError::Path(_))
        ));
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn two_transfers_of_one_name_never_share_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Receiver::new(dir.path().to_owned());
        let mut second = Receiver::new(dir.path().to_owned());
        first.start(1, "report.pdf", 3).unwrap();
        second.start(1, "report.pdf", 3).unwrap();
        first.chunk(1, 0, b"one").unwrap();
        second.chunk(1, 0, b"two").unwrap();
        let a = first.end(1, blake3::hash(b"one").as_bytes()).unwrap().path;
        let b = second.end(1, blake3::hash(b"two").as_bytes()).unwrap().path;
        assert_ne!(a, b);
        assert_eq!(fs::read(a).unwrap(), b"one");
        assert_eq!(fs::read(b).unwrap(), b"two");
        // One transfer cannot start the same file twice.
        first.start(7, "x", 1).unwrap();
        assert!(matches!(
            first.start(7, "y", 1),
            Err(TransferError::Duplicate(7))
        ));
    }

    #[test]
    fn files_in_flight_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver::new(dir.path().to_owned());
        for id in 0..MAX_OPEN as u32 {
            r.start(id, &format!("f{id}"), 1).unwrap();
        }
        assert!(matches!(
            r.start(99, "one-too-many", 1),
            Err(TransferError::TooManyOpen)
        ));
    }

    #[test]
    fn the_inbox_and_what_lands_in_it_are_private_to_the_agent_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("Downloads").join("Tessera");
        let mut r = Receiver::new(inbox.clone());
        r.start(1, "sub/note.txt", 2).unwrap();
        r.chunk(1, 0, b"hi").unwrap();
        r.end(1, blake3::hash(b"hi").as_bytes()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&inbox), 0o700);
        assert_eq!(mode(&inbox.join("sub")), 0o700);
        assert_eq!(mode(&inbox.join("sub/note.txt")), 0o600);
    }
}
