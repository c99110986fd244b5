//! Per-client-IP rate limits, built on `governor` (GCRA). The axum
//! middleware that applies one to a route is `http::ratelimit::enforce`.
//!
//! The limiter reads time from the server's [`Clock`], so tests move a manual
//! clock instead of sleeping. Rejections answer `429 rate_limited` with a
//! `Retry-After` header and are counted in
//! `tessera_ratelimit_rejections_total{limiter=…}`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use tessera_core::Clock;

/// Adapts Tessera's clock to governor's.
#[derive(Clone, Debug)]
pub struct ClockAdapter(pub Arc<dyn Clock>);

impl GovernorClock for ClockAdapter {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let ms = u64::try_from(self.0.now().as_millis()).unwrap_or(0);
        Nanos::from(Duration::from_millis(ms))
    }
}

type Keyed = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, ClockAdapter, NoOpMiddleware<Nanos>>;

/// A named per-IP limit: `burst` requests at once, refilling one every
/// `period` — across the whole cluster. With several nodes, each node
/// enforces its share ([`share`]), so a client spreading its requests over
/// every node gets no more than one node alone would give it.
pub struct IpRateLimiter {
    name: &'static str,
    burst: NonZeroU32,
    period: Duration,
    /// Live nodes the budget is shared among, and this node's limiter.
    /// Rebuilt (with fresh buckets) only when the count changes, which is
    /// rare: a node joining or leaving.
    limiter: RwLock<(usize, Keyed)>,
    clock: ClockAdapter,
}

impl std::fmt::Debug for IpRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpRateLimiter")
            .field("name", &self.name)
            .finish()
    }
}

/// One node's share of a cluster-wide budget of `burst` at once and one
/// every `period`, among `nodes` live nodes: the burst divided (rounded
/// down, at least one) and the period multiplied, so that the nodes
/// together never allow more than the budget, at once or over time.
pub fn share(burst: NonZeroU32, period: Duration, nodes: usize) -> (NonZeroU32, Duration) {
    let n = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    let burst = NonZeroU32::new(burst.get() / n).unwrap_or(NonZeroU32::MIN);
    (burst, period.saturating_mul(n))
}

fn keyed(burst: NonZeroU32, period: Duration, clock: &ClockAdapter) -> Keyed {
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::hashmap_with_clock(quota, clock.clone())
}

impl IpRateLimiter {
    pub fn new(
        name: &'static str,
        burst: NonZeroU32,
        period: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let clock = ClockAdapter(clock);
        IpRateLimiter {
            name,
            burst,
            period,
            limiter: RwLock::new((1, keyed(burst, period, &clock))),
            clock,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (usize, Keyed)> {
        self.limiter.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Shares the budget among `nodes` live nodes (see [`share`]).
    pub fn share_among(&self, nodes: usize) {
        let nodes = nodes.max(1);
        if self.read().0 == nodes {
            return;
        }
        let (burst, period) = share(self.burst, self.period, nodes);
        let mut l = self.limiter.write().unwrap_or_else(|p| p.into_inner());
        *l = (nodes, keyed(burst, period, &self.clock));
    }

    /// The live nodes the budget is shared among.
    pub fn nodes(&self) -> usize {
        self.read().0
    }

    /// `Err(wait)` if `ip` must wait before its next request. IPv6 shares
    /// one bucket per /64 (as lockouts count it): one host commonly holds a
    /// whole /64, and a bucket per address would give it billions.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.read()
            .1
            .check_key(&super::lockout::address_of(ip))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose buckets are full again; bounds memory.
    pub fn prune(&self) {
        let l = self.read();
        l.1.retain_recent();
        l.1.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn one_node_keeps_the_whole_budget() {
        let p = Duration::from_secs(3);
        assert_eq!(share(nz(20), p, 1), (nz(20), p));
        // A count of none (the table could not be read yet) is one node.
        assert_eq!(share(nz(20), p, 0), (nz(20), p));
    }

    #[test]
    fn nodes_together_never_exceed_the_budget() {
        for nodes in 1..=7usize {
            for burst in [1u32, 10, 20, 30, 50] {
                let (b, p) = share(nz(burst), Duration::from_secs(3), nodes);
                let n = u32::try_from(nodes).unwrap();
                // At once: all nodes' bursts, unless a node's share would
                // be below one request (a node must let one through).
                assert!(b.get() * n <= burst.max(n), "{burst} over {nodes}: {b}");
                // Over time: one request per period per node adds up to
                // one per 3 s in all.
                assert_eq!(p, Duration::from_secs(3) * n);
            }
        }
        assert_eq!(share(nz(20), Duration::from_secs(3), 2).0, nz(10));
        assert_eq!(share(nz(20), Duration::from_secs(3), 3).0, nz(6));
    }

    #[test]
    fn a_new_node_count_takes_effect_on_the_next_check() {
        let clock: Arc<dyn Clock> = Arc::new(tessera_core::ManualClock::starting_now());
        let l = IpRateLimiter::new("t", nz(4), Duration::from_secs(60), clock);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        l.share_among(2);
        assert_eq!(l.nodes(), 2);
        assert!(l.check(ip).is_ok());
        assert!(l.check(ip).is_ok());
        assert!(l.check(ip).is_err());
    }
}
