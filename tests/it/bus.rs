//! Topic creation and a produce/consume round trip with a consumer group and
//! committed offsets, against the real broker.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sitewatch::bus;
use tokio_util::sync::CancellationToken;

use crate::support::{unique, wait_for, TestConfig, TestDb};

fn consumer(base: &ClientConfig, group: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = base
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

async fn next_payload(c: &StreamConsumer) -> String {
    let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
        .await
        .expect("no message within 30s")
        .expect("consume");
    String::from_utf8(m.payload().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn topics_are_created_once_and_messages_resume_after_commit() {
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, "");
    let settings = cfg.load();
    let topics = cfg.topics.all();

    let cancel = CancellationToken::new();
    let sized: Vec<(&str, i32)> = topics
        .iter()
        .map(|t| (*t, settings.kafka.partitions))
        .collect();
    bus::ensure_topics_with_retry(&settings, &sized, &cancel)
        .await
        .unwrap();
    // Existing topics are fine.
    bus::ensure_topics(&settings, &topics).await.unwrap();

    let base = bus::client_config(&settings);
    let producer: FutureProducer = base.clone().create().unwrap();
    let topic = cfg.topics.created.as_str();
    for i in 0..3 {
        producer
            .send(
                FutureRecord::to(topic)
                    .key("site-a")
                    .payload(&format!("m{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let group = unique("grp");
    let first = consumer(&base, &group, topic);
    assert_eq!(next_payload(&first).await, "m0");
    assert_eq!(next_payload(&first).await, "m1");
    first.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(first);

    // The group resumes after the last committed message.
    let second = consumer(&base, &group, topic);
    assert_eq!(next_payload(&second).await, "m2");
}

#[tokio::test]
async fn unreachable_broker_is_retried_until_cancelled() {
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, "");
    let mut settings = cfg.load();
    // Something that accepts connections and closes them at once: not a
    // broker. Counting its connections shows the retries happening.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    settings.kafka.brokers = listener.local_addr().unwrap().to_string();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = attempts.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        wait_for(
            "the broker tried three times",
            Duration::from_secs(60),
            || async { attempts.load(std::sync::atomic::Ordering::SeqCst) >= 3 },
        )
        .await;
        stop.cancel();
    });
    let err = bus::ensure_topics_with_retry(&settings, &[("x", 1)], &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, bus::BusError::Cancelled), "{err}");
}
