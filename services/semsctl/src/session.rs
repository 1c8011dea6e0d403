//! One connection to semsd, and the position of this client's last write, kept between runs
//! so that a read right after a write — in this run or an earlier one — waits for it.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use sems_proto::v1::{
    alert_service_client::AlertServiceClient, cmc_query_service_client::CmcQueryServiceClient,
    crisis_service_client::CrisisServiceClient, handover_service_client::HandoverServiceClient,
    incident_query_service_client::IncidentQueryServiceClient,
    incident_service_client::IncidentServiceClient,
};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// Adds the caller's token to every call, when there is one.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// The channel every client uses.
pub type Conn = InterceptedService<Channel, Bearer>;

use crate::error::CtlError;

/// A connected client.
pub struct Session {
    /// The server URL, as given.
    pub server: String,
    channel: Channel,
    bearer: Bearer,
    timeout: Duration,
    state: Option<PathBuf>,
    /// Highest position this client wrote (this run or, from the state file, earlier).
    written: u64,
    /// Highest position this run's writes answered (0: none), new or replayed: it is certain
    /// to exist on this server.
    own: u64,
    /// This run made a new write (not one replayed from its request id).
    wrote_new: bool,
}

impl Session {
    /// Connects to `server` (`http://host:port`, or `host:port`).
    pub async fn connect(
        server: &str,
        token: Option<&str>,
        timeout: Duration,
        state_dir: Option<PathBuf>,
    ) -> Result<Self, CtlError> {
        let bearer = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Bearer(None),
            Some(t) => Bearer(Some(format!("Bearer {t}").parse().map_err(|_| {
                CtlError::Usage("--token holds characters a header cannot carry".into())
            })?)),
        };
        let url = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        let endpoint = Channel::from_shared(url.clone())
            .map_err(|e| CtlError::Usage(format!("--server {server:?} is not a URL: {e}")))?
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // Bounds every call, even on a connection that stops answering.
            .timeout(timeout + Duration::from_secs(1));
        let channel = endpoint.connect().await.map_err(|e| CtlError::Connect {
            server: url.clone(),
            detail: source_chain(&e),
        })?;
        let state = state_dir.map(|d| d.join("positions.json"));
        let written = state
            .as_ref()
            .and_then(|p| read_positions(p).get(&url).copied())
            .unwrap_or(0);
        Ok(Self {
            server: url,
            channel,
            bearer,
            timeout,
            state,
            written,
            own: 0,
            wrote_new: false,
        })
    }

    fn conn(&self) -> Conn {
        InterceptedService::new(self.channel.clone(), self.bearer.clone())
    }

    /// The alert service.
    pub fn alerts(&self) -> AlertServiceClient<Conn> {
        AlertServiceClient::new(self.conn())
    }

    /// The incident commands.
    pub fn incidents(&self) -> IncidentServiceClient<Conn> {
        IncidentServiceClient::new(self.conn())
    }

    /// The queries.
    pub fn queries(&self) -> IncidentQueryServiceClient<Conn> {
        IncidentQueryServiceClient::new(self.conn())
    }

    /// The handover commands.
    pub fn handovers(&self) -> HandoverServiceClient<Conn> {
        HandoverServiceClient::new(self.conn())
    }

    /// The CMC log commands.
    pub fn crisis(&self) -> CrisisServiceClient<Conn> {
        CrisisServiceClient::new(self.conn())
    }

    /// The handover, timeline and decision-register queries.
    pub fn cmc(&self) -> CmcQueryServiceClient<Conn> {
        CmcQueryServiceClient::new(self.conn())
    }

    /// The deadline of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A request with this session's deadline.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        r.set_timeout(self.timeout);
        r
    }

    /// Records a write answered at `position` (`replayed`: answered from an earlier call
    /// with the same request id): later reads wait for it. A log's positions only grow, so a
    /// new write answered below the position remembered from an earlier run shows that the
    /// server runs on a new store: the old position is forgotten at once.
    pub fn wrote(&mut self, position: u64, replayed: bool) {
        self.own = self.own.max(position);
        if !replayed {
            self.wrote_new = true;
            if position < self.written {
                eprintln!(
                    "semsctl: warning: {} answered position {position}, below {}, this \
                     client's last write in an earlier run: it runs on a new store; \
                     forgetting the old position.",
                    self.server, self.written
                );
                let old = self.written;
                self.written = position;
                self.replace(old, position);
                return;
            }
        }
        if position <= self.written {
            return;
        }
        self.written = position;
        if let Some(path) = &self.state {
            let mut all = read_positions(path);
            let entry = all.entry(self.server.clone()).or_default();
            *entry = (*entry).max(position);
            // Best effort: a client that cannot keep state still reads its writes of this run.
            let _ = write_positions(path, &all);
        }
    }

    /// Runs a query at `min_position` = this client's last write. When that position comes
    /// from an earlier run, this run made no new write, and the server does not reach it in
    /// time, reads again at this run's own position (at least its replayed writes): when that
    /// read is answered, the server has everything it has acknowledged (the reads ask for the
    /// latest) yet not the remembered position, so its store was replaced — says so and
    /// forgets the old position. When that read times out too, the read model is only
    /// behind, and the position stands.
    pub async fn read<T>(
        &mut self,
        call: impl AsyncFn(u64) -> Result<T, tonic::Status>,
    ) -> Result<T, CtlError> {
        match call(self.written).await {
            // A new write of this run settled the position (`wrote`): a time-out then is a
            // slow read model. Only a position from an earlier run may never be reached.
            Err(s)
                if s.code() == Code::DeadlineExceeded
                    && !self.wrote_new
                    && self.written > self.own =>
            {
                let answer = call(self.own).await?;
                eprintln!(
                    "semsctl: warning: {} has not reached position {}, this client's last write, \
                     though it has applied all it acknowledged: it runs on a new store. \
                     Showing what it has; forgetting the old position.",
                    self.server, self.written
                );
                let old = self.written;
                self.written = self.own;
                self.replace(old, self.own);
                Ok(answer)
            }
            other => Ok(other?),
        }
    }

    /// Replaces the remembered position `old` with `new` (0: none) in the state file — unless
    /// another run has moved it meanwhile, which then stands (with `new` if higher).
    fn replace(&self, old: u64, new: u64) {
        let Some(path) = &self.state else { return };
        let mut all = read_positions(path);
        match all.get(&self.server).copied() {
            Some(now) if now != old => {
                all.insert(self.server.clone(), now.max(new));
            }
            _ if new == 0 => {
                all.remove(&self.server);
            }
            _ => {
                all.insert(self.server.clone(), new);
            }
        }
        let _ = write_positions(path, &all);
    }
}

fn read_positions(path: &PathBuf) -> BTreeMap<String, u64> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_positions(path: &PathBuf, all: &BTreeMap<String, u64>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(all).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

/// What every read of semsctl asks to see: `min_position` (this client's last write), and
/// everything the log had acknowledged when the read arrived, whoever wrote it (another
/// client, a webhook): what a person is shown is never older than what was acknowledged.
pub fn consistency(min_position: u64) -> Option<sems_proto::v1::Consistency> {
    Some(sems_proto::v1::Consistency {
        min_position,
        latest: true,
    })
}

/// The default state directory: `$XDG_STATE_HOME/semsctl`, else `~/.local/state/semsctl`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("semsctl"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/semsctl"))
}

/// An error with its causes ("transport error: connection refused").
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
