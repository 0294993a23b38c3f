//! Micro-benchmarks of the hot paths: `cargo bench --bench hot_paths`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wspool::{
    bench_support::Fanout,
    handshake::{parse_token, TokenLimits},
};

/// Encode once and queue for N members, then drain as the writers would.
fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for n in [10, 100, 1_000, 10_000] {
        let mut f = Fanout::new(n, 0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| f.broadcast_and_drain(0))
        });
    }
    group.finish();
}

/// A broadcast to a 10-member channel costs the same among 100 or 100,000
/// other channels: the channel index is a map, not a scan.
fn channel_index(c: &mut Criterion) {
    let mut group = c.benchmark_group("channel_index");
    for others in [100, 10_000, 100_000] {
        let mut f = Fanout::new(10, others);
        group.bench_with_input(
            BenchmarkId::new("broadcast_10_among", others),
            &others,
            |b, _| b.iter(|| f.broadcast_and_drain(0)),
        );
    }
    group.finish();
}

/// One sweeper pass over N idle clients: what the clock-driven checks cost
/// per tick as a node grows.
fn sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("sweep_idle");
    for n in [10_000, 100_000] {
        let f = Fanout::new(0, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| f.sweep())
        });
    }
    group.finish();
}

/// The priority lanes: all-equal priorities against mixed ones.
fn priority(c: &mut Criterion) {
    let mut group = c.benchmark_group("priority_queue_64");
    let mut f = Fanout::new(1, 0);
    let equal = [0; 64];
    let mixed: Vec<i32> = (0..64).map(|i| (i * 7) % 5).collect();
    group.bench_function("equal", |b| b.iter(|| f.queue_and_drain_one(&equal)));
    group.bench_function("mixed_5_levels", |b| {
        b.iter(|| f.queue_and_drain_one(&mixed))
    });
    group.finish();
}

fn token(c: &mut Criterion) {
    let limits = TokenLimits::default();
    c.bench_function("parse_token/id_and_3_channels", |b| {
        b.iter(|| parse_token(std::hint::black_box("user-1234_room1_room2_lobby"), &limits))
    });
    let many = format!(
        "user{}",
        (0..64).map(|i| format!("_ch{i}")).collect::<String>()
    );
    c.bench_function("parse_token/id_and_64_channels", |b| {
        b.iter(|| parse_token(std::hint::black_box(&many), &limits))
    });
}

/// With the `metrics` feature, the cost is measured with a real Prometheus
/// recorder installed, as a server would run.
#[cfg(feature = "metrics")]
fn install_recorder() {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let delay = Matcher::Full("wspool_queue_delay_seconds".into());
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(delay, wspool::metrics::QUEUE_DELAY_BUCKETS)
        .expect("buckets");
    // The recorder stays installed; nothing renders it here.
    let _handle = builder.install_recorder().expect("recorder");
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "metrics")]
    install_recorder();
    fanout(c);
    channel_index(c);
    priority(c);
    sweep(c);
    token(c);
}

criterion_group!(all, benches);
criterion_main!(all);
