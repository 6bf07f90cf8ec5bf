//! `tollgate-mock` binary: runs the mock OpenAI upstream until killed, for benchmarks (optionally playing a
//! vLLM or SGLang server's `/metrics`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tollgate_mock::MockUpstream;

/// Mock upstream LLM server speaking OpenAI's wire format.
#[derive(Parser, Debug)]
#[command(name = "tollgate-mock", version)]
struct Args {
    /// Address to bind; port 0 picks a free port. The bound address is printed as `listening on ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Directory served by the `fixture=NAME` directive (default: the workspace's tests/fixtures).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Play a vLLM or SGLang server: its `GET /metrics` page, e.g. `engine=vllm,waiting=5,kv=0.3`.
    /// Change it at run time with `POST /mock/engine` and the same text as the body.
    #[arg(long)]
    engine: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(async {
        let dir = args.fixtures.unwrap_or_else(tollgate_mock::default_fixture_dir);
        let mock = MockUpstream::start_on_with_fixtures(args.listen, dir).await?;
        if let Some(spec) = &args.engine {
            mock.set_engine(spec)?;
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", mock.addr())?;
        stdout.flush()?;
        drop(stdout);
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
