//! The agent's configuration: `/etc/noreboot/config.toml`, every key
//! optional with the defaults documented in `packaging/config.toml`. Unknown
//! keys are errors (a typo must not silently fall back to a default), and
//! every error names the file and the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the configuration lives unless `--config` or `NOREBOOT_CONFIG`
/// says otherwise.
pub const DEFAULT_PATH: &str = "/etc/noreboot/config.toml";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Cached bundles, state, audit log, scanner files.
    pub state_dir: PathBuf,
    /// Directory of trusted minisign public keys (`*.pub`).
    pub trusted_keys: PathBuf,
    /// Transition watching.
    pub transition: Transition,
    /// Checks after a transition.
    pub health: Health,
    /// The agent lock.
    pub lock: Lock,
    /// Where `update` looks for new levels.
    pub update: Update,
    /// The noreboot-server this host registers with.
    pub server: Server,
    /// Roots of the kernel's interfaces (tests point them elsewhere).
    pub kernel: KernelPaths,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: "/var/lib/noreboot".into(),
            trusted_keys: "/etc/noreboot/trusted.d".into(),
            transition: Transition::default(),
            health: Health::default(),
            lock: Lock::default(),
            update: Update::default(),
            server: Server::default(),
            kernel: KernelPaths::default(),
        }
    }
}

/// The stall policy: wait, then signal the tasks holding the transition
/// up, then give up, roll back and report them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transition {
    /// How long to wait before asking blocking tasks to move (through the
    /// kernel's `signal` file; kernels from 5.x on have none and signal by
    /// themselves every 15 s of a transition).
    #[serde(with = "duration")]
    pub signal_after: Duration,
    /// How long a transition may take in all before it is reversed.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for Transition {
    fn default() -> Self {
        Transition {
            signal_after: Duration::from_secs(15),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What must hold after a transition for a level to count as applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// A command run with `/bin/sh -c` after the transition; a non-zero
    /// exit reverts to the previous level. Empty: none.
    pub command: String,
    /// Limit for the command.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            command: String::new(),
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// One agent at a time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lock {
    /// How long a second agent waits for the first before giving up.
    #[serde(with = "duration")]
    pub wait: Duration,
}

impl Default for Lock {
    fn default() -> Self {
        Lock {
            wait: Duration::from_secs(120),
        }
    }
}

/// Sources of new levels.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Update {
    /// A directory of bundles (a mirror for air-gapped hosts); `update`
    /// takes the highest level for the running kernel's build-id.
    pub directory: Option<PathBuf>,
}

/// Talking to noreboot-server. The server's URL and the host's token come
/// from `noreboot register` (kept in `<state_dir>/server.json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// A PEM file of CA certificates to trust instead of the public roots
    /// (an on-premises server with its own CA).
    pub ca: Option<PathBuf>,
    /// Limit for one request.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Tries per request when the server cannot be reached or is busy.
    pub attempts: u32,
    /// Wait before the first retry; doubled each time.
    #[serde(with = "duration")]
    pub backoff: Duration,
    /// Longest wait between retries.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            ca: None,
            timeout: Duration::from_secs(30),
            attempts: 5,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Where the kernel's interfaces are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelPaths {
    /// procfs.
    pub proc: PathBuf,
    /// sysfs.
    pub sys: PathBuf,
    /// devtmpfs (for `kmsg`).
    pub dev: PathBuf,
}

impl Default for KernelPaths {
    fn default() -> Self {
        KernelPaths {
            proc: "/proc".into(),
            sys: "/sys".into(),
            dev: "/dev".into(),
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML or not our keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with the key and line.
        message: String,
    },
    /// Values that make no sense together.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads `path`; a missing file at the default path means defaults (a
    /// fresh install works without one), a missing file named explicitly
    /// is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if cfg.server.attempts == 0 {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "server.attempts must be at least 1".into(),
            });
        }
        if cfg.transition.signal_after > cfg.transition.timeout {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "transition.signal_after ({}) is longer than transition.timeout ({})",
                    humantime::format_duration(cfg.transition.signal_after),
                    humantime::format_duration(cfg.transition.timeout)
                ),
            });
        }
        Ok(cfg)
    }
}

/// Durations as humantime strings ("15s", "2m 30s").
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), text).unwrap();
        Config::load(t.path(), true)
    }

    #[test]
    fn the_packaged_example_is_the_defaults() {
        let c = load(include_str!("../packaging/config.toml")).unwrap();
        let d = Config::default();
        assert_eq!(c.state_dir, d.state_dir);
        assert_eq!(c.trusted_keys, d.trusted_keys);
        assert_eq!(c.transition.signal_after, d.transition.signal_after);
        assert_eq!(c.transition.timeout, d.transition.timeout);
        assert_eq!(c.lock.wait, d.lock.wait);
        assert_eq!(c.health.command_timeout, d.health.command_timeout);
        assert_eq!(c.server.attempts, d.server.attempts);
        assert_eq!(c.server.backoff, d.server.backoff);
        assert_eq!(c.server.max_backoff, d.server.max_backoff);
        assert_eq!(c.server.timeout, d.server.timeout);
    }

    #[test]
    fn durations_and_errors_name_the_key() {
        let c = load("[transition]\nsignal_after = \"2s\"\ntimeout = \"1m\"\n").unwrap();
        assert_eq!(c.transition.timeout, Duration::from_secs(60));
        let e = load("[transition]\ntimeout = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
        let e = load("[transiton]\n").unwrap_err();
        assert!(e.to_string().contains("transiton"), "{e}");
        let e = load("[transition]\nsignal_after = \"2m\"\ntimeout = \"1m\"\n").unwrap_err();
        assert!(e.to_string().contains("signal_after"), "{e}");
    }

    #[test]
    fn missing_default_file_is_defaults_but_explicit_is_an_error() {
        assert!(Config::load(Path::new("/nonexistent/noreboot.toml"), false).is_ok());
        assert!(Config::load(Path::new("/nonexistent/noreboot.toml"), true).is_err());
    }
}
