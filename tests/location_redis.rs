//! The Redis location store against a real redis-server.

mod common;

use callbridge::call::location::{LocationStore, RedisStore};
use common::redis::RedisServer;

#[tokio::test]
async fn register_lookup_expire_unregister() {
    let redis = RedisServer::start();
    let a = RedisStore::connect(&redis.url).await.expect("connect a");
    let b = RedisStore::connect(&redis.url).await.expect("connect b");
    let now = common::gateway::now() * 1000;
    a.register("alice", "sip:10.0.0.1:5060", now + 60_000)
        .await
        .expect("register a");
    b.register("alice", "sip:10.0.0.2:5060", now + 1_000)
        .await
        .expect("register b");
    let seen = b.lookup("alice", now).await.expect("lookup");
    assert_eq!(
        seen,
        vec!["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"],
        "the most recently refreshed (latest expiry) first"
    );
    // One second later b's entry has expired (time is an input).
    assert_eq!(
        a.lookup("alice", now + 1_000).await.expect("lookup"),
        vec!["sip:10.0.0.1:5060"]
    );
    a.unregister("alice", "sip:10.0.0.1:5060")
        .await
        .expect("unregister");
    assert!(
        a.lookup("alice", now + 1_000)
            .await
            .expect("lookup")
            .is_empty()
    );
    assert!(a.lookup("nobody", now).await.expect("lookup").is_empty());
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_error() {
    let err = match RedisStore::connect("redis://127.0.0.1:1/0").await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("location store (redis)"), "{err}");
}
