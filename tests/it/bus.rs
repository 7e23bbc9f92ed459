//! Topic creation, a produce/consume round trip with a consumer group and
//! committed offsets, and a stage's backlog (`bus::lag`), against the real
//! broker.

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
    produce(&producer, topic, 3).await;

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

/// Commits `group`'s position on every partition of `topic`: offset 0 (the
/// lowest unfinished message, as our consumers commit) with `taken=<n>` in
/// the metadata, `n` from `taken` for the partition that holds the
/// messages and 0 elsewhere, and `;at=<Unix ms>` when the commit is said
/// to be `ago` old.
fn commit_taken(
    base: &ClientConfig,
    group: &str,
    topic: &str,
    (partition, taken): (i32, i64),
    ago: Option<Duration>,
) {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = base
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        let n = if p.id() == partition { taken } else { 0 };
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(0))
            .unwrap();
        tpl.find_partition(topic, p.id())
            .unwrap()
            .set_metadata(match ago {
                Some(ago) => format!("taken={n};at={}", now_ms - ago.as_millis() as i64),
                None => format!("taken={n}"),
            });
    }
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

/// Produces `n` messages with one key; returns the partition they went to.
async fn produce(producer: &FutureProducer, topic: &str, n: usize) -> i32 {
    let mut partition = -1;
    for i in 0..n {
        let delivered = producer
            .send(
                FutureRecord::to(topic)
                    .key("one-site")
                    .payload(&format!("m{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        partition = delivered.partition;
    }
    partition
}

#[tokio::test]
async fn a_stage_reads_each_group_apart_and_a_group_that_starts_late_is_not_read_as_work_done() {
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, "");
    let settings = cfg.load();
    bus::ensure_topics(&settings, &cfg.topics.all())
        .await
        .unwrap();
    let base = bus::client_config(&settings);
    let producer: FutureProducer = base.clone().create().unwrap();
    let (a, b) = (cfg.topics.succeeded.clone(), cfg.topics.failed.clone());
    let (group_a, group_b) = (unique("grp-a"), unique("grp-b"));

    let pa = produce(&producer, &a, 10).await;
    let pb = produce(&producer, &b, 4).await;
    commit_taken(&base, &group_a, &a, (pa, 3), None);

    let stop = CancellationToken::new();
    let rx = bus::lag::watch(
        &settings,
        &[(group_a.clone(), a.clone()), (group_b.clone(), b.clone())],
        stop.clone(),
    )
    .unwrap();
    let latest = || {
        let rx = rx.clone();
        move || {
            let groups = rx.borrow().clone();
            async move { groups }
        }
    };
    let reading = latest();
    // Group b has not committed: not measured; a has 7 messages waiting.
    wait_for("group a's backlog", Duration::from_secs(30), || async {
        let g = reading().await;
        g[0].is_some_and(|a| a.messages == 7) && g[1].is_none()
    })
    .await;

    // Group b starts having taken 1 of its 4, 10 s ago: its taken offset
    // must not show as a rate, and a commit that old with messages
    // waiting is a stalled group.
    commit_taken(&base, &group_b, &b, (pb, 1), Some(Duration::from_secs(10)));
    wait_for("group b's backlog", Duration::from_secs(30), || async {
        reading().await[1].is_some_and(|b| b.messages == 3)
    })
    .await;
    let now = reading().await;
    let b_now = now[1].unwrap();
    assert_eq!((b_now.rate, b_now.stalled), (0.0, true), "{now:?}");
    assert_eq!(now[0].unwrap().messages, 7, "{now:?}");

    // Group b drains, just now, and group a takes 5 more: the backlogs
    // fall and the rates show it.
    commit_taken(&base, &group_b, &b, (pb, 4), Some(Duration::ZERO));
    commit_taken(&base, &group_a, &a, (pa, 8), None);
    wait_for(
        "the rates the groups take at",
        Duration::from_secs(30),
        || async {
            let g = reading().await;
            g[0].is_some_and(|a| a.messages == 2 && a.rate > 0.0)
                && g[1].is_some_and(|b| b.messages == 0 && b.rate > 0.0 && !b.stalled)
        },
    )
    .await;
    stop.cancel();
}
