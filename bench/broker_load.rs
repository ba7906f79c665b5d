//! Load client for `bench/brokers.sh`: prepares a broker, publishes N 1 KB
//! messages into Ferry's input and times how long it takes until all of them
//! came out on the other side (same broker), then cleans up.
//!
//! `broker_load setup|run|teardown amqp|nats|redis|postgres|mqtt [N]`
//! `run` prints one line: `BROKER N messages in S s: R msg/s`.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a panic is the report; helpers are shared by `mod common`

use std::time::{Duration, Instant};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS_URL: &str = "nats://127.0.0.1:4222";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn payload(i: usize) -> Vec<u8> {
    let mut v = format!("{{\"n\":{i},\"pad\":\"").into_bytes();
    v.resize(1024 - 2, b'x');
    v.extend_from_slice(b"\"}");
    v
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(action), Some(broker)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: broker_load setup|run|teardown amqp|nats|redis|postgres|mqtt [N]");
        std::process::exit(2);
    };
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    match (action.as_str(), broker.as_str()) {
        ("setup", "amqp") => amqp_setup().await,
        ("run", "amqp") => report("amqp", n, amqp_run(n)).await,
        ("teardown", "amqp") => amqp_teardown().await,
        ("setup", "nats") => nats_setup().await,
        ("run", "nats") => report("nats", n, nats_run(n)).await,
        ("teardown", "nats") => nats_teardown().await,
        ("setup", "redis") => redis_teardown().await,
        ("run", "redis") => report("redis", n, redis_run(n)).await,
        ("teardown", "redis") => redis_teardown().await,
        ("setup", "postgres") => pg_setup().await,
        ("run", "postgres") => report("postgres", n, pg_run(n)).await,
        ("teardown", "postgres") => pg_teardown().await,
        ("setup" | "teardown", "mqtt") => Ok(()),
        ("run", "mqtt") => report("mqtt", n, mqtt_run(n)).await,
        _ => {
            eprintln!("unknown action or broker");
            std::process::exit(2);
        }
    }
}

async fn report(
    name: &str,
    n: usize,
    run: impl std::future::Future<Output = Res<Duration>>,
) -> Res<()> {
    let took = run.await?;
    println!(
        "{name} {n} messages in {:.2} s: {:.0} msg/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Poll `count` until it reaches `n`; fails after a minute without progress.
async fn wait_for<F, Fut>(n: usize, mut count: F) -> Res<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Res<usize>>,
{
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let c = count().await?;
        if c >= n {
            return Ok(());
        }
        if c != last {
            (last, since) = (c, Instant::now());
        } else if since.elapsed() > Duration::from_secs(60) {
            return Err(format!("stuck at {c} of {n}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- amqp

async fn amqp_channel() -> Res<(lapin::Connection, lapin::Channel)> {
    let c = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await?;
    let ch = c.create_channel().await?;
    Ok((c, ch))
}

async fn amqp_setup() -> Res<()> {
    amqp_teardown().await?;
    let (_c, ch) = amqp_channel().await?;
    for q in ["ferry_bench_in", "ferry_bench_out"] {
        ch.queue_declare(
            q.into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    }
    Ok(())
}

async fn amqp_teardown() -> Res<()> {
    let (_c, ch) = amqp_channel().await?;
    for q in ["ferry_bench_in", "ferry_bench_out"] {
        let _ = ch.queue_delete(q.into(), Default::default()).await;
    }
    Ok(())
}

async fn amqp_run(n: usize) -> Res<Duration> {
    let (_c, ch) = amqp_channel().await?;
    ch.confirm_select(Default::default()).await?;
    let start = Instant::now();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            "ferry_bench_in".into(),
            Default::default(),
            &payload(i),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
    }
    ch.wait_for_confirms().await?;
    wait_for(n, || {
        let ch = ch.clone();
        async move {
            let q = ch
                .queue_declare(
                    "ferry_bench_out".into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await?;
            Ok(q.message_count() as usize)
        }
    })
    .await?;
    Ok(start.elapsed())
}

// ---------------------------------------------------------------- nats

async fn nats_setup() -> Res<()> {
    nats_teardown().await?;
    let js = async_nats::jetstream::new(async_nats::connect(NATS_URL).await?);
    for name in ["BENCH_IN", "BENCH_OUT"] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

async fn nats_teardown() -> Res<()> {
    let js = async_nats::jetstream::new(async_nats::connect(NATS_URL).await?);
    for name in ["BENCH_IN", "BENCH_OUT"] {
        let _ = js.delete_stream(name).await;
    }
    Ok(())
}

async fn nats_run(n: usize) -> Res<Duration> {
    let js = async_nats::jetstream::new(async_nats::connect(NATS_URL).await?);
    let start = Instant::now();
    let mut acks = Vec::with_capacity(1000);
    for i in 0..n {
        acks.push(js.publish("BENCH_IN.x", payload(i).into()).await?);
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    wait_for(n, || {
        let js = js.clone();
        async move {
            let mut s = js.get_stream("BENCH_OUT").await?;
            Ok(s.info().await?.state.messages as usize)
        }
    })
    .await?;
    Ok(start.elapsed())
}

// ---------------------------------------------------------------- redis

async fn redis_con() -> Res<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?)
}

async fn redis_teardown() -> Res<()> {
    let mut c = redis_con().await?;
    let _: () = redis::cmd("DEL")
        .arg("ferry:bench:in")
        .arg("ferry:bench:out")
        .query_async(&mut c)
        .await?;
    Ok(())
}

async fn redis_run(n: usize) -> Res<Duration> {
    let mut c = redis_con().await?;
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg("ferry:bench:in")
                .arg("*")
                .arg("body")
                .arg(payload(*i))
                .ignore();
        }
        pipe.query_async::<()>(&mut c).await?;
    }
    wait_for(n, || {
        let mut c = c.clone();
        async move {
            Ok(redis::cmd("XLEN")
                .arg("ferry:bench:out")
                .query_async::<usize>(&mut c)
                .await?)
        }
    })
    .await?;
    Ok(start.elapsed())
}

// ---------------------------------------------------------------- postgres

async fn pg() -> Res<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(POSTGRES_URL, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

async fn pg_setup() -> Res<()> {
    pg_teardown().await?;
    pg().await?
        .batch_execute(
            "CREATE TABLE ferry_bench_in (id bigserial PRIMARY KEY, payload jsonb NOT NULL, sent_at timestamptz);
             CREATE INDEX ferry_bench_unsent ON ferry_bench_in (id) WHERE sent_at IS NULL;
             CREATE TABLE ferry_bench_out (id bigint PRIMARY KEY, payload jsonb);",
        )
        .await?;
    Ok(())
}

async fn pg_teardown() -> Res<()> {
    pg().await?
        .batch_execute("DROP TABLE IF EXISTS ferry_bench_in; DROP TABLE IF EXISTS ferry_bench_out;")
        .await?;
    Ok(())
}

async fn pg_run(n: usize) -> Res<Duration> {
    let c = pg().await?;
    let start = Instant::now();
    let body = String::from_utf8(payload(0))?;
    let mut i = 0;
    while i < n {
        let batch = (n - i).min(1000) as i64;
        c.execute(
            "INSERT INTO ferry_bench_in (payload) SELECT $1::text::jsonb FROM generate_series(1, $2::bigint)",
            &[&body, &batch],
        )
        .await?;
        c.batch_execute("NOTIFY ferry_bench").await?;
        i += batch as usize;
    }
    wait_for(n, || {
        let q = c.query_one("SELECT count(*) FROM ferry_bench_out", &[]);
        async move { Ok(q.await?.get::<_, i64>(0) as usize) }
    })
    .await?;
    Ok(start.elapsed())
}

// ---------------------------------------------------------------- mqtt

async fn mqtt_run(n: usize) -> Res<Duration> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new("ferry-bench-sub", "127.0.0.1", 1883);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (sub, mut sub_loop) = AsyncClient::new(o, 1024);
    sub.subscribe("ferry/bench/out", QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await? {
            break;
        }
    }
    let mut o = MqttOptions::new("ferry-bench-pub", "127.0.0.1", 1883);
    o.set_inflight(200);
    let (publisher, mut pub_loop) = AsyncClient::new(o, 4096);
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            publisher
                .publish("ferry/bench/in", QoS::AtLeastOnce, false, payload(i))
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(publisher)
    });
    let pub_poller = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let mut got = 0;
    let mut last = Instant::now();
    while got < n {
        match tokio::time::timeout(Duration::from_secs(60), sub_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                got += 1;
                last = Instant::now();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(format!("stuck at {got} of {n}").into()),
        }
    }
    let took = last - start;
    let _ = producer.await;
    pub_poller.abort();
    Ok(took)
}
