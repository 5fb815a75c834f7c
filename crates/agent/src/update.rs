//! `noreboot update`: ask the configured source for the newest level for
//! this kernel's build-id, record the answer (for `status`), and apply it
//! when it is newer than the active level and not taken out by the crash
//! guard. Today's source is a directory of bundles (a mirror for
//! air-gapped hosts); a server source answers the same question over HTTPS.
//! A source that cannot be reached changes nothing: the active level stays.

use std::path::Path;

use serde::Serialize;

use crate::audit;
use crate::client::{Client, Registration};
use crate::engine::{Agent, AgentError, ApplyReport, Foreign};
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

/// Runs one update: from the server this host registered with, else
/// from the configured directory. `foreign`: whether the level may replace
/// live patches that are not ours.
pub fn run(agent: &Agent, foreign: Foreign) -> Result<UpdateReport, AgentError> {
    if let Some(reg) = Registration::load(agent.store.root()).map_err(AgentError::failed)? {
        return from_server(agent, &reg, foreign);
    }
    let started = std::time::Instant::now();
    let Some(dir) = agent.cfg.update.directory.clone() else {
        return Err(AgentError::Failed(
            "no update source: register with a server (`noreboot register`) or set update.directory"
                .into(),
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
    let rep = agent.apply(&bytes, &vb, "update", foreign)?;
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

/// The kernel as the protocol describes it.
pub fn kernel(agent: &Agent) -> protocol::Kernel {
    protocol::Kernel {
        release: agent.identity.release.clone(),
        version: agent.identity.version.clone(),
        build_id: agent.build_id.clone(),
    }
}

/// One check-in with the server; applies the level it names for this
/// host (newer, or older after a rollback on the server) and reports.
fn from_server(
    agent: &Agent,
    reg: &Registration,
    foreign: Foreign,
) -> Result<UpdateReport, AgentError> {
    let started = std::time::Instant::now();
    let client = Client::new(&reg.url, Some(reg.token.clone()), &agent.cfg.server)
        .map_err(AgentError::failed)?;
    let mut st = agent.state()?;
    let active = agent.active(&st)?.map(|a| a.0).unwrap_or(0);
    let effective = std::fs::read_to_string(agent.store.root().join("effective-version"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| agent.identity.version.clone());
    let req = protocol::CheckinRequest {
        kernel: kernel(agent),
        level: active,
        effective_version: effective,
        skipped: st.skipped.iter().map(|s| s.level).collect(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    let answer = match client.checkin(&req) {
        Ok(a) => a,
        Err(e) => {
            let msg = format!("check-in failed, level {active} stays active: {e}");
            agent.log("update", active, "", "failed", started, msg.clone())?;
            return Err(AgentError::Failed(msg));
        }
    };
    st.offer = Some(Offer {
        level: answer.target.as_ref().map(|t| t.level).unwrap_or(0),
        supported: answer.supported,
        source: reg.url.clone(),
        checked_at: audit::now(),
    });
    agent
        .store
        .save(&agent.build_id, &st)
        .map_err(|e| AgentError::Failed(e.to_string()))?;
    let no_op = |summary: String, offered: u32| -> Result<UpdateReport, AgentError> {
        agent.log("update", offered, "", "no-op", started, summary.clone())?;
        Ok(UpdateReport {
            offered,
            applied: None,
            summary,
        })
    };
    if !answer.supported {
        return no_op(
            format!(
                "the server has no patches for this kernel ({} build-id {})",
                agent.identity.release, agent.build_id
            ),
            0,
        );
    }
    let Some(target) = answer.target else {
        return no_op(
            "no level is released for this kernel on this host's feed yet".into(),
            0,
        );
    };
    if target.level == active {
        return no_op(
            format!("up to date: level {active} is active"),
            target.level,
        );
    }
    if target.level > active && st.is_skipped(target.level) {
        return no_op(
            format!(
                "level {} is offered but the crash guard took it out of play here; level {active} stays",
                target.level
            ),
            target.level,
        );
    }
    let bytes = match fetch(agent, &client, &target) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!(
                "downloading level {} failed, level {active} stays active: {e}",
                target.level
            );
            agent.log(
                "update",
                target.level,
                &target.name,
                "failed",
                started,
                msg.clone(),
            )?;
            return Err(AgentError::Failed(msg));
        }
    };
    let result = apply_target(agent, reg, &target, &bytes, foreign, started);
    let now_active = agent
        .state()
        .and_then(|st| agent.active(&st))
        .ok()
        .flatten()
        .map(|a| a.0)
        .unwrap_or(0);
    let (res, reason) = match &result {
        Ok(_) => ("applied", String::new()),
        Err(AgentError::Refused(m)) => ("refused", m.clone()),
        Err(AgentError::RolledBack(m)) => ("rolled-back", m.clone()),
        Err(e) => ("failed", e.to_string()),
    };
    let report = protocol::ReportRequest {
        action: "update".into(),
        level: target.level,
        result: res.into(),
        reason,
        stalled_tasks: Vec::new(),
        duration_ms: audit::ms(started.elapsed()),
        active_level: now_active,
    };
    if let Err(e) = client.report(&report) {
        eprintln!("noreboot: reporting to {} failed: {e}", reg.url);
    }
    let rep = result?;
    Ok(UpdateReport {
        offered: target.level,
        summary: format!(
            "level {} ({}) applied, was {}",
            rep.level, rep.name, rep.previous
        ),
        applied: Some(rep),
    })
}

/// The target level's bundle: the cached one when it is the bundle the
/// server names (same sha256), else downloaded.
fn fetch(
    agent: &Agent,
    client: &Client,
    target: &protocol::TargetLevel,
) -> Result<Vec<u8>, crate::client::ServerError> {
    let cached = agent.store.bundle_path(&agent.build_id, target.level);
    if let Ok(b) = std::fs::read(&cached) {
        use sha2::Digest;
        if hex::encode(sha2::Sha256::digest(&b)) == target.sha256 {
            return Ok(b);
        }
    }
    client.bundle(&target.bundle_url, target.size, &target.sha256)
}

/// Verifies the downloaded bundle against the trusted keys and what the
/// server said it is, then applies it. A bundle refused here never
/// reached `apply`, so its refusal is audited here.
fn apply_target(
    agent: &Agent,
    reg: &Registration,
    target: &protocol::TargetLevel,
    bytes: &[u8],
    foreign: Foreign,
    started: std::time::Instant,
) -> Result<ApplyReport, AgentError> {
    let keys = agent.keys()?;
    let vb = bundle::open(bytes, &keys)
        .map_err(|e| AgentError::Refused(format!("level {} from {}: {e}", target.level, reg.url)))
        .and_then(|vb| {
            if vb.manifest.level != target.level || vb.manifest.kernel.build_id != agent.build_id {
                return Err(AgentError::Refused(format!(
                    "the server named level {} for build-id {}, the bundle is level {} for build-id {}",
                    target.level, agent.build_id, vb.manifest.level, vb.manifest.kernel.build_id
                )));
            }
            Ok(vb)
        });
    match vb {
        Ok(vb) => agent.apply(bytes, &vb, "update", foreign),
        Err(e) => {
            agent.log(
                "update",
                target.level,
                &target.name,
                "refused",
                started,
                e.to_string(),
            )?;
            Err(e)
        }
    }
}
