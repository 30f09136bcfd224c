//! `pin` / `unpin`: keep a snapshot whatever retention says.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;

use crate::{PinMarker, PutOptions, Result, Sink, SinkExt, SnapshotId, pin_key};

/// The `--json` output of `coffer pin` and `coffer unpin`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PinOutcome {
    /// The snapshot.
    pub id: SnapshotId,
    /// Pinned now (`pin`) or not any more (`unpin`).
    pub pinned: bool,
    /// `pin`: the sinks it was pinned on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Vec<String>>,
    /// `pin`: the reason stored in the marker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `unpin`: the sinks a marker was removed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpinned_on: Option<Vec<String>>,
}

/// Writes the pin marker of `id`.
pub async fn write_pin(sink: &dyn Sink, id: &SnapshotId, reason: Option<String>) -> Result<()> {
    let marker = PinMarker {
        id: id.clone(),
        pinned_at: jiff::Timestamp::now(),
        reason,
        host: crate::hostname(),
    };
    sink.put_bytes(&pin_key(id), marker.to_json().into(), PutOptions::default())
        .await
        .map(|_| ())
}

/// Pins `id` on every sink of `sinks` that holds it; returns their names.
pub async fn pin(
    sinks: &[(String, Arc<dyn Sink>)],
    id: &SnapshotId,
    reason: Option<String>,
) -> Result<PinOutcome> {
    let mut names = Vec::new();
    for (name, sink) in sinks_holding(sinks, id).await? {
        write_pin(sink.as_ref(), id, reason.clone())
            .await
            .map_err(|e| e.prefix(format!("pinning {id} on sink `{name}`")))?;
        names.push(name);
    }
    Ok(PinOutcome {
        id: id.clone(),
        pinned: true,
        sinks: Some(names),
        reason,
        unpinned_on: None,
    })
}

/// Removes the pin marker of `id` from every sink of `sinks` that has one.
pub async fn unpin(sinks: &[(String, Arc<dyn Sink>)], id: &SnapshotId) -> Result<PinOutcome> {
    let mut names = Vec::new();
    for (name, sink) in sinks {
        let key = pin_key(id);
        let here = sink
            .head(&key)
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        if here.is_some() {
            sink.delete(&key)
                .await
                .map_err(|e| e.prefix(format!("unpinning {id} on sink `{name}`")))?;
            names.push(name.clone());
        }
    }
    Ok(PinOutcome {
        id: id.clone(),
        pinned: false,
        sinks: None,
        reason: None,
        unpinned_on: Some(names),
    })
}

/// The sinks of `sinks` that hold snapshot `id` (by its index).
pub async fn sinks_holding(
    sinks: &[(String, Arc<dyn Sink>)],
    id: &SnapshotId,
) -> Result<Vec<(String, Arc<dyn Sink>)>> {
    let mut out = Vec::new();
    for (name, sink) in sinks {
        if sink
            .head(&id.index_key())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?
            .is_some()
        {
            out.push((name.clone(), sink.clone()));
        }
    }
    Ok(out)
}
