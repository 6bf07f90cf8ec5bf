//! A bare pass-through HTTP/1 proxy with no metering: the floor that tollgate's added latency is judged against.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(about = "Bare HTTP/1 pass-through proxy (benchmark floor)")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:0.
    #[arg(long)]
    listen: SocketAddr,
    /// Upstream base URL (scheme and authority), e.g. http://127.0.0.1:9000.
    #[arg(long)]
    upstream: Uri,
    /// Tokio worker threads; 0 means one per core (tokio's default, as `#[tokio::main]`).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

type ProxyBody = Either<Incoming, Full<Bytes>>;

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    rt.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let scheme = args.upstream.scheme().cloned().context("--upstream needs a scheme")?;
    let authority = args.upstream.authority().cloned().context("--upstream needs a host:port")?;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);

    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);

    loop {
        let (stream, _) = listener.accept().await?;
        // Nagle would add tens of ms to small writes; the floor must not carry that.
        stream.set_nodelay(true)?;
        let client = client.clone();
        let (scheme, authority) = (scheme.clone(), authority.clone());
        let service = service_fn(move |mut req: Request<Incoming>| {
            let client = client.clone();
            let (scheme, authority) = (scheme.clone(), authority.clone());
            async move {
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(scheme);
                parts.authority = Some(authority);
                parts.path_and_query = req.uri().path_and_query().cloned();
                *req.uri_mut() = Uri::from_parts(parts)?;
                let resp: Response<ProxyBody> = match client.request(req).await {
                    Ok(resp) => resp.map(Either::Left),
                    Err(_) => {
                        let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(b"bad gateway"))));
                        *resp.status_mut() = StatusCode::BAD_GATEWAY;
                        resp
                    }
                };
                Ok::<_, anyhow::Error>(resp)
            }
        });
        tokio::spawn(async move {
            // A client hanging up is normal at the end of a bench run: nothing to report.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
