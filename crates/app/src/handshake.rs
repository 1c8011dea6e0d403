//! The Resilience Handshake across aggregates: a crisis-escalation request on an incident
//! starts a handover; the handover's acceptance activates a crisis and passes the incident's
//! command to `STRATEGIC`; its decline or withdrawal closes the incident's request; the
//! crisis's stand-down
//! returns the command of every incident it took to `TACTICAL`. Each step is one commit on
//! one aggregate with an id derived from the step before, so a retried call, or
//! [`Sems::complete_handover`] and [`Sems::complete_stand_down`], finishes what a stopped
//! call left half done — exactly once.

use sems_domain::{
    crisis::{Crisis, CrisisCommand},
    handover::{Handover, HandoverCommand, HandoverStatus},
    incident::{Incident, IncidentCommand},
};
use uuid::Uuid;

use crate::{AppError, CommandMeta, Committed, Sems};

/// Namespace of handover ids, derived from the escalation request's commit.
const HANDOVER_NS: Uuid = Uuid::from_u128(0x5e35_4a0d_0000_4000_8000_0000_0000_0005);
/// Namespace of crisis ids, derived from the handover that activates them.
const CRISIS_NS: Uuid = Uuid::from_u128(0x5e35_c515_0000_4000_8000_0000_0000_0006);
/// Namespace of the ids of crises declared directly, from the request id.
const DECLARED_NS: Uuid = Uuid::from_u128(0x5e35_dec1_0000_4000_8000_0000_0000_0008);
/// Namespace of the commit ids of the handshake's follow-up steps.
const STEP_NS: Uuid = Uuid::from_u128(0x5e35_57e9_0000_4000_8000_0000_0000_0007);

/// The commit id of the follow-up step `name` of the handover or crisis `origin`.
fn step(origin: Uuid, name: &str) -> Uuid {
    let mut key = origin.as_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    Uuid::new_v5(&STEP_NS, &key)
}

/// The crisis an accepted handover activates.
pub fn crisis_id_for(handover_id: Uuid) -> Uuid {
    Uuid::new_v5(&CRISIS_NS, handover_id.as_bytes())
}

/// What a crisis-escalation request did.
#[derive(Debug, Clone)]
pub struct EscalationOutcome {
    /// The incident's commit.
    pub incident: Committed<Incident>,
    /// The handover it started.
    pub handover_id: Uuid,
    /// The last position written.
    pub position: u64,
}

/// What a handover command did.
#[derive(Debug, Clone)]
pub struct HandoverOutcome {
    /// The handover's commit.
    pub handover: Committed<Handover>,
    /// The crisis, once accepted.
    pub crisis_id: Option<Uuid>,
    /// The last position written (the follow-up steps included).
    pub position: u64,
}

impl Sems {
    /// Requests crisis escalation of a TACTICAL incident and starts its handover.
    pub async fn request_crisis_escalation(
        &self,
        incident_id: Uuid,
        reason: String,
        criteria_met: String,
        meta: CommandMeta,
    ) -> Result<EscalationOutcome, AppError> {
        // The handover's id is derived from the request's commit id, which is fixed here
        // (as the handler would: from the request id, or new) so the request can name it.
        let commit_id = meta.commit_id.unwrap_or_else(|| match &meta.request_id {
            Some(r) => self.handler().commit_id_for(
                self.handler().actor_of(&meta),
                r,
                <Incident as sems_domain::Aggregate>::TYPE,
                incident_id,
            ),
            None => Uuid::now_v7(),
        });
        let handover_id = Uuid::new_v5(&HANDOVER_NS, commit_id.as_bytes());
        let meta = CommandMeta {
            commit_id: Some(commit_id),
            ..meta
        };
        let command = IncidentCommand::RequestCrisisEscalation {
            reason: reason.clone(),
            criteria_met,
            handover_id,
        };
        let incident = self
            .handler()
            .execute::<Incident>(incident_id, &command, &meta)
            .await?;
        let start = HandoverCommand::Start {
            incident_id,
            reason,
        };
        let follow = self.follow_up(&meta, incident.commit_id, step(handover_id, "start"));
        let handover = self
            .handler()
            .execute::<Handover>(handover_id, &start, &follow)
            .await?;
        Ok(EscalationOutcome {
            position: incident.position.max(handover.position),
            incident,
            handover_id,
        })
    }

    /// A command on a handover: drafting, offering, clarification, acceptance (which
    /// activates the crisis and passes command), decline or withdrawal (which close the
    /// request).
    pub async fn handover_command(
        &self,
        handover_id: Uuid,
        command: HandoverCommand,
        meta: CommandMeta,
    ) -> Result<HandoverOutcome, AppError> {
        let command = match command {
            HandoverCommand::Start { .. } => {
                return Err(AppError::Internal(
                    "a handover starts with request_crisis_escalation".into(),
                ));
            }
            // The crisis id is the handover's, so every path names the same crisis.
            HandoverCommand::Accept {
                effective_at,
                authority_delegated,
                ..
            } => HandoverCommand::Accept {
                effective_at,
                authority_delegated,
                crisis_id: crisis_id_for(handover_id),
            },
            other => other,
        };
        let handover = self
            .handler()
            .execute::<Handover>(handover_id, &command, &meta)
            .await?;
        let position = handover.position;
        let (crisis_id, done) = self
            .complete_handover_from(handover_id, &handover.state, &meta, handover.commit_id)
            .await?;
        Ok(HandoverOutcome {
            handover,
            crisis_id,
            position: position.max(done),
        })
    }

    /// Finishes the steps an accepted, declined or withdrawn handover implies (crisis
    /// activation and the incident's command, or the closing of its request), if a stopped
    /// call left them undone. Idempotent. Returns the crisis (when accepted) and the last position written.
    pub async fn complete_handover(
        &self,
        handover_id: Uuid,
    ) -> Result<(Option<Uuid>, u64), AppError> {
        let (handover, _) = self.handler().load_fresh::<Handover>(handover_id).await?;
        self.complete_handover_from(handover_id, &handover, &CommandMeta::default(), handover_id)
            .await
    }

    async fn complete_handover_from(
        &self,
        handover_id: Uuid,
        handover: &Handover,
        meta: &CommandMeta,
        cause: Uuid,
    ) -> Result<(Option<Uuid>, u64), AppError> {
        let Some(s) = handover.state() else {
            return Err(AppError::NotFound(format!("handover {handover_id}")));
        };
        match s.status {
            HandoverStatus::Accepted => {
                let Some((crisis_id, effective_at)) = s.accepted else {
                    return Err(AppError::Internal(
                        "accepted handover without acceptance".into(),
                    ));
                };
                let title: String = s.brief.situation.chars().take(200).collect();
                let activate = CrisisCommand::Activate {
                    title: if title.trim().is_empty() {
                        format!("Crisis of incident {}", s.incident_id)
                    } else {
                        title
                    },
                    incident_ids: vec![s.incident_id],
                    handover_id: Some(handover_id),
                    criteria: String::new(),
                    tlp: None,
                };
                // A step found done (its commit older than the ids a handler remembers) is
                // refused by the rules as a repeat: done is done.
                let crisis = done(
                    self.handler()
                        .execute::<Crisis>(
                            crisis_id,
                            &activate,
                            &self.follow_up(meta, cause, step(handover_id, "crisis")),
                        )
                        .await,
                )?;
                let transfer = IncidentCommand::EnterStrategic {
                    handover_id,
                    crisis_id,
                    effective_at,
                };
                let incident = done(
                    self.handler()
                        .execute::<Incident>(
                            s.incident_id,
                            &transfer,
                            &self.follow_up(meta, cause, step(handover_id, "incident")),
                        )
                        .await,
                )?;
                Ok((Some(crisis_id), crisis.max(incident)))
            }
            HandoverStatus::Declined | HandoverStatus::Withdrawn => {
                let close = if s.status == HandoverStatus::Declined {
                    IncidentCommand::CloseDeclinedEscalation {
                        handover_id,
                        reason: s.declined.clone().unwrap_or_default(),
                    }
                } else {
                    IncidentCommand::CloseWithdrawnEscalation {
                        handover_id,
                        reason: s.withdrawn.clone().unwrap_or_default(),
                    }
                };
                let incident = done(
                    self.handler()
                        .execute::<Incident>(
                            s.incident_id,
                            &close,
                            &self.follow_up(meta, cause, step(handover_id, "incident")),
                        )
                        .await,
                )?;
                Ok((None, incident))
            }
            _ => Ok((None, 0)),
        }
    }

    /// Starts the handover of an incident's pending crisis-escalation request, if a stopped
    /// call left it unstarted, as that call would have: on behalf of the requester, with the
    /// request's reason and the same commit id. Idempotent. Returns the position written, or
    /// 0 when there was nothing to do (no request naming its handover — requests recorded
    /// before they did cannot be repaired this way — or a handover already started).
    pub async fn complete_escalation(&self, incident_id: Uuid) -> Result<u64, AppError> {
        // From the log: a cached copy is not caught up with requests other replicas made.
        // The sweep asks only for incidents waiting without a pending handover, which are
        // rare, so the read is rare too.
        let (incident, _) = self.handler().load_fresh::<Incident>(incident_id).await?;
        let Some(s) = incident.state() else {
            return Err(AppError::NotFound(format!("incident {incident_id}")));
        };
        let (true, Some(handover_id)) = (s.escalation_requested, s.pending_handover) else {
            return Ok(0);
        };
        let start = HandoverCommand::Start {
            incident_id,
            reason: s.pending_reason.clone(),
        };
        let meta = CommandMeta {
            actor: Some(s.pending_requested_by.clone()).filter(|a| !a.is_empty()),
            commit_id: Some(step(handover_id, "start")),
            ..CommandMeta::default()
        };
        match self
            .handler()
            .execute::<Handover>(handover_id, &start, &meta)
            .await
        {
            Ok(c) if !c.replayed => Ok(c.position),
            Ok(_) | Err(AppError::Precondition(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Declares a crisis directly (without a handover), with the criteria it meets. A retry
    /// with the same request id names the same crisis.
    pub async fn declare_crisis(
        &self,
        command: CrisisCommand,
        meta: CommandMeta,
    ) -> Result<Committed<Crisis>, AppError> {
        let CrisisCommand::Activate { handover_id, .. } = &command else {
            return Err(AppError::Internal(
                "declare_crisis takes an Activate command".into(),
            ));
        };
        if handover_id.is_some() {
            return Err(AppError::Invalid {
                field: "handover_id".into(),
                message: "a crisis from a handover is activated by accepting the handover".into(),
            });
        }
        let crisis_id = match &meta.request_id {
            Some(r) => Uuid::new_v5(
                &DECLARED_NS,
                format!("{}\n{r}", self.handler().actor_of(&meta)).as_bytes(),
            ),
            None => Uuid::now_v7(),
        };
        let meta = CommandMeta {
            assume_new: true,
            ..meta
        };
        self.handler()
            .execute::<Crisis>(crisis_id, &command, &meta)
            .await
    }

    /// Any other command on a crisis. A stand-down also returns the command of the incidents
    /// the crisis took. Returns the crisis's commit and the last position written (the
    /// follow-up steps included).
    pub async fn crisis_command(
        &self,
        crisis_id: Uuid,
        command: CrisisCommand,
        meta: CommandMeta,
    ) -> Result<(Committed<Crisis>, u64), AppError> {
        if matches!(command, CrisisCommand::Activate { .. }) {
            return Err(AppError::Internal("use declare_crisis".into()));
        }
        let stand_down = matches!(command, CrisisCommand::StandDown { .. });
        let crisis = self
            .handler()
            .execute::<Crisis>(crisis_id, &command, &meta)
            .await?;
        let mut position = crisis.position;
        if stand_down {
            let returned = self
                .return_command(crisis_id, &crisis.state, &meta, crisis.commit_id)
                .await?;
            position = position.max(returned);
        }
        Ok((crisis, position))
    }

    /// Returns the command of the incidents a stood-down crisis took, if a stopped call left
    /// that undone. Idempotent. Returns the last position written.
    pub async fn complete_stand_down(&self, crisis_id: Uuid) -> Result<u64, AppError> {
        let (crisis, _) = self.handler().load_fresh::<Crisis>(crisis_id).await?;
        self.return_command(crisis_id, &crisis, &CommandMeta::default(), crisis_id)
            .await
    }

    async fn return_command(
        &self,
        crisis_id: Uuid,
        crisis: &Crisis,
        meta: &CommandMeta,
        cause: Uuid,
    ) -> Result<u64, AppError> {
        let Some(s) = crisis.state() else {
            return Err(AppError::NotFound(format!("crisis {crisis_id}")));
        };
        let Some((decision_id, handed_to)) = &s.stood_down else {
            return Ok(0);
        };
        let mut position = 0;
        // Every linked incident is asked; the rules refuse those this crisis does not command
        // (linked without a handover, or already given back), and a refusal is done.
        for incident_id in &s.incident_ids {
            let give_back = IncidentCommand::ReturnFromStrategic {
                crisis_id,
                decision_id: *decision_id,
                handed_to: handed_to.clone(),
            };
            let step_id = step(crisis_id, &format!("return {incident_id}"));
            // Command returns when the crisis stood down: a stand-down logged late (with
            // its reason) returns command as of then. A repair knows no such time: now.
            let follow = CommandMeta {
                occurred_at: meta.occurred_at,
                late_reason: meta.late_reason.clone(),
                ..self.follow_up(meta, cause, step_id)
            };
            let written = match self
                .handler()
                .execute::<Incident>(*incident_id, &give_back, &follow)
                .await
            {
                Ok(c) => c.position,
                Err(AppError::Precondition(_) | AppError::NotFound(_)) => 0,
                Err(e) => return Err(e),
            };
            position = position.max(written);
        }
        Ok(position)
    }

    /// Metadata of a step caused by `cause`, under the derived commit id `commit_id`.
    fn follow_up(&self, meta: &CommandMeta, cause: Uuid, commit_id: Uuid) -> CommandMeta {
        CommandMeta {
            actor: meta.actor.clone(),
            request_id: None,
            commit_id: Some(commit_id),
            occurred_at: None,
            late_reason: None,
            correlation_id: meta.correlation_id.or(Some(cause)),
            causation_id: Some(cause),
            trace_context: meta.trace_context.clone(),
            assume_new: false,
        }
    }
}

/// The position of a follow-up step's commit, or 0 when the rules refuse it as already done.
fn done<A: sems_domain::Aggregate>(r: Result<Committed<A>, AppError>) -> Result<u64, AppError> {
    match r {
        Ok(c) => Ok(c.position),
        Err(AppError::Precondition(_)) => Ok(0),
        Err(e) => Err(e),
    }
}
