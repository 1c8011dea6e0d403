//! `sems.v1.AlertService`.

use futures::{StreamExt, TryStreamExt};
use sems_app::{AppError, IngestOutcome};
use sems_domain::alert::AlertCommand;
use sems_proto::v1::{
    self as pb, CommitInfo, DismissAlertRequest, IngestAlertRequest, IngestAlertResponse,
    IngestAlertsResponse, alert_service_server::AlertService,
};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{Api, command_meta, convert, principal, rpc_span, status};

/// Alerts of one bulk call in flight at once.
const BULK_CONCURRENCY: usize = 256;

impl Api {
    async fn ingest_one(
        &self,
        req: IngestAlertRequest,
        prefix: &str,
        actor: Option<String>,
    ) -> Result<IngestOutcome, AppError> {
        let report = convert::alert_report(req.alert, prefix, self.sems.handler().now())?;
        let meta = command_meta(actor, convert::request_id(&req.request_id)?);
        self.sems.ingest_alert(report, meta).await
    }
}

fn answer(o: &IngestOutcome) -> IngestAlertResponse {
    IngestAlertResponse {
        alert_id: o.alert_id.to_string(),
        repeat: o.repeat,
        incident_id: o.incident_id.map(|i| i.to_string()).unwrap_or_default(),
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
                .ingest_one(request.into_inner(), "alert.", actor)
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
            let results: Vec<(usize, Result<IngestOutcome, AppError>)> = request
                .into_inner()
                .enumerate()
                .map(|(i, item)| {
                    let actor = actor.clone();
                    async move {
                        // A broken request stream fails the call with the client's own status.
                        let item = item?;
                        Ok::<_, Status>((i, self.ingest_one(item, "alert.", actor).await))
                    }
                })
                .buffered(BULK_CONCURRENCY)
                .try_collect()
                .await?;
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
            Ok(Response::new(CommitInfo {
                aggregate_id: c.aggregate_id.to_string(),
                version: c.version,
                position: c.position,
                replayed: c.replayed,
            }))
        }
        .instrument(span)
        .await
    }
}
