//! The control plane's prober (`sluice::probe`) against 20 real local upstreams: each endpoint
//! probed at most once per period (the upstreams count the probes), failing ones marked
//! unhealthy after the failure threshold, recovered ones healthy again, killed ones unhealthy.

use std::time::{Duration, Instant};

use sluice::probe::run::{Prober, Target};
use sluice::probe::spec::{Check, Probe};
use sluice::probe::tracker::Health;
use sluice_integration::upstream::{Behavior, Upstream};

const PERIOD: Duration = Duration::from_millis(500);

fn target(upstream: &Upstream) -> Target {
    Target {
        address: "127.0.0.1".into(),
        probe: Probe {
            check: Check::Http {
                port: upstream.port(),
                path: "/healthz".into(),
                host: None,
                headers: vec![],
            },
            initial_delay: Duration::ZERO,
            // As long as the period: a slow shared machine must not fail a healthy endpoint.
            timeout: PERIOD,
            period: PERIOD,
            success_threshold: 1,
            failure_threshold: 2,
        },
    }
}

/// Waits (up to a generous deadline) until `keys` all have `health`.
async fn wait_for(prober: &Prober, keys: &[String], health: Health) -> Duration {
    let started = Instant::now();
    loop {
        if keys.iter().all(|k| prober.health(k) == Some(health)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not all {health:?} in 60 s: {:?}",
            prober.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn twenty_endpoints_probed_once_per_period_with_failures_and_recoveries() {
    let mut upstreams: Vec<Upstream> = (0..20)
        .map(|i| Upstream::start(&format!("ep{i}")))
        .collect();
    let targets: Vec<Target> = upstreams.iter().map(target).collect();
    let keys: Vec<String> = targets.iter().map(Target::key).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let prober = Prober::new();
        prober.set_targets(targets.clone());
        wait_for(&prober, &keys, Health::Healthy).await;

        // Probes per endpoint over a stretch: never more than one per period (plus the one in
        // flight at each end); and the prober and the upstream count the same probes (give or
        // take the one in flight at each end of the stretch).
        for u in &upstreams {
            u.clear_requests();
        }
        let before: Vec<u64> = keys.iter().map(|k| probes(&prober, k)).collect();
        let started = Instant::now();
        tokio::time::sleep(PERIOD * 6).await;
        let elapsed = started.elapsed();
        let bound = (elapsed.as_secs_f64() / PERIOD.as_secs_f64()).ceil() as usize + 1;
        for (i, u) in upstreams.iter().enumerate() {
            let seen = u.request_count();
            assert!(
                seen >= 1 && seen <= bound,
                "{}: {seen} probes in {elapsed:?} (bound {bound})",
                u.name()
            );
            let counted = (probes(&prober, &keys[i]) - before[i]) as usize;
            assert!(
                counted.abs_diff(seen) <= 2,
                "{}: prober {counted}, upstream {seen}",
                u.name()
            );
            assert!(u.requests().iter().all(|r| r.path == "/healthz"));
        }

        // Five answer 503: unhealthy after the failure threshold; the others stay healthy.
        for u in &upstreams[..5] {
            u.set_behavior(Behavior::Status(503));
        }
        let took = wait_for(&prober, &keys[..5], Health::Unhealthy).await;
        eprintln!("5 failing endpoints unhealthy after {took:?} (period {PERIOD:?}, threshold 2)");
        assert!(
            keys[5..]
                .iter()
                .all(|k| prober.health(k) == Some(Health::Healthy))
        );
        let failing = prober
            .status()
            .into_iter()
            .find(|s| s.key == keys[0])
            .expect("status");
        assert_eq!(failing.last_error.as_deref(), Some("HTTP 503"));

        // They recover: healthy again after one success.
        for u in &upstreams[..5] {
            u.set_behavior(Behavior::Ok);
        }
        wait_for(&prober, &keys[..5], Health::Healthy).await;

        // Two are killed (connection refused): unhealthy; removing them from the targets
        // stops their probes.
        let gone: Vec<Upstream> = upstreams.drain(18..).collect();
        drop(gone);
        wait_for(&prober, &keys[18..], Health::Unhealthy).await;
        prober.set_targets(targets[..18].to_vec());
        assert_eq!(prober.status().len(), 18);
        assert!(prober.health(&keys[19]).is_none());
    });
}

fn probes(prober: &Prober, key: &str) -> u64 {
    prober
        .status()
        .into_iter()
        .find(|s| s.key == key)
        .map_or(0, |s| s.probes)
}

#[test]
fn grpc_health_v1_serving_and_not_serving() {
    use tonic_health::ServingStatus;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("shop.Cart", ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let grpc = |service: &str| Target {
            address: "127.0.0.1".into(),
            probe: Probe {
                check: Check::Grpc {
                    port,
                    service: service.into(),
                },
                initial_delay: Duration::ZERO,
                timeout: Duration::from_secs(5),
                period: Duration::from_secs(5),
                success_threshold: 1,
                failure_threshold: 1,
            },
        };
        let cart = grpc("shop.Cart");
        sluice::probe::run::probe_once(&cart.address, &cart.probe)
            .await
            .expect("SERVING");
        reporter
            .set_service_status("shop.Cart", ServingStatus::NotServing)
            .await;
        let down = sluice::probe::run::probe_once(&cart.address, &cart.probe)
            .await
            .expect_err("NOT_SERVING");
        assert!(down.contains("NOT_SERVING"), "{down}");
        let unknown = grpc("shop.Unknown");
        let missing = sluice::probe::run::probe_once(&unknown.address, &unknown.probe)
            .await
            .expect_err("an unknown service");
        assert!(
            missing.contains("NotFound") || missing.contains("not found"),
            "{missing}"
        );
    });
}
