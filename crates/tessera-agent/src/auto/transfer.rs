//! Sending files to every member of an automatic session, and waiting
//! until each acknowledged every file whole and verified; and the events
//! either side reports as files move, for its caller to show (the library
//! draws nothing).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tessera_proto::v1::{e2e_payload, FileChunk, FileEnd, FileStart, TransferAck, TransferDone};

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

impl AutoSession {
    /// Sends files and folders to every member; returns once each member
    /// acknowledged every file whole and verified. `report` hears each
    /// file start, move and finish.
    pub async fn send_files(
        &mut self,
        items: &[Outgoing],
        mut report: impl FnMut(TransferEvent),
    ) -> Result<u64, AutoError> {
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
        Ok(total)
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
