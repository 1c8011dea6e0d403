//! `sems.v1.IncidentQueryService`: reads of the incident-tracking read model, each after
//! waiting for what the caller's `consistency` asks (`min_position`, `latest`).

use sems_app::AppError;
use sems_proto::v1::{
    CountIncidentsByRiskRequest, CountIncidentsByRiskResponse, DecisionRegister,
    GetIncidentDecisionLogRequest, GetIncidentRequest, IncidentDetail, IncidentSort as PbSort,
    ListAlertsRequest, ListAlertsResponse, ListIncidentsRequest, ListIncidentsResponse,
    RiskIncidents, incident_query_service_server::IncidentQueryService,
};
use sems_readmodel::{AlertQuery, Cursor, IncidentQuery, IncidentSort};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{Api, convert, rpc_span, status};

/// Default and largest page sizes.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

fn page_size(requested: u32) -> Result<u32, AppError> {
    match requested {
        0 => Ok(DEFAULT_PAGE),
        n if n > MAX_PAGE => Err(convert::invalid("page_size", format!("at most {MAX_PAGE}"))),
        n => Ok(n),
    }
}

fn sort(code: i32) -> Result<IncidentSort, AppError> {
    Ok(match PbSort::try_from(code) {
        Ok(PbSort::Unspecified | PbSort::OpenedDesc) => IncidentSort::OpenedDesc,
        Ok(PbSort::OpenedAsc) => IncidentSort::OpenedAsc,
        Ok(PbSort::UpdatedDesc) => IncidentSort::UpdatedDesc,
        Ok(PbSort::SeverityDesc) => IncidentSort::SeverityDesc,
        Ok(PbSort::PriorityAsc) => IncidentSort::PriorityAsc,
        Err(_) => return Err(convert::invalid("sort", format!("unknown value {code}"))),
    })
}

fn each<T>(
    field: &str,
    codes: &[i32],
    parse: impl Fn(&str, i32) -> Result<T, AppError>,
) -> Result<Vec<T>, AppError> {
    convert::filter_values(field, codes)?
        .iter()
        .enumerate()
        .map(|(i, c)| parse(&format!("{field}[{i}]"), *c))
        .collect()
}

#[tonic::async_trait]
impl IncidentQueryService for Api {
    async fn count_incidents_by_risk(
        &self,
        request: Request<CountIncidentsByRiskRequest>,
    ) -> Result<Response<CountIncidentsByRiskResponse>, Status> {
        let span = rpc_span(
            "IncidentQueryService",
            "CountIncidentsByRisk",
            request.metadata(),
        );
        async move {
            let consistency = request.get_ref().consistency.as_ref();
            self.consistent(request.extensions(), consistency).await?;
            let risks = self.reads.incidents_per_risk().await.map_err(status)?;
            Ok(Response::new(CountIncidentsByRiskResponse {
                risks: risks
                    .into_iter()
                    .map(|r| RiskIncidents {
                        risk_ref: r.risk_ref,
                        incidents: u64::try_from(r.incidents).unwrap_or(0),
                        open: u64::try_from(r.open).unwrap_or(0),
                    })
                    .collect(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn get_decision_log(
        &self,
        request: Request<GetIncidentDecisionLogRequest>,
    ) -> Result<Response<DecisionRegister>, Status> {
        let span = rpc_span("IncidentQueryService", "GetDecisionLog", request.metadata());
        async move {
            let r = request.get_ref();
            let id = convert::uuid("incident_id", &r.incident_id).map_err(status)?;
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            if self.reads.get_incident(id).await.map_err(status)?.is_none() {
                return Err(Status::not_found(format!("incident {id} not found")));
            }
            let rows = self.reads.incident_decisions(id).await.map_err(status)?;
            Ok(Response::new(super::cmc::register(
                &rows,
                chrono::Utc::now(),
            )))
        }
        .instrument(span)
        .await
    }

    async fn get_incident(
        &self,
        request: Request<GetIncidentRequest>,
    ) -> Result<Response<IncidentDetail>, Status> {
        let span = rpc_span("IncidentQueryService", "GetIncident", request.metadata());
        async move {
            let id =
                convert::uuid("incident_id", &request.get_ref().incident_id).map_err(status)?;
            let consistency = request.get_ref().consistency.as_ref();
            self.consistent(request.extensions(), consistency).await?;
            let detail = self
                .reads
                .get_incident(id)
                .await
                .map_err(status)?
                .ok_or_else(|| Status::not_found(format!("incident {id} not found")))?;
            Ok(Response::new(IncidentDetail {
                incident: Some(convert::incident(&detail.incident)),
                alerts: detail.alerts.iter().map(convert::alert).collect(),
                roles: detail
                    .incident
                    .row
                    .roles
                    .iter()
                    .map(convert::role)
                    .collect(),
                notes: detail.notes.iter().map(convert::note).collect(),
                notifications: detail
                    .incident
                    .row
                    .notifications
                    .iter()
                    .map(convert::notification)
                    .collect(),
                risks: detail
                    .incident
                    .row
                    .risks
                    .iter()
                    .map(convert::risk)
                    .collect(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        let span = rpc_span("IncidentQueryService", "ListIncidents", request.metadata());
        async move {
            let r = request.get_ref();
            let parse = || -> Result<IncidentQuery, AppError> {
                let sort = sort(r.sort)?;
                let after = match r.page_token.as_str() {
                    "" => None,
                    t => Some(Cursor::decode("page_token", t)?),
                };
                let text =
                    sems_domain::Text::optional("text", &r.text, sems_domain::Limits::TITLE)?;
                Ok(IncidentQuery {
                    statuses: each("statuses", &r.statuses, convert::status_name)?,
                    levels: each("levels", &r.levels, |f, c| {
                        Ok(convert::level(f, c)?.as_str().to_owned())
                    })?,
                    severities: each("severities", &r.severities, |f, c| {
                        Ok(convert::severity(f, c)?.code() as i16)
                    })?,
                    priorities: each("priorities", &r.priorities, |f, c| {
                        Ok(convert::priority(f, c)?.code() as i16)
                    })?,
                    opened_from: convert::time(
                        "opened.from",
                        r.opened.as_ref().and_then(|o| o.from.as_ref()),
                    )?,
                    opened_to: convert::time(
                        "opened.to",
                        r.opened.as_ref().and_then(|o| o.to.as_ref()),
                    )?,
                    text: (!text.is_empty()).then_some(text),
                    escalation_requested: None,
                    updated_before: None,
                    risk_ref: match r.risk_ref.trim() {
                        "" => None,
                        t => Some(sems_domain::incident::risk_reference("risk_ref", t)?),
                    },
                    sort,
                    page_size: page_size(r.page_size)?,
                    after,
                })
            };
            let query = parse().map_err(status)?;
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            let page = self.reads.list_incidents(&query).await.map_err(status)?;
            Ok(Response::new(ListIncidentsResponse {
                incidents: page.items.iter().map(convert::incident).collect(),
                next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        let span = rpc_span("IncidentQueryService", "ListAlerts", request.metadata());
        async move {
            let r = request.get_ref();
            let parse = || -> Result<AlertQuery, AppError> {
                let status = match r.status.as_str() {
                    "" => None,
                    s @ ("received" | "dismissed" | "promoted" | "merged") => Some(s.to_owned()),
                    _ => {
                        return Err(convert::invalid(
                            "status",
                            "use received, dismissed, promoted or merged",
                        ));
                    }
                };
                Ok(AlertQuery {
                    incident_id: match r.incident_id.as_str() {
                        "" => None,
                        id => Some(convert::uuid("incident_id", id)?),
                    },
                    status,
                    page_size: page_size(r.page_size)?,
                    after: match r.page_token.as_str() {
                        "" => None,
                        t => Some(Cursor::decode("page_token", t)?),
                    },
                })
            };
            let query = parse().map_err(status)?;
            self.consistent(request.extensions(), r.consistency.as_ref())
                .await?;
            let page = self.reads.list_alerts(&query).await.map_err(status)?;
            Ok(Response::new(ListAlertsResponse {
                alerts: page.items.iter().map(convert::alert).collect(),
                next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
            }))
        }
        .instrument(span)
        .await
    }
}
