//! Prometheus metrics, exposed at `/metrics` in the OpenMetrics text format
//! (which Prometheus scrapes natively). Names follow
//! `tessera_<area>_<what>_<unit>`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaneLabels {
    plane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodecLabels {
    codec: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    side: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimiterLabels {
    limiter: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// All of the server's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    rate_limited: Family<LimiterLabels, Counter>,
    audit_appends: Counter,
    oversized_frames: Family<PlaneLabels, Counter>,
    input_dropped: Family<ReasonLabels, Counter>,
    audit_checkpoint_refusals: Counter,
    screen_frames: Family<CodecLabels, Counter>,
    screen_bytes: Family<CodecLabels, Counter>,
    screen_frames_skipped: Counter,
    screen_keyframes_requested: Counter,
    screen_input_dropped: Family<ReasonLabels, Counter>,
    nats_connected: Gauge,
    nodes_live: Gauge,
    links: Family<SideLabels, Gauge>,
    links_lost: Family<ReasonLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "tessera_http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "tessera_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            latency.clone(),
        );
        let rate_limited = Family::<LimiterLabels, Counter>::default();
        registry.register(
            "tessera_ratelimit_rejections",
            "Requests refused by a rate limiter",
            rate_limited.clone(),
        );
        let audit_appends = Counter::default();
        registry.register(
            "tessera_audit_appends",
            "Rows appended to the audit chain",
            audit_appends.clone(),
        );
        let oversized_frames = Family::<PlaneLabels, Counter>::default();
        registry.register(
            "tessera_ws_oversized_frames",
            "WebSocket messages refused for exceeding the plane's size cap (closed with 1009)",
            oversized_frames.clone(),
        );
        let input_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tessera_relay_input_dropped",
            "Viewer input events dropped at the relay (view_only or rate_limited)",
            input_dropped.clone(),
        );
        let audit_checkpoint_refusals = Counter::default();
        registry.register(
            "tessera_audit_checkpoint_refusals",
            "Times this node refused to sign the audit head because the log no longer \
             holds the head it signed last (a rewrite)",
            audit_checkpoint_refusals.clone(),
        );
        let screen_frames = Family::<CodecLabels, Counter>::default();
        registry.register(
            "tessera_screen_frames",
            "Screen frames relayed from devices, by codec",
            screen_frames.clone(),
        );
        let screen_bytes = Family::<CodecLabels, Counter>::default();
        registry.register(
            "tessera_screen_bytes",
            "Screen frame payload bytes relayed from devices, by codec",
            screen_bytes.clone(),
        );
        let screen_frames_skipped = Counter::default();
        registry.register(
            "tessera_screen_frames_skipped",
            "Screen frames a lagging viewer skipped (latest wins, then a keyframe)",
            screen_frames_skipped.clone(),
        );
        let screen_keyframes_requested = Counter::default();
        registry.register(
            "tessera_screen_keyframes_requested",
            "Keyframe requests the relay sent to devices",
            screen_keyframes_requested.clone(),
        );
        let screen_input_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tessera_screen_input_dropped",
            "Screen viewer input dropped at the relay (view_only or rate_limited)",
            screen_input_dropped.clone(),
        );
        let nats_connected = Gauge::default();
        registry.register(
            "tessera_cluster_nats_connected",
            "1 while this node is connected to NATS (0 when down, or run without NATS)",
            nats_connected.clone(),
        );
        let nodes_live = Gauge::default();
        registry.register(
            "tessera_cluster_nodes_live",
            "Nodes with a live lease on this node's database, itself included",
            nodes_live.clone(),
        );
        let links = Family::<SideLabels, Gauge>::default();
        registry.register(
            "tessera_cluster_links",
            "Open viewer links between nodes, by this node's side (viewer or session)",
            links.clone(),
        );
        let links_lost = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tessera_cluster_links_lost",
            "Viewer links ended because the other node or NATS went away",
            links_lost.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                nats_connected,
                nodes_live,
                links,
                links_lost,
                screen_frames,
                screen_bytes,
                screen_frames_skipped,
                screen_keyframes_requested,
                screen_input_dropped,
                registry,
                requests,
                latency,
                rate_limited,
                audit_appends,
                oversized_frames,
                input_dropped,
                audit_checkpoint_refusals,
            }),
        }
    }
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.inner
            .latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn rate_limited(&self, limiter: &str) {
        self.inner
            .rate_limited
            .get_or_create(&LimiterLabels {
                limiter: limiter.to_owned(),
            })
            .inc();
    }

    /// The counter of committed audit rows, for [`crate::store::Db`].
    pub fn audit_counter(&self) -> Counter {
        self.inner.audit_appends.clone()
    }

    pub fn oversized_frame(&self, plane: &str) {
        self.inner
            .oversized_frames
            .get_or_create(&PlaneLabels {
                plane: plane.to_owned(),
            })
            .inc();
    }

    pub fn audit_checkpoint_refused(&self) {
        self.inner.audit_checkpoint_refusals.inc();
    }

    pub fn input_dropped(&self, reason: &str) {
        self.inner
            .input_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// What one screen message did, for the screen counters.
    pub fn screen(&self, out: &crate::relay::ScreenOutcome) {
        if let Some((codec, bytes, first)) = out.frame {
            let labels = CodecLabels {
                codec: codec.to_owned(),
            };
            if first {
                self.inner.screen_frames.get_or_create(&labels).inc();
            }
            self.inner
                .screen_bytes
                .get_or_create(&labels)
                .inc_by(bytes as u64);
        }
        if out.skipped > 0 {
            self.inner.screen_frames_skipped.inc_by(out.skipped);
        }
        if out.keyframes_asked > 0 {
            self.inner
                .screen_keyframes_requested
                .inc_by(out.keyframes_asked);
        }
        if let Some(why) = out.dropped {
            self.inner
                .screen_input_dropped
                .get_or_create(&ReasonLabels {
                    reason: why.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// This node's view of the cluster, once a heartbeat.
    pub fn cluster(&self, nats_connected: bool, nodes_live: usize) {
        self.inner.nats_connected.set(i64::from(nats_connected));
        self.inner
            .nodes_live
            .set(i64::try_from(nodes_live).unwrap_or(i64::MAX));
    }

    /// Counts an open link on `side` (`viewer` or `session`) until the
    /// returned guard is dropped.
    pub fn link_open(&self, side: &str) -> LinkGauge {
        let gauge = self
            .inner
            .links
            .get_or_create(&SideLabels {
                side: side.to_owned(),
            })
            .clone();
        gauge.inc();
        LinkGauge(gauge)
    }

    /// A link ended because the other side went (`node_lost`,
    /// `relay_unavailable`).
    pub fn link_lost(&self, reason: &str) {
        self.inner
            .links_lost
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

/// One open link, counted until dropped.
pub struct LinkGauge(Gauge);

impl Drop for LinkGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
