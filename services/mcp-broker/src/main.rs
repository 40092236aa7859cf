//! keel-mcp-broker: will own sessions' MCP client connections. Its contract
//! is declared; every RPC answers UNIMPLEMENTED until the MCP issue lands, but
//! it already serves health and reflection like every Keel server.

use clap::Parser;
use keel_proto::v1 as pb;
use keel_proto::v1::mcp_broker_service_server::{McpBrokerService, McpBrokerServiceServer};
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
#[command(name = "keel-mcp-broker", version, about = "Keel's MCP broker")]
struct Args {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    #[command(flatten)]
    tls: keel_server::PeerTlsArgs,
}

struct Broker;

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented yet: MCP servers are not supported in this Keel version"
    ))
}

#[tonic::async_trait]
impl McpBrokerService for Broker {
    async fn list_mcp_tools(
        &self,
        _request: Request<pb::ListMcpToolsRequest>,
    ) -> Result<Response<pb::ListMcpToolsResponse>, Status> {
        Err(not_yet("ListMcpTools"))
    }

    async fn call_mcp_tool(
        &self,
        _request: Request<pb::CallMcpToolRequest>,
    ) -> Result<Response<pb::CallMcpToolResponse>, Status> {
        Err(not_yet("CallMcpTool"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    keel_server::init_tracing(args.serve.log_format);
    keel_server::protect_process();
    let tls = args.tls.server("the mcp-broker")?;
    let routes = tonic::service::Routes::new(keel_server::Deadline::new(
        McpBrokerServiceServer::new(Broker).max_decoding_message_size(4 * 1024 * 1024),
        args.serve
            .request_timeout(std::time::Duration::from_secs(600)),
    ));
    keel_server::serve_with(&args.serve, routes, &["keel.v1.McpBrokerService"], tls).await?;
    Ok(())
}
