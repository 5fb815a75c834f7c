//! The APT repository the fleet installs and upgrades the agent from: the
//! repository's OpenPGP signing key (made once, kept in the database so
//! every server process signs with the same key) and the index files —
//! `Packages`, `Packages.gz`, and `Release` signed as `InRelease` and
//! `Release.gpg` — rendered from the uploaded packages
//! (`admin::packages`) when they change, not per request.
//!
//! Layout, under `/apt/`: `dists/stable/{InRelease,Release,Release.gpg}`,
//! `dists/stable/main/binary-amd64/Packages{,.gz}`,
//! `pool/main/n/noreboot/noreboot_<version>_<arch>.deb`, and the public key
//! at `key.asc` (armored) and `key.gpg` (binary), which clients name with
//! `signed-by`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, KeyType,
    SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize as _;
use pgp::types::{KeyDetails, Password};
use sqlx::Row;

use crate::admin::packages::AgentPackage;
use crate::context::Context;
use crate::error::{DbContext, Error};

/// The suite (and codename) clients name in their sources.
pub const SUITE: &str = "stable";
/// The one component.
pub const COMPONENT: &str = "main";
/// The one architecture indexed (`Architecture: all` packages are listed
/// in it too).
pub const ARCH: &str = "amd64";
/// The `shared_settings` row holding the signing key (armored secret key).
const KEY_SETTING: &str = "apt_signing_key";
/// The `shared_settings` row holding when the packages last changed: the
/// `Release` file's `Date`, the same in every process.
pub(crate) const CHANGED_SETTING: &str = "apt_repository_changed";

/// Why signing or key handling failed (rpgp's error, with what was done).
fn pgp_err(op: &str, e: impl std::fmt::Display) -> Error {
    Error::Task(format!("APT repository key: {op}: {e}"))
}

/// The repository's signing key.
#[derive(Debug)]
pub struct RepoKey {
    secret: SignedSecretKey,
    /// The public key, ASCII-armored (`key.asc`).
    pub public_armored: String,
    /// The public key, binary (`key.gpg`).
    pub public_binary: Vec<u8>,
    /// Its fingerprint, uppercase hex (what `gpg --show-keys` prints).
    pub fingerprint: String,
}

impl RepoKey {
    fn from_secret(secret: SignedSecretKey) -> Result<Self, Error> {
        let public = SignedPublicKey::from(secret.clone());
        let public_armored = public
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| pgp_err("armor the public key", e))?;
        let public_binary = public
            .to_bytes()
            .map_err(|e| pgp_err("serialize the public key", e))?;
        let fingerprint = format!("{:X}", secret.fingerprint());
        Ok(Self {
            secret,
            public_armored,
            public_binary,
            fingerprint,
        })
    }

    /// A new key: v4 Ed25519 (EdDSA legacy, algorithm 22), the form
    /// Debian 12's gpgv verifies, certifying and signing with the primary
    /// key alone.
    fn generate() -> Result<(Self, String), Error> {
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("noreboot-server APT repository".into());
        let params = params.build().map_err(|e| pgp_err("set up a new key", e))?;
        let secret = params
            .generate(rand::thread_rng())
            .map_err(|e| pgp_err("generate a new key", e))?;
        let armored = secret
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| pgp_err("armor the new key", e))?;
        Ok((Self::from_secret(secret)?, armored))
    }

    fn parse(armored: &str) -> Result<Self, Error> {
        let (secret, _) =
            SignedSecretKey::from_string(armored).map_err(|e| pgp_err("read the stored key", e))?;
        Self::from_secret(secret)
    }

    /// `text` as a cleartext-signed message (`InRelease`).
    pub fn clearsign(&self, text: &str) -> Result<String, Error> {
        CleartextSignedMessage::sign(rand::thread_rng(), text, &*self.secret, &Password::empty())
            .map_err(|e| pgp_err("sign InRelease", e))?
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| pgp_err("armor InRelease", e))
    }

    /// An armored detached signature of `bytes` (`Release.gpg`).
    pub fn detach_sign(&self, bytes: &[u8]) -> Result<String, Error> {
        DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &*self.secret,
            &Password::empty(),
            HashAlgorithm::Sha256,
            bytes,
        )
        .map_err(|e| pgp_err("sign Release", e))?
        .to_armored_string(ArmorOptions::default())
        .map_err(|e| pgp_err("armor Release.gpg", e))
    }
}

impl Context {
    /// The repository's signing key, made and stored on first use. Two
    /// processes making one at once both insert, and the first insert wins
    /// for both: each reads back the stored key.
    pub async fn repo_key(&self) -> Result<RepoKey, Error> {
        if let Some(k) = self.stored_repo_key().await? {
            return RepoKey::parse(&k);
        }
        let (_, armored) = tokio::task::spawn_blocking(RepoKey::generate)
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        sqlx::query(
            "INSERT INTO shared_settings (name, value, set_at, set_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(KEY_SETTING)
        .bind(&armored)
        .bind(self.clock.now())
        .bind(format!("pid {}", std::process::id()))
        .execute(self.db.pool())
        .await
        .ctx("store the APT repository key")?;
        let stored = self
            .stored_repo_key()
            .await?
            .ok_or_else(|| Error::Task("the APT repository key was not stored".into()))?;
        let key = RepoKey::parse(&stored)?;
        tracing::info!("made the APT repository signing key {}", key.fingerprint);
        Ok(key)
    }

    async fn stored_repo_key(&self) -> Result<Option<String>, Error> {
        sqlx::query("SELECT value FROM shared_settings WHERE name = $1")
            .bind(KEY_SETTING)
            .fetch_optional(self.db.pool())
            .await
            .ctx("read the APT repository key")?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()
            .ctx("read the APT repository key")
    }

    /// When the repository's packages last changed (Unix seconds), if ever.
    async fn repo_changed_at(&self) -> Result<Option<i64>, Error> {
        sqlx::query("SELECT value FROM shared_settings WHERE name = $1")
            .bind(CHANGED_SETTING)
            .fetch_optional(self.db.pool())
            .await
            .ctx("read when the repository changed")?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()
            .ctx("read when the repository changed")
            .map(|v| v.and_then(|v| v.parse().ok()))
    }
}

/// A file in the pool.
#[derive(Debug, Clone)]
pub struct PoolFile {
    /// The blob store's key.
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// The repository's index files as rendered for one set of packages.
#[derive(Debug)]
pub struct Index {
    /// What they were rendered from: when the packages last changed and
    /// their hashes.
    state: String,
    /// `dists/stable/Release`.
    pub release: String,
    /// `dists/stable/InRelease`.
    pub in_release: String,
    /// `dists/stable/Release.gpg`.
    pub release_gpg: String,
    /// `main/binary-amd64/Packages`.
    pub packages: String,
    /// `main/binary-amd64/Packages.gz`.
    pub packages_gz: Vec<u8>,
    /// The pool, by path under the repository root.
    pub pool: BTreeMap<String, PoolFile>,
    /// `Date:` of the Release file, as an HTTP date (`Last-Modified`).
    pub date: String,
}

/// The repository served: its key, loaded once, and the index files of
/// the last package set seen. Each request for an index reads the package
/// rows (a few) and renders again only if they changed, so processes on
/// one PostgreSQL database all serve the current set.
#[derive(Debug, Default)]
pub struct Repository {
    key: tokio::sync::OnceCell<Arc<RepoKey>>,
    index: Mutex<Option<Arc<Index>>>,
}

impl Repository {
    /// The signing key (made on first use).
    pub async fn key(&self, ctx: &Context) -> Result<Arc<RepoKey>, Error> {
        self.key
            .get_or_try_init(|| async { ctx.repo_key().await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The index files for the packages uploaded now.
    pub async fn index(&self, ctx: &Context) -> Result<Arc<Index>, Error> {
        let key = self.key(ctx).await?;
        let packages = ctx.agent_packages().await?;
        let changed = ctx.repo_changed_at().await?.unwrap_or(0);
        let mut state = changed.to_string();
        for p in &packages {
            state.push(' ');
            state.push_str(&p.sha256);
        }
        if let Some(i) = self.cached(&state) {
            return Ok(i);
        }
        let index = Arc::new(render(&key, &packages, changed, state)?);
        *self.index.lock().unwrap_or_else(|e| e.into_inner()) = Some(index.clone());
        Ok(index)
    }

    fn cached(&self, state: &str) -> Option<Arc<Index>> {
        let guard = self.index.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|i| i.state == state).cloned()
    }
}

/// The pool path of a package file: `pool/main/n/noreboot/noreboot_1.2_amd64.deb`
/// (the version's epoch is left out of file names, as Debian does).
pub fn pool_path(package: &str, version: &str, architecture: &str) -> String {
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    let first = package.get(..1).unwrap_or("_");
    format!("pool/{COMPONENT}/{first}/{package}/{package}_{version}_{architecture}.deb")
}

fn render(
    key: &RepoKey,
    packages: &[AgentPackage],
    changed: i64,
    state: String,
) -> Result<Index, Error> {
    let mut sorted: Vec<&AgentPackage> = packages.iter().collect();
    sorted.sort_by(|a, b| {
        let v = |p: &AgentPackage| p.version.parse::<debversion::Version>().ok();
        (&a.package, v(a), &a.architecture).cmp(&(&b.package, v(b), &b.architecture))
    });
    let mut text = String::new();
    let mut pool = BTreeMap::new();
    for p in sorted {
        text.push_str(&p.control);
        text.push_str(&format!(
            "\nFilename: {}\nSize: {}\nSHA256: {}\n\n",
            p.filename, p.size, p.sha256
        ));
        pool.insert(
            p.filename.clone(),
            PoolFile {
                sha256: p.sha256.clone(),
                size: p.size as u64,
            },
        );
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes())
        .and_then(|_| gz.try_finish())
        .map_err(|e| Error::Task(format!("compress Packages: {e}")))?;
    let packages_gz = gz
        .finish()
        .map_err(|e| Error::Task(format!("compress Packages: {e}")))?;
    let dir = format!("{COMPONENT}/binary-{ARCH}");
    let date = rfc2822(changed);
    let release = format!(
        "Origin: noreboot\nLabel: noreboot\nSuite: {SUITE}\nCodename: {SUITE}\nDate: {date}\n\
         Architectures: {ARCH}\nComponents: {COMPONENT}\n\
         Description: the noreboot agent, from its noreboot-server\nSHA256:\n \
         {} {} {dir}/Packages\n {} {} {dir}/Packages.gz\n",
        crate::blobs::sha256_hex(text.as_bytes()),
        text.len(),
        crate::blobs::sha256_hex(&packages_gz),
        packages_gz.len(),
    );
    Ok(Index {
        state,
        in_release: key.clearsign(&release)?,
        release_gpg: key.detach_sign(release.as_bytes())?,
        release,
        packages: text,
        packages_gz,
        pool,
        date: http_date(changed),
    })
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31) (Howard
/// Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as usize, d)
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn date_parts(t: i64) -> (&'static str, i64, &'static str, i64, String) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    let hms = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    (
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) % 12],
        y,
        hms,
    )
}

/// A Release file's `Date:` (RFC 2822 in UTC, as dak writes it).
fn rfc2822(t: i64) -> String {
    let (wd, d, m, y, hms) = date_parts(t);
    format!("{wd}, {d:02} {m} {y} {hms} UTC")
}

/// An HTTP date (`Last-Modified`).
fn http_date(t: i64) -> String {
    let (wd, d, m, y, hms) = date_parts(t);
    format!("{wd}, {d:02} {m} {y} {hms} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        // `date -u -d @1796000000 -R`
        assert_eq!(http_date(1_796_000_000), "Mon, 30 Nov 2026 00:53:20 GMT");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 UTC");
    }

    #[test]
    fn pool_paths() {
        assert_eq!(
            pool_path("noreboot", "1:0.2.0-1", "amd64"),
            "pool/main/n/noreboot/noreboot_0.2.0-1_amd64.deb"
        );
    }
}
