//! `noreboot update`: ask the configured source for the newest level for
//! this kernel's build-id, record the answer (for `status`), and apply it
//! when it is newer than the active level and not taken out by the crash
//! guard. Today's source is a directory of bundles (a mirror for
//! air-gapped hosts); a server source answers the same question over HTTPS.
//! A source that cannot be reached changes nothing: the active level stays.

use std::path::Path;

use serde::Serialize;

use crate::audit;
use crate::engine::{Agent, AgentError, ApplyReport};
use crate::state::Offer;

/// What `update` did.
#[derive(Debug, Serialize)]
pub struct UpdateReport {
    /// The newest level offered for this kernel (0: none).
    pub offered: u32,
    /// The level applied, if one was.
    pub applied: Option<ApplyReport>,
    /// One line for people.
    pub summary: String,
}

/// Runs one update.
pub fn run(agent: &Agent) -> Result<UpdateReport, AgentError> {
    let started = std::time::Instant::now();
    let Some(dir) = agent.cfg.update.directory.clone() else {
        return Err(AgentError::Failed(
            "no update source configured (set update.directory in the configuration)".into(),
        ));
    };
    let keys = agent.keys()?;
    let found = match newest_in_dir(agent, &dir, &keys) {
        Ok(f) => f,
        Err(e) => {
            agent.log("update", 0, "", "failed", started, e.to_string())?;
            return Err(e);
        }
    };
    let mut st = agent.state()?;
    st.offer = Some(Offer {
        level: found.as_ref().map(|f| f.1).unwrap_or(0),
        supported: found.is_some(),
        source: dir.display().to_string(),
        checked_at: audit::now(),
    });
    agent
        .store
        .save(&agent.build_id, &st)
        .map_err(|e| AgentError::Failed(e.to_string()))?;
    let active = agent.active(&st)?.map(|a| a.0).unwrap_or(0);
    let Some((path, level)) = found else {
        let summary = format!(
            "no patches for this kernel ({} build-id {}) in {}",
            agent.identity.release,
            agent.build_id,
            dir.display()
        );
        agent.log("update", 0, "", "no-op", started, summary.clone())?;
        return Ok(UpdateReport {
            offered: 0,
            applied: None,
            summary,
        });
    };
    if level <= active {
        let summary = format!("up to date: level {active} is active");
        agent.log("update", level, "", "no-op", started, summary.clone())?;
        return Ok(UpdateReport {
            offered: level,
            applied: None,
            summary,
        });
    }
    let (bytes, vb) = agent.open_file(&path, &keys)?;
    let rep = agent.apply(&bytes, &vb, "update")?;
    Ok(UpdateReport {
        offered: level,
        summary: format!(
            "level {} ({}) applied, was {}",
            rep.level, rep.name, rep.previous
        ),
        applied: Some(rep),
    })
}

/// The newest acceptable level for this kernel in `dir`: signed by a
/// trusted key, for this build-id, not skipped by the crash guard.
/// Bundles for other kernels are normal in a mirror and passed over; a
/// bundle that fails verification is reported but does not hide the others.
fn newest_in_dir(
    agent: &Agent,
    dir: &Path,
    keys: &bundle::TrustedKeys,
) -> Result<Option<(std::path::PathBuf, u32)>, AgentError> {
    let st = agent.state()?;
    let rd = std::fs::read_dir(dir)
        .map_err(|e| AgentError::Failed(format!("update source {}: {e}", dir.display())))?;
    let mut best: Option<(std::path::PathBuf, u32)> = None;
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("nrb") {
            continue;
        }
        let vb = match agent.verify_file(&path, keys) {
            Ok((_, vb)) => vb,
            Err(e) => {
                eprintln!("noreboot: skipping {e}");
                continue;
            }
        };
        if vb.manifest.kernel.build_id != agent.build_id {
            continue;
        }
        let level = vb.manifest.level;
        if st.is_skipped(level) {
            continue;
        }
        if best.as_ref().is_none_or(|b| level > b.1) {
            best = Some((path, level));
        }
    }
    Ok(best)
}
