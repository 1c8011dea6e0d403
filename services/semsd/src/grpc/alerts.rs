//! `sems.v1.AlertService`.

use futures::StreamExt;
use sems_app::{AppError, IngestOutcome, TraceContext};
use sems_domain::alert::AlertCommand;
use sems_proto::v1::{
    self as pb, CommitInfo, DismissAlertRequest, IngestAlertRequest, IngestAlertResponse,
    IngestAlertsResponse, MergeAlertRequest, alert_service_server::AlertService,
};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{
    Api, command_meta, convert, current_trace_context, principal, rpc_span, status,
    traced_command_meta,
};

/// Alerts of one bulk call in flight at once. 512 rather than 256: with more appends in
/// flight nats-server and the projector work in bigger batches, and the box spent about 9%
/// less CPU per streamed alert (`docs/BENCHMARKS.md`, session of 2026-11-29 from 01:40 UTC);
/// 1,024 gave no more.
const BULK_CONCURRENCY: usize = 512;

/// Most alerts one bulk call carries. Its answer holds one result per alert; uncapped, a call
/// of ~45,000 alerts answers more than gRPC's default 4 MiB message limit, and the client
/// fails to read the answer after every alert has been ingested.
pub const BULK_MAX_ALERTS: usize = 10_000;

/// Most bytes of alerts (as encoded on the wire) one bulk call carries: a call is read whole
/// before any of it is ingested, and this caps how much of it is read.
pub const BULK_MAX_BYTES: usize = 16 * 1024 * 1024;

impl Api {
    async fn ingest_one(
        &self,
        req: IngestAlertRequest,
        prefix: &str,
        actor: Option<String>,
        trace_context: Option<TraceContext>,
    ) -> Result<IngestOutcome, AppError> {
        let report = convert::alert_report(req.alert, prefix, self.sems.handler().now())?;
        let meta = traced_command_meta(actor, convert::request_id(&req.request_id)?, trace_context);
        self.sems.ingest_alert(report, meta).await
    }
}

fn answer(o: &IngestOutcome) -> IngestAlertResponse {
    IngestAlertResponse {
        alert_id: sems_app::uuid_text(o.alert_id),
        repeat: o.repeat,
        incident_id: o.incident_id.map(sems_app::uuid_text).unwrap_or_default(),
        position: o.position,
        version: o.version,
        replayed: o.replayed,
    }
}

#[tonic::async_trait]
impl AlertService for Api {
    async fn ingest_alert(
        &self,
        request: Request<IngestAlertRequest>,
    ) -> Result<Response<IngestAlertResponse>, Status> {
        let span = rpc_span("AlertService", "IngestAlert", request.metadata());
        let actor = principal(&request);
        async move {
            let outcome = self
                .ingest_one(
                    request.into_inner(),
                    "alert.",
                    actor,
                    current_trace_context(),
                )
                .await
                .map_err(status)?;
            Ok(Response::new(answer(&outcome)))
        }
        .instrument(span)
        .await
    }

    async fn ingest_alerts(
        &self,
        request: Request<Streaming<IngestAlertRequest>>,
    ) -> Result<Response<IngestAlertsResponse>, Status> {
        let span = rpc_span("AlertService", "IngestAlerts", request.metadata());
        let actor = principal(&request);
        async move {
            // The call is read whole before any of it is ingested, so a call over the limits
            // is refused whole and appends nothing. A broken request stream fails the call
            // with the client's own status, also before anything is appended.
            let mut incoming = request.into_inner();
            let (mut items, mut bytes) = (Vec::new(), 0);
            while let Some(item) = incoming.message().await? {
                bytes += prost::Message::encoded_len(&item);
                if items.len() == BULK_MAX_ALERTS || bytes > BULK_MAX_BYTES {
                    return Err(status(AppError::Invalid {
                        field: "alerts".into(),
                        message: format!(
                            "a bulk call carries at most {BULK_MAX_ALERTS} alerts and {} MiB; \
                             nothing of this call was ingested: send them in several calls",
                            BULK_MAX_BYTES / (1024 * 1024)
                        ),
                    }));
                }
                items.push(item);
            }
            // Every alert of the call is recorded under the call's span: its trace context is
            // taken once, not once per alert.
            let trace_context = current_trace_context();
            let results: Vec<(usize, Result<IngestOutcome, AppError>)> =
                futures::stream::iter(items.into_iter().enumerate())
                    .map(|(i, item)| {
                        let (actor, trace_context) = (actor.clone(), trace_context.clone());
                        // Boxed: the ingestion future is about 4 KiB, and `buffered` moves each
                        // future several times on its way in; a profile of streaming ingestion
                        // put ~4% of `semsd`'s CPU in those copies.
                        let outcome =
                            Box::pin(self.ingest_one(item, "alert.", actor, trace_context));
                        async move { (i, outcome.await) }
                    })
                    .buffered(BULK_CONCURRENCY)
                    .collect()
                    .await;
            let mut response = IngestAlertsResponse::default();
            for (index, result) in results {
                match result {
                    Ok(o) => {
                        response.accepted += 1;
                        response.repeats += u64::from(o.repeat);
                        response.last_position = response.last_position.max(o.position);
                        response.results.push(answer(&o));
                    }
                    Err(AppError::Invalid { field, message }) => {
                        response.results.push(IngestAlertResponse::default());
                        response.rejected.push(pb::Rejection {
                            index: index as u32,
                            field,
                            message,
                        });
                    }
                    // Anything else fails the call: the client retries with its request ids.
                    Err(e) => return Err(status(e)),
                }
            }
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }

    async fn dismiss_alert(
        &self,
        request: Request<DismissAlertRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let span = rpc_span("AlertService", "DismissAlert", request.metadata());
        let actor = principal(&request);
        async move {
            let r = request.into_inner();
            let run = async {
                let id = convert::uuid("alert_id", &r.alert_id)?;
                let meta = command_meta(actor, convert::request_id(&r.request_id)?);
                self.sems
                    .alert_command(
                        id,
                        AlertCommand::Dismiss {
                            rationale: r.rationale,
                        },
                        meta,
                    )
                    .await
            };
            let c = run.await.map_err(status)?;
            Ok(Response::new(super::cmc::commit_info(&c, c.position)))
        }
        .instrument(span)
        .await
    }

    async fn merge_alert(
        &self,
        request: Request<MergeAlertRequest>,
    ) -> Result<Response<CommitInfo>, Status> {
        let span = rpc_span("AlertService", "MergeAlert", request.metadata());
        let actor = principal(&request);
        async move {
            let r = request.into_inner();
            let run = async {
                let alert_id = convert::uuid("alert_id", &r.alert_id)?;
                let incident_id = convert::uuid("incident_id", &r.incident_id)?;
                let meta = command_meta(actor, convert::request_id(&r.request_id)?);
                self.sems
                    .merge_alert(alert_id, incident_id, r.reason, meta)
                    .await
            };
            let c = run.await.map_err(status)?;
            Ok(Response::new(super::cmc::commit_info(&c, c.position)))
        }
        .instrument(span)
        .await
    }
}
