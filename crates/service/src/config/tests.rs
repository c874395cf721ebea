//! Loading: layering, environment overrides, and one clear refusal per bad value.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The defaults with one key overridden through its environment variable.
fn with(key: &str, value: &str) -> Result<Settings, ConfigError> {
    Settings::load_from(None, env(&[(key, value)]))
}

/// The key a refusal names.
fn refused_key(key: &str, value: &str) -> &'static str {
    match with(key, value) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("{key}={value}: expected a refusal naming the key, got {other:?}"),
    }
}

#[test]
fn defaults_match_the_spec() {
    let s = Settings::load_from(None, env(&[])).expect("defaults load");
    assert_eq!(s.api.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(s.admin.listen, SocketAddr::from(([127, 0, 0, 1], 8081)));
    assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(s.kafka.topic, "chat.messages");
    assert_eq!(s.kafka.consumer_group, "chat-analytics-worker");
    assert_eq!(
        s.postgres.url.expose(),
        "postgres://chat:chat@127.0.0.1:5432/chat_analytics"
    );
    assert_eq!(s.nlp.url, "http://127.0.0.1:8090/v1/analyze");
    assert_eq!(s.dlq.dir, PathBuf::from("var/dlq"));
    assert_eq!(s.api.max_body_bytes.get(), 64 * 1024);
    assert_eq!(s.kafka.max_in_flight.get(), 10_000);
}

#[test]
fn nlp_defaults_are_the_spec_client_policy() {
    let nlp = Settings::load_from(None, env(&[]))
        .expect("defaults load")
        .nlp;
    assert_eq!(nlp.attempt_timeout, Duration::from_millis(300));
    assert_eq!(nlp.max_attempts.get(), 3);
    assert_eq!(
        (nlp.backoff_base, nlp.backoff_max),
        (Duration::from_millis(100), Duration::from_millis(400))
    );
    assert_eq!(nlp.breaker_failure_ratio, 0.5);
    assert_eq!(nlp.breaker_window, Duration::from_secs(10));
    assert_eq!(nlp.breaker_open, Duration::from_secs(30));
    assert_eq!(nlp.breaker_half_open_ratio, 0.1);
    assert_eq!(nlp.retry_budget_ratio, 0.2);
}

#[test]
fn nlp_http2_is_auto_by_default_and_takes_a_flag_or_auto() {
    assert_eq!(
        Settings::load_from(None, env(&[]))
            .expect("defaults load")
            .nlp
            .http2,
        Http2Mode::Auto
    );
    for (value, mode) in [
        ("true", Http2Mode::On),
        ("false", Http2Mode::Off),
        ("auto", Http2Mode::Auto),
    ] {
        let nlp = with("CHAT_ANALYTICS__NLP__HTTP2", value)
            .expect("a valid value loads")
            .nlp;
        assert_eq!(nlp.http2, mode, "{value}");
    }
    assert_eq!(
        refused_key("CHAT_ANALYTICS__NLP__HTTP2", "maybe"),
        "nlp.http2"
    );
}

#[test]
fn durations_keep_their_keys_units() {
    let s = Settings::load_from(None, env(&[])).expect("defaults load");
    assert_eq!(s.kafka.publish_timeout, Duration::from_millis(2_000));
    assert_eq!(s.kafka.linger, Duration::from_millis(10));
    assert_eq!(s.dlq.replay_interval, Duration::from_secs(10));
    assert_eq!(
        s.worker.partition_maintenance_interval,
        Duration::from_secs(3_600)
    );
    assert_eq!(s.storage.max_outage, Duration::from_secs(600));
    assert_eq!(s.shutdown.grace, Duration::from_millis(15_000));
    assert_eq!(s.api.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(s.kafka.compression, Compression::Lz4);
    assert_eq!(s.log.format, LogFormat::Text);
    assert_eq!(s.api.per_bot_limit, None);
}

#[test]
fn environment_overrides_any_key() {
    let s = Settings::load_from(
        None,
        env(&[
            ("CHAT_ANALYTICS__KAFKA__PUBLISH_TIMEOUT_MS", "750"),
            ("CHAT_ANALYTICS__API__LISTEN", "127.0.0.1:9999"),
            ("CHAT_ANALYTICS__KAFKA__TOPIC", "other.topic"),
            ("CHAT_ANALYTICS__KAFKA__COMPRESSION", "zstd"),
            ("CHAT_ANALYTICS__LOG__FORMAT", "json"),
            ("CHAT_ANALYTICS__API__PER_BOT_RATE_PER_SEC", "50"),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("overrides load");
    assert_eq!(s.kafka.publish_timeout, Duration::from_millis(750));
    assert_eq!(s.api.listen, SocketAddr::from(([127, 0, 0, 1], 9999)));
    assert_eq!(s.kafka.topic, "other.topic");
    assert_eq!(s.kafka.compression, Compression::Zstd);
    assert_eq!(s.log.format, LogFormat::Json);
    let limit = s.api.per_bot_limit.expect("a rate turns the limit on");
    assert_eq!((limit.rate.get(), limit.burst.get()), (50, 100));
}

#[test]
fn a_bad_number_names_the_key_and_value() {
    let err = with("CHAT_ANALYTICS__KAFKA__PUBLISH_TIMEOUT_MS", "soon").expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("publish_timeout_ms"), "{msg}");
    assert!(msg.contains("soon"), "{msg}");
}

#[test]
fn a_bad_address_names_the_key_and_value() {
    let msg = with("CHAT_ANALYTICS__API__LISTEN", "localhost")
        .expect_err("must fail")
        .to_string();
    assert!(
        msg.contains("api.listen") && msg.contains("localhost"),
        "{msg}"
    );
}

#[test]
fn the_error_message_names_key_value_and_rule() {
    let msg = with("CHAT_ANALYTICS__NLP__MAX_ATTEMPTS", "0")
        .expect_err("must fail")
        .to_string();
    assert_eq!(
        msg,
        "invalid configuration: `nlp.max_attempts` = \"0\": must be between 1 and 10"
    );
}

#[test]
fn each_bad_value_is_named() {
    let cases = [
        ("API__MAX_BODY_BYTES", "0", "api.max_body_bytes"),
        ("API__MAX_BATCH_MESSAGES", "0", "api.max_batch_messages"),
        ("API__MAX_BATCH_MESSAGES", "10001", "api.max_batch_messages"),
        ("ADMIN__LISTEN", "8081", "admin.listen"),
        ("KAFKA__BROKERS", " ", "kafka.brokers"),
        ("KAFKA__TOPIC", "a/b", "kafka.topic"),
        ("KAFKA__PUBLISH_TIMEOUT_MS", "0", "kafka.publish_timeout_ms"),
        ("KAFKA__LINGER_MS", "2000", "kafka.linger_ms"),
        ("KAFKA__MAX_IN_FLIGHT", "9", "kafka.max_in_flight"),
        ("KAFKA__COMPRESSION", "brotli", "kafka.compression"),
        ("KAFKA__CONSUMER_GROUP", "", "kafka.consumer_group"),
        ("KAFKA__FETCH_MIN_BYTES", "0", "kafka.fetch_min_bytes"),
        (
            "KAFKA__FETCH_MAX_WAIT_MS",
            "5001",
            "kafka.fetch_max_wait_ms",
        ),
        (
            "POSTGRES__URL",
            "postgres://a:b@h:notaport/db",
            "postgres.url",
        ),
        ("POSTGRES__POOL_SIZE", "0", "postgres.pool_size"),
        (
            "POSTGRES__CONNECT_TIMEOUT_MS",
            "0",
            "postgres.connect_timeout_ms",
        ),
        ("NLP__URL", "not a url", "nlp.url"),
        ("NLP__URL", "https://nlp.local/v1/analyze", "nlp.url"),
        ("NLP__LANG_HINT", "", "nlp.lang_hint"),
        ("NLP__ATTEMPT_TIMEOUT_MS", "0", "nlp.attempt_timeout_ms"),
        ("NLP__MAX_ATTEMPTS", "11", "nlp.max_attempts"),
        ("NLP__BACKOFF_BASE_MS", "0", "nlp.backoff_base_ms"),
        ("NLP__BACKOFF_MAX_MS", "50", "nlp.backoff_max_ms"),
        (
            "NLP__BACKOFF_JITTER_RATIO",
            "-0.1",
            "nlp.backoff_jitter_ratio",
        ),
        (
            "NLP__BREAKER_FAILURE_RATIO",
            "0",
            "nlp.breaker_failure_ratio",
        ),
        (
            "NLP__BREAKER_FAILURE_RATIO",
            "NaN",
            "nlp.breaker_failure_ratio",
        ),
        ("NLP__BREAKER_MIN_CALLS", "0", "nlp.breaker_min_calls"),
        ("NLP__BREAKER_WINDOW_MS", "10", "nlp.breaker_window_ms"),
        ("NLP__BREAKER_OPEN_MS", "0", "nlp.breaker_open_ms"),
        (
            "NLP__BREAKER_HALF_OPEN_RATIO",
            "1.5",
            "nlp.breaker_half_open_ratio",
        ),
        (
            "NLP__BREAKER_HALF_OPEN_SUCCESSES",
            "0",
            "nlp.breaker_half_open_successes",
        ),
        ("NLP__RETRY_BUDGET_RATIO", "2", "nlp.retry_budget_ratio"),
        (
            "NLP__RETRY_BUDGET_WINDOW_MS",
            "99",
            "nlp.retry_budget_window_ms",
        ),
        ("NLP__MAX_CONNECTIONS", "0", "nlp.max_connections"),
        ("DLQ__DIR", "", "dlq.dir"),
        ("DLQ__REPLAY_INTERVAL_SECS", "0", "dlq.replay_interval_secs"),
        ("DLQ__REPLAY_RATE_PER_SEC", "0", "dlq.replay_rate_per_sec"),
        ("WORKER__CONCURRENCY", "0", "worker.concurrency"),
        ("WORKER__CONCURRENCY", "100001", "worker.concurrency"),
        (
            "WORKER__COMMIT_INTERVAL_MS",
            "0",
            "worker.commit_interval_ms",
        ),
        (
            "WORKER__SESSION_TIMEOUT_MS",
            "999",
            "worker.session_timeout_ms",
        ),
        (
            "WORKER__PARTITION_MAINTENANCE_INTERVAL_S",
            "0",
            "worker.partition_maintenance_interval_s",
        ),
        (
            "WORKER__REENRICH_INTERVAL_SECS",
            "0",
            "worker.reenrich_interval_secs",
        ),
        (
            "WORKER__REENRICH_MAX_IN_FLIGHT",
            "0",
            "worker.reenrich_max_in_flight",
        ),
        ("STORAGE__BATCH_MAX_ROWS", "0", "storage.batch_max_rows"),
        (
            "STORAGE__CONCURRENT_BATCHES",
            "0",
            "storage.concurrent_batches",
        ),
        (
            "STORAGE__CONCURRENT_BATCHES",
            "17",
            "storage.concurrent_batches",
        ),
        ("STORAGE__WRITE_ATTEMPTS", "0", "storage.write_attempts"),
        (
            "STORAGE__OUTAGE_RETRY_MAX_MS",
            "49",
            "storage.outage_retry_max_ms",
        ),
        (
            "PARTITIONS__RETENTION_DAYS",
            "36501",
            "partitions.retention_days",
        ),
        ("PARTITIONS__AHEAD_DAYS", "367", "partitions.ahead_days"),
        ("PARTITIONS__ARCHIVE_DIR", "", "partitions.archive_dir"),
        ("SHUTDOWN__GRACE_MS", "0", "shutdown.grace_ms"),
        ("LOG__LEVEL", "chat_analytics=loud", "log.level"),
        ("LOG__FORMAT", "xml", "log.format"),
    ];
    for (suffix, value, key) in cases {
        assert_eq!(
            refused_key(&format!("CHAT_ANALYTICS__{suffix}"), value),
            key,
            "{suffix}={value}"
        );
    }
}

#[test]
fn a_per_bot_rate_needs_a_burst_and_no_rate_needs_none() {
    let err = Settings::load_from(
        None,
        env(&[
            ("CHAT_ANALYTICS__API__PER_BOT_RATE_PER_SEC", "10"),
            ("CHAT_ANALYTICS__API__PER_BOT_BURST", "0"),
        ]),
    )
    .expect_err("a limit without a burst admits nothing");
    assert!(matches!(
        err,
        ConfigError::Invalid {
            key: "api.per_bot_burst",
            ..
        }
    ));
    let off = with("CHAT_ANALYTICS__API__PER_BOT_BURST", "0").expect("no limit, burst unused");
    assert_eq!(off.api.per_bot_limit, None);
}

#[test]
fn one_attempt_needs_no_backoff() {
    let s = Settings::load_from(
        None,
        env(&[
            ("CHAT_ANALYTICS__NLP__MAX_ATTEMPTS", "1"),
            ("CHAT_ANALYTICS__NLP__BACKOFF_BASE_MS", "0"),
        ]),
    )
    .expect("no retries, no backoff needed");
    assert_eq!(s.nlp.backoff_base, Duration::ZERO);
}

#[test]
fn a_retention_that_would_drop_live_partitions_is_refused() {
    let err = with("CHAT_ANALYTICS__PARTITIONS__RETENTION_DAYS", "0").expect_err("must fail");
    assert!(
        err.to_string().contains("partitions.retention_days"),
        "{err}"
    );
}

#[test]
fn connection_timeouts_are_bounded() {
    for (key, value) in [
        ("CHAT_ANALYTICS__API__HEADER_READ_TIMEOUT_SECS", "0"),
        ("CHAT_ANALYTICS__API__HEADER_READ_TIMEOUT_SECS", "86400"),
        (
            "CHAT_ANALYTICS__API__IDLE_TIMEOUT_SECS",
            "18446744073709551615",
        ),
    ] {
        let err = with(key, value).expect_err("must fail");
        let name = key
            .trim_start_matches("CHAT_ANALYTICS__API__")
            .to_lowercase();
        assert!(err.to_string().contains(&format!("api.{name}")), "{err}");
    }
    let never =
        with("CHAT_ANALYTICS__API__IDLE_TIMEOUT_SECS", "0").expect("0 keeps idle connections");
    assert_eq!(never.api.idle_timeout, None);
}

#[test]
fn runtime_threads_default_to_tokio_and_are_bounded() {
    let defaults = Settings::load_from(None, env(&[])).expect("defaults load");
    assert_eq!(defaults.runtime.worker_threads, None);
    let one = with("CHAT_ANALYTICS__RUNTIME__WORKER_THREADS", "1").expect("1 thread is valid");
    assert_eq!(one.runtime.worker_threads, NonZeroUsize::new(1));
    let err = with("CHAT_ANALYTICS__RUNTIME__WORKER_THREADS", "100000").expect_err("must fail");
    assert!(err.to_string().contains("runtime.worker_threads"), "{err}");
}

#[test]
fn public_bind_without_keys_needs_explicit_opt_in() {
    let err = with("CHAT_ANALYTICS__API__LISTEN", "0.0.0.0:8080").expect_err("must refuse");
    assert!(err.to_string().contains("allow_anonymous"), "{err}");

    let ok = Settings::load_from(
        None,
        env(&[
            ("CHAT_ANALYTICS__API__LISTEN", "0.0.0.0:8080"),
            ("CHAT_ANALYTICS__AUTH__ALLOW_ANONYMOUS", "true"),
        ]),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn config_file_layers_over_defaults_and_rejects_unknown_keys() {
    let dir = std::env::temp_dir().join(format!("ca-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[kafka]\ntopic = \"t1\"\n[[auth.keys]]\nname = \"k\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\nbot_ids = [\"support-*\"]\n[[auth.keys]]\nname = \"all\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
    )
    .expect("write");
    let s = Settings::load_from(Some(&good), env(&[])).expect("file loads");
    assert_eq!(s.kafka.topic, "t1");
    assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(s.auth.keys.len(), 2);
    assert_eq!(s.auth.keys[0].sha256.as_bytes()[..2], [0x9f, 0x86]);
    assert!(!format!("{:?}", s.auth.keys[0]).contains("9f86"));
    assert_eq!(s.auth.keys[1].bot_ids, ["*"], "no bot_ids: every bot");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[kafka]\ntopik = \"t1\"\n").expect("write");
    let err = Settings::load_from(Some(&bad), env(&[])).expect_err("unknown key");
    assert!(err.to_string().contains("topik"), "{err}");

    let short_hash = dir.join("short-hash.toml");
    std::fs::write(
        &short_hash,
        "[[auth.keys]]\nname = \"k\"\nsha256 = \"9f86\"\n",
    )
    .expect("write");
    let err = Settings::load_from(Some(&short_hash), env(&[])).expect_err("short hash");
    let msg = err.to_string();
    assert!(
        msg.contains("auth.keys.sha256") && msg.contains("<key \\\"k\\\">"),
        "{msg}"
    );

    let missing = dir.join("missing.toml");
    assert!(matches!(
        Settings::load_from(Some(&missing), env(&[])),
        Err(ConfigError::Unreadable { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn debug_output_hides_the_database_password() {
    let s = Settings::load_from(None, env(&[])).expect("defaults load");
    assert!(!format!("{s:?}").contains("chat:chat"));
}

#[test]
fn the_default_analyst_password_is_refused_off_loopback_only() {
    let url = "CHAT_ANALYTICS__POSTGRES__URL";
    let password = "CHAT_ANALYTICS__POSTGRES__ANALYST_PASSWORD";
    for local in [
        "postgres://chat:chat@127.0.0.1:5432/chat_analytics",
        "postgres://chat:chat@localhost/chat_analytics",
        "postgres://chat:chat@[::1]:5432/chat_analytics",
    ] {
        let s = with(url, local).expect("loads");
        assert_eq!(
            s.postgres.analyst_password().expect(local).expose(),
            "analyst"
        );
    }
    for remote in [
        "postgres://chat:chat@db.internal:5432/chat_analytics",
        "postgres://chat:chat@10.0.0.5/chat_analytics",
        "host=127.0.0.1,10.0.0.5 user=chat dbname=chat_analytics",
    ] {
        let s = with(url, remote).expect("loads");
        match s.postgres.analyst_password() {
            Err(ConfigError::Invalid { key, value, .. }) => {
                assert_eq!(key, "postgres.analyst_password", "{remote}");
                assert_eq!(value, "<redacted>", "the password is never shown");
            }
            other => panic!("{remote}: expected a refusal, got {other:?}"),
        }
    }
    let s = Settings::load_from(
        None,
        env(&[
            (url, "postgres://chat:chat@10.0.0.5/chat_analytics"),
            (password, "a-long-random-one"),
        ]),
    )
    .expect("loads");
    assert_eq!(
        s.postgres
            .analyst_password()
            .expect("a set password")
            .expose(),
        "a-long-random-one"
    );
}
