//! Event ingestion: batches with and without duplicates, and audit appends.

use std::time::Instant;

use serde_json::json;
use tessera_core::api::{EventBatch, EventIn};

use crate::device::{self, Device};
use crate::result::BenchResult;
use crate::server::{Opts, Server};

use super::*;

fn events(device: usize, from: usize, count: usize) -> Vec<EventIn> {
    (from..from + count)
        .map(|i| EventIn {
            kind: "bench.sample".into(),
            // The canonical id covers kind, subject and the second: one
            // subject per event keeps them distinct.
            subject: format!("device-{device}-item-{i}"),
            occurred_at: format!(
                "2026-01-01T00:{:02}:{:02}.{:03}Z",
                i / 60_000 % 60,
                i / 1000 % 60,
                i % 1000
            ),
            attributes: json!({ "i": i }),
        })
        .collect()
}

/// Pushes `batches` batches of 500 from each of `devices` at once; with
/// `dup`, half of each batch repeats the previous one. Returns events/s and
/// whether the server counted exactly the new ones as accepted.
async fn push(
    server: &Server,
    devices: &[Device],
    batches: usize,
    dup: bool,
    offset: usize,
) -> anyhow::Result<(f64, bool)> {
    const BATCH: usize = 500;
    let t0 = Instant::now();
    let tasks = devices.iter().enumerate().map(|(di, d)| {
        let client = server.client().map(|c| c.with_token(d.key.clone()));
        async move {
            let client = client?;
            let (mut sent, mut accepted, mut expected) = (0u64, 0u64, 0u64);
            let mut next = offset;
            for b in 0..batches {
                let batch = if dup && b > 0 {
                    let mut v = events(di, next - BATCH / 2, BATCH / 2);
                    v.extend(events(di, next, BATCH / 2));
                    next += BATCH / 2;
                    expected += (BATCH / 2) as u64;
                    v
                } else {
                    let v = events(di, next, BATCH);
                    next += BATCH;
                    expected += BATCH as u64;
                    v
                };
                sent += batch.len() as u64;
                let resp = client.push_events(&EventBatch { events: batch }).await?;
                accepted += resp.accepted;
            }
            Ok::<_, anyhow::Error>((sent, accepted == expected))
        }
    });
    let mut total = 0;
    let mut exact = true;
    for r in futures_util::future::join_all(tasks).await {
        let (sent, ok) = r?;
        total += sent;
        exact &= ok;
    }
    Ok((total as f64 / t0.elapsed().as_secs_f64(), exact))
}

pub(crate) async fn ingest(
    opts: &Opts,
    batches: usize,
    quick: bool,
) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new(
        "ingest",
        json!({"batches_per_device": batches, "batch": 500, "devices": 4, "audit_writes": if quick { 40 } else { 2000 }}),
    );
    r.backend = "sqlite+postgres".into();
    for backend in [crate::Backend::Sqlite, crate::Backend::Postgres] {
        let name = format!("{backend:?}").to_lowercase();
        let opts = Opts {
            backend,
            bin: opts.bin.clone(),
        };
        let server = Server::start(&opts, &SERVER_FLAGS).await?;
        let admin = server.admin().await?;
        let devices = device::enroll(&server, &admin, 4).await?;
        let (fresh, exact0) = push(&server, &devices, batches, false, 0).await?;
        let (dups, exact50) = push(&server, &devices, batches, true, 10_000_000).await?;
        r.figure(&format!("{name}: events, 0% duplicates"), fresh, "events/s");
        r.figure(&format!("{name}: events, 50% duplicates"), dups, "events/s");
        r.check(
            &format!("{name}: every new event stored once"),
            exact0 && exact50,
        );
        // Audited writes: enrollment tokens, each one row and one audit
        // append, four writers at once.
        let writes = if quick { 40 } else { 2000 };
        let t0 = Instant::now();
        let tasks = (0..4).map(|_| {
            let admin = admin.clone();
            async move {
                for _ in 0..writes / 4 {
                    admin
                        .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
                            uses: 1,
                            ttl_seconds: 60,
                            tags: vec![],
                        })
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        });
        for t in futures_util::future::join_all(tasks).await {
            t?;
        }
        r.figure(
            &format!("{name}: audited writes"),
            writes as f64 / t0.elapsed().as_secs_f64(),
            "/s",
        );
        let verify = admin.audit_page(&Default::default()).await.is_ok();
        r.check(&format!("{name}: audit log readable"), verify);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_check_sees_order_through_any_split() {
        let stream: Vec<u8> = (0..4).flat_map(|i| block(i).to_vec()).collect();
        for piece in [1, 7, 8, 9, 1000, CHUNK, CHUNK + 3] {
            let mut s = Sequence::default();
            for p in stream.chunks(piece) {
                s.feed(p);
            }
            assert!(s.in_order(), "{piece}");
            assert_eq!(s.offset, stream.len() as u64);
        }
        let swapped: Vec<u8> = [1, 0, 2, 3]
            .iter()
            .flat_map(|i| block(*i).to_vec())
            .collect();
        let mut s = Sequence::default();
        s.feed(&swapped);
        assert!(!s.in_order());
    }

    #[test]
    fn a_duplicate_half_batch_repeats_the_previous_events() {
        let a = events(0, 0, 500);
        let b = events(0, 250, 250);
        assert_eq!(a[250..], b[..]);
    }
}
