//! From one framed message to what the writer stores: a log line, or — for a Sightline
//! payload — an agent batch for the normal metrics pipeline, or an error event (whole,
//! or once its last part is in) for the error pipeline.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use sightline_protocol::MetricBatch;

use super::events::{Parts, parse_part};
use super::message::{Format, SyslogMessage};
use super::metrics::{Outcome, SyslogMetrics, Transport};
use super::{PAYLOAD_SD_ID, parse};
use crate::Query;
use crate::http::extract::constant_time_eq;
use crate::store::{Ingest, MetricsIngest, NewLogLine};

/// What a Sightline payload became.
enum Payload {
    /// An op for the writer.
    Ingest(Box<Ingest>),
    /// A part of an event, held until the others arrive.
    Part,
}

/// What a listener needs to turn messages into ingest ops; shared by every listener.
pub(crate) struct Receiver {
    pub query: Query,
    pub metrics: Arc<SyslogMetrics>,
    /// Project plain log lines go to.
    pub log_project: u64,
    pub max_message: usize,
    /// Events arriving in parts, until each is whole.
    pub parts: Mutex<Parts>,
}

/// Ops gathered from the messages of one read or a few datagrams. Outcomes are counted
/// once the ops are queued, so each message has exactly one (`dropped` included).
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub lines: Vec<NewLogLine>,
    pub payloads: Vec<Ingest>,
    /// Outcomes of `lines`, by [`Outcome`] index.
    line_outcomes: [u64; 4],
}

impl Gathered {
    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.payloads.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.lines.len() + self.payloads.len()
    }

    /// Takes the lines for queueing.
    pub(crate) fn take_lines(&mut self) -> (Vec<NewLogLine>, [u64; 4]) {
        (
            std::mem::take(&mut self.lines),
            std::mem::take(&mut self.line_outcomes),
        )
    }

    /// Puts lines back that could not be queued yet.
    pub(crate) fn restore_lines(&mut self, lines: Vec<NewLogLine>, outcomes: [u64; 4]) {
        self.lines = lines;
        self.line_outcomes = outcomes;
    }
}

/// Counts queued lines under the outcomes they had.
pub(crate) fn count_lines(metrics: &SyslogMetrics, transport: Transport, outcomes: [u64; 4]) {
    for (outcome, n) in [
        Outcome::Log,
        Outcome::Raw,
        Outcome::Payload,
        Outcome::Rejected,
    ]
    .into_iter()
    .zip(outcomes)
    {
        if n > 0 {
            metrics.message(transport, outcome, n);
        }
    }
}

/// Why a Sightline payload was refused; it is then stored as a log line.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("unknown payload kind")]
    Kind,
    #[error("missing or malformed project")]
    Project,
    #[error("unknown project")]
    UnknownProject,
    #[error("missing or wrong key")]
    Key,
    #[error("invalid metric batch: {0}")]
    Batch(String),
    #[error("invalid event: {0}")]
    Event(String),
    #[error("store unavailable")]
    Store,
}

pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Receiver {
    /// Parses one message and adds what it becomes to `into`; counts its outcome.
    pub(crate) async fn receive(
        &self,
        data: &[u8],
        truncated: bool,
        transport: Transport,
        into: &mut Gathered,
    ) {
        let now_ms = unix_now_ms();
        let message = parse(data, now_ms);
        if truncated {
            self.metrics.truncated(transport);
        }
        let mut outcome = match message.format {
            Format::Raw => Outcome::Raw,
            _ => Outcome::Log,
        };
        if let Some(sd) = message.sd(PAYLOAD_SD_ID) {
            match self.payload(sd, &message, now_ms).await {
                Ok(Payload::Ingest(ingest)) => {
                    into.payloads.push(*ingest);
                    return;
                }
                Ok(Payload::Part) => {
                    self.metrics.message(transport, Outcome::Part, 1);
                    return;
                }
                Err(reason) => {
                    tracing::debug!(%reason, "refused a sightline payload over syslog; keeping it as a log line");
                    outcome = Outcome::Rejected;
                }
            }
        }
        into.line_outcomes[outcome as usize] += 1;
        into.lines
            .push(self.log_line(message, now_ms, transport, truncated));
    }

    async fn payload(
        &self,
        sd: &super::message::SdElement,
        message: &SyslogMessage,
        now_ms: i64,
    ) -> Result<Payload, Refused> {
        let kind = sd.param("kind").unwrap_or("metrics");
        if !matches!(kind, "metrics" | "event") {
            return Err(Refused::Kind);
        }
        let project_id: u64 = sd
            .param("project")
            .and_then(|p| p.parse().ok())
            .ok_or(Refused::Project)?;
        let key = sd.param("key").ok_or(Refused::Key)?;
        let project = self
            .query
            .project(project_id)
            .await
            .map_err(|_| Refused::Store)?
            .ok_or(Refused::UnknownProject)?;
        if !constant_time_eq(project.public_key.as_bytes(), key.as_bytes()) {
            return Err(Refused::Key);
        }
        if kind == "event" {
            return self.event(sd, project.id, &message.message, now_ms);
        }
        let batch: MetricBatch = serde_json::from_str(message.message.trim_start())
            .map_err(|e| Refused::Batch(e.to_string()))?;
        batch
            .validate()
            .map_err(|e| Refused::Batch(e.to_string()))?;
        Ok(Payload::Ingest(Box::new(Ingest::Metrics(MetricsIngest {
            project_id: project.id,
            received_at: now_ms.div_euclid(1_000),
            batch,
        }))))
    }

    /// An error event's message: the whole event, or one of its parts.
    fn event(
        &self,
        sd: &super::message::SdElement,
        project_id: u64,
        body: &str,
        now_ms: i64,
    ) -> Result<Payload, Refused> {
        let whole = match sd.param("part") {
            None => body.to_owned(),
            Some(part) => {
                let part = parse_part(part)
                    .ok_or_else(|| Refused::Event("malformed part number".to_owned()))?;
                let id = sd
                    .param("id")
                    .filter(|id| !id.is_empty() && id.len() <= 64)
                    .ok_or_else(|| Refused::Event("a part needs the event's id".to_owned()))?;
                let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
                let joined = parts.add(project_id, id, part, body, now_ms);
                self.metrics.events_incomplete(parts.take_incomplete());
                match joined.map_err(|e| Refused::Event(e.to_string()))? {
                    Some(whole) => whole,
                    None => return Ok(Payload::Part),
                }
            }
        };
        let ingest = crate::http::ingest::bare_event(project_id, whole.as_bytes())
            .map_err(|e| Refused::Event(e.to_string()))?;
        Ok(Payload::Ingest(Box::new(Ingest::Envelope(ingest))))
    }

    fn log_line(
        &self,
        message: SyslogMessage,
        now_ms: i64,
        transport: Transport,
        truncated: bool,
    ) -> NewLogLine {
        NewLogLine {
            project_id: self.log_project,
            received_ms: now_ms,
            timestamp_ms: message.timestamp_ms,
            facility: message.facility,
            severity: message.severity,
            host: message.host,
            app: message.app,
            procid: message.procid,
            msgid: message.msgid,
            structured_data: structured_data_json(&message.structured_data),
            message: message.message,
            format: message.format.label(),
            transport: transport.label(),
            truncated,
        }
    }
}

/// `{sd_id: {param: value}}`; a Sightline element's key is never stored.
fn structured_data_json(elements: &[super::message::SdElement]) -> Option<String> {
    if elements.is_empty() {
        return None;
    }
    let mut object = Map::new();
    for element in elements {
        let params: Map<String, Value> = element
            .params
            .iter()
            .map(|(name, value)| {
                let value = if element.id == PAYLOAD_SD_ID && name == "key" {
                    "[redacted]".to_owned()
                } else {
                    value.clone()
                };
                (name.clone(), Value::String(value))
            })
            .collect();
        object.insert(element.id.clone(), Value::Object(params));
    }
    Some(Value::Object(object).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syslog::message::SdElement;

    #[test]
    fn structured_data_is_json_without_keys() {
        let json = structured_data_json(&[
            SdElement {
                id: "a@1".into(),
                params: vec![("x".into(), "1".into())],
            },
            SdElement {
                id: PAYLOAD_SD_ID.into(),
                params: vec![("key".into(), "secret".into())],
            },
        ])
        .unwrap();
        assert!(!json.contains("secret"));
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["a@1"]["x"], "1");
        assert_eq!(structured_data_json(&[]), None);
    }
}
