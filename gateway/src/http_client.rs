//! The pooled HTTP/1 client for upstreams and for shipping events to a collector.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::time::Duration;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The pooled HTTP/1 client (http or https, webpki roots, TCP_NODELAY) used for upstreams and for shipping
/// events to a collector.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .build(connector(connect_timeout))
}

/// How long an idle upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per host.
pub const MAX_IDLE_PER_HOST: usize = 1024;

/// TCP (TCP_NODELAY, `connect_timeout`) with TLS for https URIs (webpki roots), HTTP/1.
pub fn connector(connect_timeout: Duration) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().wrap_connector(http)
}
