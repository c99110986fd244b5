//! The member's file `Receiver` fed what a hostile sender in an automatic
//! session can send: any sequence of starts, chunks and ends, with any
//! names, ids, sizes, offsets and hashes, into an inbox that holds a
//! planted link to a directory outside it. Nothing ever appears outside
//! the inbox, completed files are inside it and complete, and no partial
//! file outlives the receiver.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera_agent::files::Receiver;

#[derive(Arbitrary, Debug)]
enum Op {
    Start {
        id: u8,
        path: String,
        size: u8,
    },
    Chunk {
        id: u8,
        offset: u8,
        data: Vec<u8>,
    },
    End {
        id: u8,
        right_hash: bool,
        hash: Vec<u8>,
    },
    Abort,
}

/// Every file under `dir`, not following links.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => out.extend(files_under(&path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out
}

fn scratch() -> tempfile::TempDir {
    // tmpfs when there is one: the receiver syncs every file it completes.
    let shm = Path::new("/dev/shm");
    let made = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    made.expect("a scratch directory")
}

fuzz_target!(|ops: Vec<Op>| {
    let dir = scratch();
    let inbox = dir.path().join("inbox");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&inbox).expect("inbox");
    fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, inbox.join("link")).expect("planted link");
    let root = inbox.canonicalize().expect("inbox resolves");

    // What the sender has sent so far per file id, to send the right hash.
    let mut sent: std::collections::HashMap<u8, Vec<u8>> = Default::default();
    let mut receiver = Receiver::new(inbox.clone());
    // Every file placed, to check again once the receiver is gone.
    let mut completed: Vec<PathBuf> = Vec::new();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Start { id, path, size } => {
                if receiver
                    .start(u32::from(id), &path, u64::from(size))
                    .is_ok()
                {
                    sent.insert(id, Vec::new());
                }
            }
            Op::Chunk { id, offset, data } => {
                if receiver
                    .chunk(u32::from(id), u64::from(offset), &data)
                    .is_ok()
                {
                    sent.entry(id).or_default().extend_from_slice(&data);
                }
            }
            Op::End {
                id,
                right_hash,
                hash,
            } => {
                let content = sent.remove(&id).unwrap_or_default();
                let hash = if right_hash {
                    blake3::hash(&content).as_bytes().to_vec()
                } else {
                    hash
                };
                if let Ok(placed) = receiver.end(u32::from(id), &hash) {
                    let real = placed.path.canonicalize().expect("a placed file exists");
                    assert!(real.starts_with(&root), "{placed:?} left the inbox");
                    assert_eq!(fs::read(&real).expect("readable"), content);
                    completed.push(placed.path);
                }
            }
            Op::Abort => {
                receiver.abort();
                sent.clear();
            }
        }
        assert!(
            files_under(&outside).is_empty(),
            "a file appeared outside the inbox"
        );
    }
    drop(receiver);
    for p in completed {
        let real = p.canonicalize().expect("a completed file stays");
        assert!(real.starts_with(&root));
    }
    let partials: Vec<PathBuf> = files_under(&inbox)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tessera-partial"))
        .collect();
    assert!(
        partials.is_empty(),
        "partial files left behind: {partials:?}"
    );
    assert!(files_under(&outside).is_empty());
});
