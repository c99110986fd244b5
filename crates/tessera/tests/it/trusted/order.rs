//! The order a creator reads its session in: the reply to its create
//! before any member's answer (PROTOCOL.md §8.2).

use tessera_agent::control::ClientConnection;
use tessera_core::trust::Scope;
use tessera_proto::v1::AutoSessionCreate;
use tessera_proto::Body;

use tessera_testkit::{AgentProcess, TestDevice, TestServer};

use super::*;

/// Members' agents answer at once; the server used to invite them (and note
/// each grant's use in the database) before it queued the creator's reply,
/// so with several members an answer overtook the reply and a creator that
/// dropped it waited 20 s for a member that had joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creator_reads_its_reply_before_any_member_answer() {
    const MEMBERS: usize = 6;
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "creator").await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        members.push(TestDevice::enroll(&s, &admin, &format!("member-{i}")).await);
    }
    futures_util::future::join_all(members.iter().map(|m| async {
        trust_both(&a, m).await;
        grant(m, &a, &[Scope::Files], DAY).await;
    }))
    .await;
    let mut agents = Vec::new();
    for m in &members {
        agents.push(AgentProcess::start(&s, m).await);
    }
    let ids: Vec<String> = members.iter().map(|m| m.device_id.clone()).collect();
    for round in 0..5 {
        let mut conn = ClientConnection::open(&creds(&a)).await.expect("connect");
        conn.send(Body::AutoSessionCreate(AutoSessionCreate {
            members: ids.clone(),
            scope: Scope::Files.as_str().to_owned(),
            all_or_nothing: false,
        }))
        .await
        .expect("send");
        let first = tokio::time::timeout(Duration::from_secs(10), conn.recv())
            .await
            .expect("an answer in time");
        let Some(Body::AutoSessionCreated(created)) = first else {
            panic!("round {round}: the first message is {first:?}");
        };
        assert!(created.started, "round {round}: {created:?}");
        let mut answered = 0;
        while answered < MEMBERS {
            match tokio::time::timeout(Duration::from_secs(10), conn.recv()).await {
                Ok(Some(Body::AutoJoinAnswer(x))) if x.session_id == created.session_id => {
                    assert!(x.accept, "round {round}: {x:?}");
                    answered += 1;
                }
                Ok(Some(_)) => {}
                other => panic!("round {round}: {answered} of {MEMBERS} answered, then {other:?}"),
            }
        }
        conn.close().await;
    }
    drop(agents);
    s.stop().await;
}
