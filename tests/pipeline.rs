//! The whole pipeline against real Kafka, Postgres and nlp-sim: a 202 becomes exactly
//! one row, through NLP failures, worker crashes, graceful restarts and rebalances.

mod support;

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use chat_analytics::app::Role;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::json;
use support::{
    create_topic, free_port, metric_value, scrape, test_settings, wait_for_metric,
    wait_until_ready, ChildProcess, Pipeline, TestApp, TestDb, BROKERS,
};
use uuid::Uuid;

#[tokio::test]
async fn a_posted_message_becomes_a_row_with_nlp_fields_and_moderation() {
    let fx = Pipeline::start(3).await;
    let app = fx.spawn(Role::Serve).await;
    let r = app
        .post(
            "/v1/messages",
            &json!({"bot_id": "b1", "text": "I love this, it is wonderful!", "user_id": "u1"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let abusive = app
        .post(
            "/v1/messages",
            &json!({"bot_id": "b1", "text": "you are a f.u.c.k.i.n.g idiot"}),
        )
        .await;
    assert_eq!(abusive.status(), 202);

    let n = fx.db.wait_for_messages(2, Duration::from_secs(30)).await;
    assert_eq!(n, 2);
    let client = fx.db.pool.get().await.expect("conn");
    let row = client
        .query_one(
            "SELECT sentiment_label, sentiment_score, toxicity, language, nlp_status, flagged, \
             user_id, kafka_partition, kafka_offset, nlp->'keywords' FROM messages WHERE text LIKE 'I love%'",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("positive"));
    assert!(row.get::<_, Option<f32>>(1).is_some_and(|s| s > 0.0));
    assert!(row
        .get::<_, Option<f32>>(2)
        .is_some_and(|t| (0.0..=1.0).contains(&t)));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("en"));
    assert_eq!(row.get::<_, String>(4), "ok");
    assert!(!row.get::<_, bool>(5));
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("u1"));
    assert!(row.get::<_, Option<i32>>(7).is_some());
    assert!(row.get::<_, Option<i64>>(8).is_some());
    assert!(row
        .get::<_, Option<serde_json::Value>>(9)
        .is_some_and(|k| k.is_array()));

    let flagged = client
        .query_one(
            "SELECT flagged, flagged_terms FROM messages WHERE text LIKE 'you are%'",
            &[],
        )
        .await
        .expect("row");
    assert!(flagged.get::<_, bool>(0), "evasive profanity is flagged");
    assert!(!flagged.get::<_, Vec<String>>(1).is_empty());

    let page = scrape(&app.admin).await;
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="stored"}"#),
        2.0
    );
    assert!(metric_value(&page, "moderation_hits_total") >= 1.0);
    assert!(metric_value(&page, "end_to_end_latency_seconds_count") >= 2.0);
    fx.finish([app]).await;
}

#[tokio::test]
async fn the_same_message_id_posted_twice_is_stored_once() {
    let fx = Pipeline::start(3).await;
    let app = fx.spawn(Role::Serve).await;
    let id = Uuid::new_v4().to_string();
    let message = json!({"message_id": id, "bot_id": "b1", "text": "hello", "sent_at": "2026-11-23T08:00:00Z"});
    for _ in 0..2 {
        assert_eq!(app.post("/v1/messages", &message).await.status(), 202);
    }
    let marker = app
        .post("/v1/messages", &json!({"bot_id": "b1", "text": "after"}))
        .await;
    assert_eq!(marker.status(), 202);
    let n = fx.db.wait_for_messages(2, Duration::from_secs(30)).await;
    // Both copies were consumed before the marker's row could be counted with them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(n, 2);
    assert_eq!(
        fx.db
            .count(&format!(
                "SELECT count(*) FROM messages WHERE message_id = '{id}'"
            ))
            .await,
        1
    );
    fx.finish([app]).await;
}

#[tokio::test]
async fn a_row_refused_for_its_content_is_the_only_one_dead_lettered_and_not_replayed() {
    let mut fx = Pipeline::start(3).await;
    // A rule only this test's database has: rows saying "poison" are refused (SQLSTATE
    // 23514), as a real constraint or a value out of range would be.
    fx.db
        .pool
        .get()
        .await
        .expect("conn")
        .batch_execute("ALTER TABLE messages ADD CONSTRAINT refuse_poison CHECK (text <> 'poison')")
        .await
        .expect("constraint");
    fx.settings.dlq.replay_interval = Duration::from_secs(1);
    let dlq = fx.settings.dlq.dir.clone();
    let app = fx.spawn(Role::Serve).await;
    let batch: Vec<_> = (0..50)
        .map(|i| {
            let text = if i == 17 {
                "poison".to_owned()
            } else {
                format!("fine {i}")
            };
            json!({"bot_id": "b1", "text": text})
        })
        .collect();
    assert_eq!(
        app.post("/v1/messages/batch", &json!(batch)).await.status(),
        202
    );

    wait_for_metric(
        &app.admin,
        r#"dead_letters_total{stage="storage"}"#,
        1.0,
        Duration::from_secs(30),
        "the refused row is dead-lettered",
    )
    .await;
    assert_eq!(
        fx.db.wait_for_messages(49, Duration::from_secs(30)).await,
        49
    );
    let file = chat_analytics::deadletter::read_dead_letters(&dlq).expect("dead letters");
    assert_eq!(file.letters.len(), 1, "only the refused row");
    let letter = &file.letters[0];
    assert_eq!(letter.message["text"], "poison");
    assert!(letter.error.starts_with("row_refused"), "{}", letter.error);
    assert!(
        letter.error.contains("23514"),
        "the server's reason: {}",
        letter.error
    );
    assert_eq!(letter.attempts, 2, "tried twice before dead-lettering");

    // Several replay intervals later: a refused row is not replayed by itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = scrape(&app.admin).await;
    assert_eq!(
        metric_value(&page, r#"dead_letters_total{stage="storage"}"#),
        1.0
    );
    for outcome in ["stored", "duplicate", "conflict", "dead_lettered"] {
        assert_eq!(
            metric_value(
                &page,
                &format!("dead_letters_replayed_total{{outcome=\"{outcome}\"}}")
            ),
            0.0
        );
    }
    assert_eq!(fx.db.count("SELECT count(*) FROM messages").await, 49);
    fx.finish([app]).await;
}

#[tokio::test]
async fn nlp_failures_store_rows_without_nlp_and_the_breaker_opens_then_closes() {
    let mut fx = Pipeline::start(3).await;
    fx.settings.nlp.breaker_open = Duration::from_millis(1_500);
    let app = fx.spawn(Role::Serve).await;
    fx.nlp.set_faults(json!({"error_rate": 1.0})).await;

    let failing = app.post_messages(60, "down").await;
    let n = fx
        .db
        .wait_for_messages(failing.len() as i64, Duration::from_secs(60))
        .await;
    assert_eq!(
        n,
        failing.len() as i64,
        "every message stored despite the NLP outage"
    );
    let without_nlp = fx.db
        .count("SELECT count(*) FROM messages WHERE nlp_status IN ('failed_after_retries', 'breaker_open') AND sentiment_label IS NULL")
        .await;
    assert_eq!(without_nlp, n, "each row says why it has no NLP data");
    let page = scrape(&app.admin).await;
    assert_eq!(
        metric_value(&page, "circuit_breaker_state"),
        1.0,
        "breaker open"
    );
    assert!(metric_value(&page, r#"nlp_api_errors_total{kind="status_5xx"}"#) > 0.0);

    fx.nlp.set_faults(json!({"error_rate": 0.0})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut sent = failing.len();
    loop {
        app.post_messages(20, "recovering").await;
        sent += 20;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if metric_value(&scrape(&app.admin).await, "circuit_breaker_state") == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker closes once NLP is healthy"
        );
    }
    app.post_messages(10, "healthy").await;
    sent += 10;
    fx.db
        .wait_for_messages(sent as i64, Duration::from_secs(60))
        .await;
    assert!(
        fx.db
            .count(
                "SELECT count(*) FROM messages WHERE bot_id LIKE 'healthy-%' AND nlp_status = 'ok'"
            )
            .await
            >= 9,
        "after closing, messages are enriched again"
    );
    fx.finish([app]).await;
}

#[tokio::test]
async fn a_quiet_bot_is_enriched_again_within_seconds_of_the_breaker_cooldown() {
    let mut fx = Pipeline::start(3).await;
    fx.settings.nlp.breaker_open = Duration::from_secs(2);
    let app = fx.spawn(Role::Serve).await;
    fx.nlp.set_faults(json!({"error_rate": 1.0})).await;

    // The breaker cannot open before the outage's first message, so its cooldown
    // ends no earlier than this plus breaker_open_ms.
    let outage_start = Utc::now();
    app.post_messages(60, "busy").await;
    wait_for_metric(
        &app.admin,
        "circuit_breaker_state",
        1.0,
        Duration::from_secs(30),
        "the breaker opens during the outage",
    )
    .await;
    fx.nlp.set_faults(json!({"error_rate": 0.0})).await;
    let cooldown_over_at_the_earliest = outage_start + chrono::Duration::milliseconds(2_000);

    // One message a second, through the rest of the cooldown and after it, until the
    // breaker has closed. 5 successful trials close it: one a second takes about 5
    // messages, the 10% share alone would take 41.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut quiet = 0;
    let closed = loop {
        tick.tick().await;
        if metric_value(&scrape(&app.admin).await, "circuit_breaker_state") == 0.0 {
            break true;
        }
        if quiet == 20 {
            break false;
        }
        let r = app
            .post(
                "/v1/messages",
                &json!({"bot_id": "quiet", "text": format!("quiet message {quiet} is fine")}),
            )
            .await;
        assert_eq!(r.status(), 202);
        quiet += 1;
    };
    assert!(
        closed,
        "the breaker closes within 20 messages at one a second"
    );

    let stored = fx
        .db
        .wait_for_count(
            "SELECT count(*) FROM messages WHERE bot_id = 'quiet'",
            quiet,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(stored, quiet);
    let first_enriched: Option<DateTime<Utc>> = fx
        .db
        .pool
        .get()
        .await
        .expect("connection")
        .query_one(
            "SELECT min(processed_at) FROM messages WHERE bot_id = 'quiet' AND nlp_status = 'ok'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    let first_enriched = first_enriched.expect("the quiet bot has enriched messages");
    assert!(
        first_enriched <= cooldown_over_at_the_earliest + chrono::Duration::seconds(5),
        "first enriched at {first_enriched}: more than 5 s after the cooldown, which ended at {cooldown_over_at_the_earliest} or later"
    );
    fx.finish([app]).await;
}

#[tokio::test]
async fn a_message_waiting_out_an_nlp_backoff_lends_its_pool_slot_to_the_next() {
    let mut fx = Pipeline::start(1).await;
    fx.settings.worker.concurrency = NonZeroUsize::MIN;
    fx.settings.nlp.max_attempts = NonZeroU32::new(2).expect("not zero");
    fx.settings.nlp.backoff_base = Duration::from_secs(5);
    fx.settings.nlp.backoff_max = Duration::from_secs(5);
    fx.settings.nlp.backoff_jitter_ratio = 0.0;
    let app = fx.spawn(Role::Serve).await;
    fx.nlp.set_faults(json!({"error_rate": 1.0})).await;

    let accepted = app.post_messages(4, "lent").await;
    // With one slot held through each 5 s back-off, the fourth message's first attempt
    // would come after three messages had finished; lent out, all four first attempts
    // fail before any message is finished.
    let page = wait_for_metric(
        &app.admin,
        r#"nlp_api_errors_total{kind="status_5xx"}"#,
        4.0,
        Duration::from_secs(30),
        "four first attempts made",
    )
    .await;
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="stored"}"#),
        0.0,
        "every first attempt was made while the earlier messages waited out their back-off"
    );
    assert_eq!(
        metric_value(&page, "active_workers"),
        0.0,
        "no slot held in back-off"
    );

    fx.db.wait_for_messages(4, Duration::from_secs(60)).await;
    fx.db.assert_stored_exactly_once(&accepted).await;
    let retried = fx
        .db
        .count("SELECT count(*) FROM messages WHERE nlp_status = 'failed_after_retries'")
        .await;
    assert_eq!(retried, 4, "each message was retried after its back-off");
    fx.finish([app]).await;
}

/// Sum over partitions of the group's committed offsets (= messages committed, on a
/// fresh topic).
fn committed_total(topic: &str, group: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum()
}

/// `chat-analytics worker` with `env`, once its admin listener at `admin` is live.
async fn spawn_worker_process(
    name: &'static str,
    env: &[(String, String)],
    admin: &str,
) -> ChildProcess {
    let worker = ChildProcess::spawn(name, &["worker"], env);
    wait_until_ready(&format!("{admin}/livez"), Duration::from_secs(20)).await;
    worker
}

/// A worker running as its own process (so it can be signalled), fed by an in-process
/// ingest API, with this test's own topic, group, database and nlp-sim.
struct ProcessFixture {
    pipeline: Pipeline,
    ingest: TestApp,
    env: Vec<(String, String)>,
    admin: String,
}

impl ProcessFixture {
    async fn start(partitions: i32, nlp_latency_ms: u64) -> ProcessFixture {
        let pipeline = Pipeline::start(partitions).await;
        pipeline
            .nlp
            .set_faults(json!({"latency_ms": nlp_latency_ms}))
            .await;
        let ingest = pipeline.spawn(Role::Ingest).await;
        let admin_port = free_port();
        let env = pipeline.worker_env(admin_port);
        ProcessFixture {
            pipeline,
            ingest,
            env,
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }

    fn db(&self) -> &TestDb {
        &self.pipeline.db
    }

    async fn spawn_worker(&self, name: &'static str) -> ChildProcess {
        spawn_worker_process(name, &self.env, &self.admin).await
    }

    /// A worker alongside the one `spawn_worker` starts: same topic, group and database,
    /// its own admin port and dead-letter directory.
    async fn spawn_another_worker(&self, name: &'static str) -> ChildProcess {
        let admin_port = free_port();
        spawn_worker_process(
            name,
            &self.pipeline.worker_env(admin_port),
            &format!("http://127.0.0.1:{admin_port}"),
        )
        .await
    }

    async fn finish(self, mut worker: ChildProcess) {
        worker.signal("TERM").await;
        assert!(worker.wait(Duration::from_secs(30)).await.success());
        self.pipeline.finish([self.ingest]).await;
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_commits_and_a_restart_reprocesses_nothing() {
    let fx = ProcessFixture::start(3, 50).await;
    let mut worker = fx.spawn_worker("worker").await;
    let accepted = fx.ingest.post_messages(3_000, "term").await;
    fx.db()
        .wait_for_messages(300, Duration::from_secs(60))
        .await;
    worker.signal("TERM").await;
    let status = worker.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "worker exits 0 on SIGTERM: {status:?}");
    let stored_before_restart = fx.db().count("SELECT count(*) FROM messages").await;
    assert_eq!(
        committed_total(
            &fx.pipeline.settings.kafka.topic,
            &fx.pipeline.settings.kafka.consumer_group,
            3
        ),
        stored_before_restart,
        "offsets committed for exactly the messages stored"
    );

    let restarted = fx.spawn_worker("worker-2").await;
    let n = fx
        .db()
        .wait_for_messages(accepted.len() as i64, Duration::from_secs(90))
        .await;
    assert_eq!(n, accepted.len() as i64);
    let page = scrape(&fx.admin).await;
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="duplicate"}"#),
        0.0,
        "nothing stored before SIGTERM is processed again"
    );
    assert_eq!(
        metric_value(&page, r#"messages_processed_total{outcome="stored"}"#) as i64,
        accepted.len() as i64 - stored_before_restart
    );
    fx.db().assert_stored_exactly_once(&accepted).await;
    fx.finish(restarted).await;
}

#[tokio::test]
async fn a_worker_process_sigtermed_while_it_joins_the_group_exits_0_and_loses_nothing() {
    let fx = ProcessFixture::start(6, 20).await;
    let steady = fx.spawn_worker("worker").await;
    let mut accepted = fx.ingest.post_messages(500, "join").await;
    fx.db()
        .wait_for_messages(100, Duration::from_secs(60))
        .await;
    // Each newcomer is live (its admin server answers) before its join completes; the
    // signal lands at a different point of the rebalance each time.
    for (round, delay_ms) in [0u64, 1_500, 4_000].into_iter().enumerate() {
        let mut newcomer = fx.spawn_another_worker("newcomer").await;
        accepted.extend(fx.ingest.post_messages(100, &format!("join-{round}")).await);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        newcomer.signal("TERM").await;
        let status = newcomer.wait(Duration::from_secs(30)).await;
        assert!(
            status.success(),
            "round {round}: exits 0 on SIGTERM: {status:?}"
        );
    }
    fx.db()
        .assert_all_stored_once(&accepted, Duration::from_secs(120))
        .await;
    fx.finish(steady).await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing() {
    // At most 100 calls of 20 ms in flight: at most 5,000 msg/s, so the kill lands while
    // most of the 20,000 are still to do, however fast the rest of the pipeline is.
    let mut fx = ProcessFixture::start(6, 20).await;
    fx.env
        .push(("CHAT_ANALYTICS__WORKER__CONCURRENCY".into(), "100".into()));
    let mut worker = fx.spawn_worker("worker").await;
    let accepted = fx.ingest.post_messages(20_000, "kill").await;
    let before_kill = fx
        .db()
        .wait_for_messages(4_000, Duration::from_secs(120))
        .await;
    worker.signal("KILL").await;
    worker.wait(Duration::from_secs(10)).await;
    assert!(
        before_kill < accepted.len() as i64,
        "killed in the middle of the stream"
    );
    let after_kill = fx.db().count("SELECT count(*) FROM messages").await;
    assert!(
        after_kill < accepted.len() as i64,
        "work was left for the restarted worker"
    );

    let restarted = fx.spawn_worker("worker-2").await;
    fx.db()
        .assert_all_stored_once(&accepted, Duration::from_secs(240))
        .await;
    fx.finish(restarted).await;
}

#[tokio::test]
async fn a_second_worker_joining_mid_stream_shares_the_work_and_loses_nothing() {
    let fx = Pipeline::start(6).await;
    let ingest = fx.spawn(Role::Ingest).await;
    let first = fx.spawn(Role::Worker).await;

    let mut accepted = ingest.post_messages(2_000, "early").await;
    fx.db.wait_for_messages(500, Duration::from_secs(60)).await;
    let second = fx.spawn(Role::Worker).await;
    for _ in 0..8 {
        accepted.extend(ingest.post_messages(250, "late").await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fx.db
        .assert_all_stored_once(&accepted, Duration::from_secs(120))
        .await;
    let processed = |page: &str| {
        metric_value(page, r#"messages_processed_total{outcome="stored"}"#)
            + metric_value(page, r#"messages_processed_total{outcome="duplicate"}"#)
    };
    let by_first = processed(&scrape(&first.admin).await);
    let by_second = processed(&scrape(&second.admin).await);
    assert!(
        by_first > 0.0 && by_second > 0.0,
        "both workers took partitions: {by_first} / {by_second}"
    );
    fx.finish([first, second, ingest]).await;
}

/// Waits until `done` holds for the number of `group`'s members that the coordinator has
/// given partitions to (0 while it has none, or while a rebalance is in progress); fails
/// with `what` after `within`.
async fn wait_for_assigned_members(
    group: &str,
    done: impl Fn(usize) -> bool,
    within: Duration,
    what: &str,
) {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .expect("client");
    let assigned_members = || {
        client
            .fetch_group_list(Some(group), Duration::from_secs(5))
            .map_or(0, |groups| {
                groups
                    .groups()
                    .iter()
                    .filter(|g| g.state() == "Stable")
                    .flat_map(|g| g.members())
                    .filter(|m| m.assignment().is_some_and(|a| !a.is_empty()))
                    .count()
            })
    };
    let deadline = tokio::time::Instant::now() + within;
    while !done(assigned_members()) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A consumer whose assignment has arrived but was never served (the app stopped polling
/// a moment before) hands it back when it leaves the group, and then closes: a close
/// with an assignment pending can wait forever inside librdkafka (its issue 4884).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_leaving_with_an_unserved_assignment_hands_it_back_and_closes() {
    let topic = create_topic(3).await;
    let mut kafka = test_settings(&topic).kafka;
    kafka.consumer_group = format!("test-group-{}", Uuid::new_v4().simple());
    let gauge = prometheus::IntGauge::new("queue_depth", "lag").expect("gauge");
    // Long enough that a member which did not leave would still hold its partitions
    // when the check below gives up.
    let session = Duration::from_secs(30);
    let consumer =
        chat_analytics::queue::KafkaConsumer::new(&kafka, session, gauge).expect("consumer");
    wait_for_assigned_members(
        &kafka.consumer_group,
        |members| members > 0,
        Duration::from_secs(30),
        "the group assigned its partitions",
    )
    .await;

    consumer
        .leave_group(Duration::from_secs(10))
        .await
        .expect("the consumer leaves its group");
    wait_for_assigned_members(
        &kafka.consumer_group,
        |members| members == 0,
        Duration::from_secs(5),
        "the coordinator saw the member go, well before its session timed out",
    )
    .await;
    let closed = tokio::task::spawn_blocking(move || drop(consumer));
    tokio::time::timeout(Duration::from_secs(30), closed)
        .await
        .expect("the consumer closes")
        .expect("the close does not panic");
}

/// A worker stopped while its group is still assigning partitions must still stop: the
/// close of a consumer in the middle of a rebalance can wait forever inside librdkafka
/// (its issue 4884). Two threads, so a stop that blocks one of them fails on the
/// harness's timeout instead of hanging the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stopped_in_the_middle_of_a_rebalance_stop_and_lose_nothing() {
    let fx = Pipeline::start(6).await;
    let ingest = fx.spawn(Role::Ingest).await;
    let steady = fx.spawn(Role::Worker).await;
    let mut accepted = ingest.post_messages(500, "before").await;
    fx.db.wait_for_messages(100, Duration::from_secs(60)).await;

    // Each newcomer joins and is stopped after a different delay. The group assigns once
    // the steady worker rejoins, at its next heartbeat (every 1.5 s here), so the stops
    // land before, during and after the assignment. Each join and each leave makes the
    // steady worker give up and take back partitions too.
    for (round, delay_ms) in [0u64, 50, 150, 300, 600, 1_000, 2_000, 3_500]
        .into_iter()
        .enumerate()
    {
        let newcomer = fx.spawn(Role::Worker).await;
        accepted.extend(ingest.post_messages(100, &format!("round-{round}")).await);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        newcomer.stop().await;
    }
    accepted.extend(ingest.post_messages(200, "after").await);
    fx.db
        .assert_all_stored_once(&accepted, Duration::from_secs(120))
        .await;
    fx.finish([steady, ingest]).await;
}

#[tokio::test]
async fn rows_stored_without_nlp_are_enriched_by_the_worker_once_the_api_heals() {
    let mut fx = Pipeline::start(3).await;
    fx.settings.nlp.breaker_open = Duration::from_secs(1);
    fx.settings.worker.reenrich_interval = Duration::from_secs(1);
    let app = fx.spawn(Role::Serve).await;
    fx.nlp.set_faults(json!({"error_rate": 1.0})).await;
    let accepted = app.post_messages(60, "outage").await;
    assert_eq!(
        fx.db.wait_for_messages(60, Duration::from_secs(60)).await,
        60
    );
    assert_eq!(
        fx.db
            .count("SELECT count(*) FROM messages WHERE nlp_status = 'ok'")
            .await,
        0
    );
    wait_for_metric(
        &app.admin,
        "reenrich_backlog",
        60.0,
        Duration::from_secs(10),
        "the backlog is counted",
    )
    .await;

    // No traffic after the API heals: the worker's own trials close the breaker, then it
    // re-enriches every row.
    fx.nlp.set_faults(json!({"error_rate": 0.0})).await;
    assert_eq!(
        fx.db.wait_for_count(
            "SELECT count(*) FROM messages WHERE nlp_status = 'ok' AND sentiment_label IS NOT NULL",
            accepted.len() as i64,
            Duration::from_secs(60),
        )
        .await,
        accepted.len() as i64,
        "every row enriched afterwards"
    );
    let page = wait_for_metric(
        &app.admin,
        "rows_reenriched_total",
        60.0,
        Duration::from_secs(5),
        "re-enriched rows are counted",
    )
    .await;
    assert_eq!(
        metric_value(&page, "rows_reenriched_total"),
        60.0,
        "each once"
    );
    assert_eq!(metric_value(&page, "circuit_breaker_state"), 0.0);
    let page = scrape(&app.admin).await;
    assert_eq!(metric_value(&page, "reenrich_backlog"), 0.0);
    fx.finish([app]).await;
}

#[tokio::test]
async fn reenrich_fills_in_nlp_data_for_rows_stored_without_it() {
    let fx = Pipeline::start(3).await;
    let app = fx.spawn(Role::Serve).await;
    fx.nlp.set_faults(json!({"error_rate": 1.0})).await;
    let accepted = app.post_messages(30, "later").await;
    fx.db.wait_for_messages(30, Duration::from_secs(60)).await;
    app.stop().await;
    assert_eq!(
        fx.db
            .count("SELECT count(*) FROM messages WHERE nlp_status = 'ok'")
            .await,
        0
    );

    fx.nlp.set_faults(json!({"error_rate": 0.0})).await;
    let metrics = chat_analytics::enrich::EnrichMetrics::unregistered().expect("metrics");
    let enricher = chat_analytics::enrich::Enricher::new(&fx.settings.nlp, metrics);
    let report = chat_analytics::worker::reenrich(&fx.db.pool, &enricher, None)
        .await
        .expect("reenrich runs");
    assert_eq!(report.examined, 30);
    assert_eq!(report.enriched, 30);
    assert_eq!(
        fx.db.count(
            "SELECT count(*) FROM messages WHERE nlp_status = 'ok' AND sentiment_label IS NOT NULL"
        )
        .await,
        accepted.len() as i64
    );
    let again = chat_analytics::worker::reenrich(&fx.db.pool, &enricher, None)
        .await
        .expect("second run");
    assert_eq!(again.examined, 0, "nothing left to enrich");
    fx.db.drop_db().await;
}

/// Threads of the process named `tokio-rt-worker` (tokio's name for runtime threads).
fn runtime_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count()
}

#[tokio::test]
async fn runtime_worker_threads_sets_how_many_runtime_threads_a_process_runs() {
    for threads in [1_usize, 3] {
        let listen = format!("127.0.0.1:{}", free_port());
        let process = ChildProcess::spawn(
            "nlp-sim",
            &["nlp-sim", "--listen", &listen],
            &[(
                "CHAT_ANALYTICS__RUNTIME__WORKER_THREADS".to_owned(),
                threads.to_string(),
            )],
        );
        wait_until_ready(&format!("http://{listen}/health"), Duration::from_secs(20)).await;
        assert_eq!(runtime_threads(process.pid()), threads);
    }
}
