//! The test harness shared by the end-to-end suites: `semsd` with every role in-process on
//! port 0 (gRPC and webhooks) on either store.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use sems_app::EventLog;
use sems_proto::v1::{
    alert_service_client::AlertServiceClient,
    incident_query_service_client::IncidentQueryServiceClient,
    incident_service_client::IncidentServiceClient,
};
use sems_testkit::{Backend, TestStores};
use semsd::Config;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A running semsd and its stores.
pub struct Server {
    pub stores: TestStores,
    pub channel: Channel,
    /// `127.0.0.1:<port>` of the gRPC API.
    pub grpc: String,
    /// `http://127.0.0.1:<port>` of the webhooks.
    pub http: String,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let stores = TestStores::start(backend).await.unwrap();
        Self::start_on(stores, configure).await
    }

    /// semsd on stores that already exist (e.g. after a migration).
    pub async fn start_on(stores: TestStores, configure: impl FnOnce(&mut Config)) -> Self {
        sems_telemetry::init_for_tests();
        let mut config = Config::defaults();
        config.nats.nats_url = stores.nats_url();
        config.database.database_url = stores.database_url();
        config.data_dir = stores.data_dir();
        config.domain.actor = "e2e-operator".into();
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let listeners = semsd::Listeners {
            grpc: Some(listener),
            http: Some(http),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(semsd::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        // The listener accepts connections before semsd serves (it opens the stream and
        // migrates the read model first): wait until health checks answer SERVING.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "semsd did not serve within 60 s (its stores unreachable?)"
            );
            let check = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            match health.check(check).await {
                Ok(r) if r.get_ref().status == serving => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        Self {
            stores,
            channel,
            grpc: addr.to_string(),
            http: format!("http://{http_addr}"),
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub fn alerts(&self) -> AlertServiceClient<Channel> {
        AlertServiceClient::new(self.channel.clone())
    }

    pub fn incidents(&self) -> IncidentServiceClient<Channel> {
        IncidentServiceClient::new(self.channel.clone())
    }

    pub fn queries(&self) -> IncidentQueryServiceClient<Channel> {
        IncidentQueryServiceClient::new(self.channel.clone())
    }

    pub async fn log(&self) -> Arc<dyn EventLog> {
        self.stores.log().await.unwrap().port()
    }

    pub async fn message_count(&self) -> u64 {
        self.stores.log().await.unwrap().state().await.unwrap().0
    }

    pub async fn stop(self) {
        self.into_stores().await;
    }

    /// Stops semsd and hands back its stores, as they are.
    pub async fn into_stores(mut self) -> TestStores {
        drop(self.stop.take());
        self.done.take().unwrap().await.unwrap().unwrap();
        self.stores
    }
}

/// An HTTP answer: status and body.
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

impl HttpAnswer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

impl Server {
    /// POSTs `body` to the webhooks at `path`, with extra headers (HTTP/1.1, one request per
    /// connection, as simple tools do).
    pub async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> HttpAnswer {
        self.http_call("POST", path, body, headers).await
    }

    /// GETs `path` from the webhooks' listener.
    pub async fn get(&self, path: &str) -> HttpAnswer {
        self.http_call("GET", path, "", &[]).await
    }

    async fn http_call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> HttpAnswer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.http.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        HttpAnswer {
            status,
            body: if chunked {
                dechunk(body)
            } else {
                body.to_owned()
            },
        }
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}
