//! Per-client-IP rate limits, built on `governor` (GCRA). The axum
//! middleware that applies one to a route is `http::ratelimit::enforce`.
//!
//! The limiter reads time from the server's [`Clock`], so tests move a manual
//! clock instead of sleeping. Rejections answer `429 rate_limited` with a
//! `Retry-After` header and are counted in
//! `tessera_ratelimit_rejections_total{limiter=…}`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
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
/// `period`.
pub struct IpRateLimiter {
    name: &'static str,
    limiter: Keyed,
    clock: ClockAdapter,
}

impl std::fmt::Debug for IpRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpRateLimiter")
            .field("name", &self.name)
            .finish()
    }
}

impl IpRateLimiter {
    pub fn new(
        name: &'static str,
        burst: NonZeroU32,
        period: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = ClockAdapter(clock);
        IpRateLimiter {
            name,
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `Err(wait)` if `ip` must wait before its next request. IPv6 shares
    /// one bucket per /64 (as lockouts count it): one host commonly holds a
    /// whole /64, and a bucket per address would give it billions.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&super::lockout::address_of(ip))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose buckets are full again; bounds memory.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
