//! Sending files to every member of an automatic session, and waiting
//! until each acknowledged every file whole and verified; and the events
//! either side reports as files move, for its caller to show (the library
//! draws nothing).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tessera_proto::v1::{
    e2e_payload, FileChunk, FileEnd, FilePlacement, FileStart, TransferAck, TransferDone,
};

use super::creator::{AutoError, AutoSession, Event};
use crate::files::{self, Outgoing};

/// One step of a file transfer, on the sending or the receiving side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEvent {
    /// A file starts: its name (its path within what was sent) and size.
    Started { name: String, size: u64 },
    /// `bytes` more of the current file moved.
    Progress { bytes: u64 },
    /// The current file was sent, or arrived whole and verified.
    Finished { name: String },
    /// The receiver stopped before the end and removed what it had of the
    /// file in progress.
    Abandoned,
}

/// Where a member's agent reports the files it receives.
pub type TransferReport = Arc<dyn Fn(TransferEvent) + Send + Sync>;

/// What a finished transfer delivered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// Bytes every member verified.
    pub bytes: u64,
    /// Per member (device id), in the members' order: the files it did
    /// not save under their own name.
    pub members: Vec<MemberDelivery>,
}

/// One member's word on where the files went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberDelivery {
    pub member: String,
    /// The files it named (at most 100 of them).
    pub placed: Vec<FilePlacement>,
    /// Saved under a new name, all of them.
    pub renamed: u32,
    /// Not written again, all of them.
    pub already_there: u32,
}

impl Delivery {
    /// In words, one line per file a member renamed or already had (and
    /// one for those it did not name); nothing when every file was saved
    /// under its own name. `name_of` gives a member's name for people.
    pub fn notes(&self, name_of: impl Fn(&str) -> String) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.members {
            let who = printable(&name_of(&m.member));
            for p in &m.placed {
                // Names a member reports are shown, never interpreted: no
                // terminal escapes from a peer reach the sender's screen.
                let (path, saved_as) = (printable(&p.path), printable(&p.saved_as));
                out.push(if p.already_there && saved_as == path {
                    format!("{who} already had {path}: identical, not written again.")
                } else if p.already_there {
                    format!("{who} already had {path} as {saved_as}: identical, not written again.")
                } else {
                    format!("{who} already had a different {path}: saved this one as {saved_as}.")
                });
            }
            let listed = m.placed.len() as u64;
            let all = u64::from(m.renamed) + u64::from(m.already_there);
            if all > listed {
                out.push(format!(
                    "{who}: {} more file(s) renamed or already there ({} renamed, {} already there in all).",
                    all - listed,
                    m.renamed,
                    m.already_there
                ));
            }
        }
        out
    }
}

/// What a peer names is only ever shown: printable, at most 512
/// characters.
fn printable(s: &str) -> String {
    tessera_core::text::printable(s, 512)
}

impl AutoSession {
    /// Sends files and folders to every member; returns once each member
    /// acknowledged every file whole and verified, with where each member
    /// put the files it did not save under their own name. `report` hears
    /// each file start, move and finish.
    pub async fn send_files(
        &mut self,
        items: &[Outgoing],
        mut report: impl FnMut(TransferEvent),
    ) -> Result<Delivery, AutoError> {
        use tokio::io::AsyncReadExt;
        let total: u64 = items.iter().map(|o| o.size).sum();
        let mut acks: HashMap<String, TransferAck> = HashMap::new();
        let receivers = self.joined();
        for (i, item) in items.iter().enumerate() {
            let id = i as u32 + 1;
            report(TransferEvent::Started {
                name: item.name.clone(),
                size: item.size,
            });
            let start = self.seal(
                e2e_payload::Body::FileStart(FileStart {
                    file_id: id,
                    path: item.name.clone(),
                    size: item.size,
                    mode: 0o644,
                }),
                "",
            );
            self.conn.send(start).await?;
            let mut f = tokio::fs::File::open(&item.source)
                .await
                .map_err(|e| AutoError::Transfer(format!("{}: {e}", item.source.display())))?;
            let mut hasher = blake3::Hasher::new();
            let mut offset = 0u64;
            let mut buf = vec![0u8; files::CHUNK];
            loop {
                let n = f
                    .read(&mut buf)
                    .await
                    .map_err(|e| AutoError::Transfer(format!("{}: {e}", item.source.display())))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                let chunk = self.seal(
                    e2e_payload::Body::FileChunk(FileChunk {
                        file_id: id,
                        offset,
                        data: Bytes::copy_from_slice(&buf[..n]),
                    }),
                    "",
                );
                self.conn.send(chunk).await?;
                offset += n as u64;
                report(TransferEvent::Progress { bytes: n as u64 });
                self.drain(&mut acks).await?;
            }
            if offset != item.size {
                return Err(AutoError::Transfer(format!(
                    "{} changed while it was sent",
                    item.name
                )));
            }
            let end = self.seal(
                e2e_payload::Body::FileEnd(FileEnd {
                    file_id: id,
                    blake3: Bytes::copy_from_slice(hasher.finalize().as_bytes()),
                }),
                "",
            );
            self.conn.send(end).await?;
            report(TransferEvent::Finished {
                name: item.name.clone(),
            });
        }
        let done = self.seal(
            e2e_payload::Body::TransferDone(TransferDone {
                files: items.len() as u32,
                bytes: total,
            }),
            "",
        );
        self.conn.send(done).await?;
        while receivers.iter().any(|r| !acks.contains_key(r)) {
            match self.next_event().await? {
                Some(e) => self.take(e, &mut acks)?,
                None => return Err(AutoError::Closed),
            }
        }
        for (member, ack) in &acks {
            if ack.bytes != total || ack.files as usize != items.len() {
                return Err(AutoError::Transfer(format!(
                    "{member} received {} file(s), {} bytes of {} file(s), {total} bytes",
                    ack.files,
                    ack.bytes,
                    items.len()
                )));
            }
        }
        let members = receivers
            .iter()
            .filter_map(|r| acks.remove(r).map(|ack| (r, ack)))
            .map(|(member, ack)| MemberDelivery {
                member: member.clone(),
                placed: ack.placed,
                renamed: ack.renamed,
                already_there: ack.already_there,
            })
            .collect();
        Ok(Delivery {
            bytes: total,
            members,
        })
    }

    /// Takes what arrived while sending, without waiting.
    async fn drain(&mut self, acks: &mut HashMap<String, TransferAck>) -> Result<(), AutoError> {
        while let Some(body) = self.conn.try_recv() {
            if let Some(e) = self.handle(body).await? {
                self.take(e, acks)?;
            }
        }
        Ok(())
    }

    /// A transfer's view of an event: a refusal, a departure or the end
    /// fails it.
    fn take(&self, e: Event, acks: &mut HashMap<String, TransferAck>) -> Result<(), AutoError> {
        match e {
            Event::Ack { member, ack } if !ack.ok => Err(AutoError::Transfer(format!(
                "{member} refused the transfer: {}",
                ack.error
            ))),
            Event::Ack { member, ack } => {
                acks.insert(member, ack);
                Ok(())
            }
            Event::Left { member, reason } => Err(AutoError::Transfer(format!(
                "{member} left the session: {reason}"
            ))),
            Event::Ended { reason, .. } => {
                Err(AutoError::Transfer(format!("the session ended: {reason}")))
            }
            // A shell's traffic is no part of a transfer.
            Event::Output { .. } | Event::ShellExited { .. } => Ok(()),
        }
    }

    /// Cancels a transfer in progress (members drop what they received).
    pub async fn cancel(&mut self, reason: &str) -> Result<(), AutoError> {
        let b = self.seal(
            e2e_payload::Body::Cancel(tessera_proto::v1::Cancel {
                reason: reason.to_owned(),
            }),
            "",
        );
        self.conn.send(b).await.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(path: &str, saved_as: &str, already_there: bool) -> FilePlacement {
        FilePlacement {
            path: path.into(),
            saved_as: saved_as.into(),
            already_there,
        }
    }

    #[test]
    fn the_sender_reads_what_was_renamed_or_already_there() {
        let d = Delivery {
            bytes: 9,
            members: vec![
                MemberDelivery {
                    member: "B".into(),
                    placed: vec![
                        placement("a.txt", "a.txt", true),
                        placement("b.txt", "b (1).txt", false),
                        placement("c.txt", "c (2).txt", true),
                    ],
                    renamed: 1,
                    already_there: 2,
                },
                MemberDelivery {
                    member: "C".into(),
                    placed: vec![],
                    renamed: 0,
                    already_there: 0,
                },
            ],
        };
        let notes = d.notes(|id| format!("bravo ({id})"));
        assert_eq!(
            notes,
            [
                "bravo (B) already had a.txt: identical, not written again.",
                "bravo (B) already had a different b.txt: saved this one as b (1).txt.",
                "bravo (B) already had c.txt as c (2).txt: identical, not written again.",
            ]
        );
        let quiet = Delivery {
            bytes: 1,
            members: vec![MemberDelivery {
                member: "C".into(),
                ..MemberDelivery::default()
            }],
        };
        assert!(quiet.notes(str::to_owned).is_empty());
    }

    #[test]
    fn files_a_member_did_not_name_are_still_counted() {
        let d = Delivery {
            bytes: 1,
            members: vec![MemberDelivery {
                member: "B".into(),
                placed: vec![placement("a", "a (1)", false)],
                renamed: 150,
                already_there: 3,
            }],
        };
        let notes = d.notes(str::to_owned);
        assert_eq!(notes.len(), 2);
        assert_eq!(
            notes[1],
            "B: 152 more file(s) renamed or already there (150 renamed, 3 already there in all)."
        );
    }
}
