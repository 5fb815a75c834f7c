//! Which packages, in which versions, make one kernel workspace. The image
//! decides the Debian version; headers, their common part and the source
//! must have exactly that version, and kbuild must satisfy the relation the
//! headers package declares (Debian lets it be newer). Pure logic over what
//! an [`Archive`] reports, so it is unit-tested on canned archive answers.

use debversion::Version;

use crate::archive::{Archive, PackageInfo};
use crate::release::Release;
use crate::{Error, Result};

/// What a package contributes to a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// vmlinuz, config, modules.
    Image,
    /// A part of a split image (`linux-base-`, `linux-binary-`,
    /// `linux-modules-<release>`), which the image package depends on.
    ImagePart,
    /// Flavour-specific headers, `.config`, Module.symvers.
    Headers,
    /// Flavour-independent headers.
    HeadersCommon,
    /// kbuild scripts and host tools.
    Kbuild,
    /// The source tarball.
    Source,
    /// Unstripped vmlinux and the real System.map.
    Dbg,
}

/// One package chosen for a workspace.
#[derive(Debug, Clone)]
pub struct PlannedPackage {
    /// Its role.
    pub role: Role,
    /// Name, version, sizes.
    pub info: PackageInfo,
}

/// The package set of one release.
#[derive(Debug, Clone)]
pub struct PackagePlan {
    /// The release.
    pub release: Release,
    /// The Debian version of image, headers and source.
    pub version: Version,
    /// Image (and its parts), headers, headers-common, kbuild, source.
    pub packages: Vec<PlannedPackage>,
    /// The debug package, when the archive has it in the same version.
    pub dbg: Option<PackageInfo>,
}

impl PackagePlan {
    /// Bytes to download plus bytes unpacked, for the space check.
    pub fn space_needed(&self) -> u64 {
        self.packages
            .iter()
            .map(|p| p.info.size + p.info.installed_size)
            .sum()
    }

    /// The package of `role`.
    pub fn get(&self, role: Role) -> Option<&PackageInfo> {
        self.packages
            .iter()
            .find(|p| p.role == role)
            .map(|p| &p.info)
    }
}

/// A version relation from a `Depends` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Package name.
    pub package: String,
    /// Operator and version, when constrained.
    pub constraint: Option<(String, Version)>,
}

impl Relation {
    /// Whether `v` satisfies the constraint.
    pub fn satisfied_by(&self, v: &Version) -> bool {
        match &self.constraint {
            None => true,
            Some((op, want)) => match op.as_str() {
                ">=" => v >= want,
                "<=" => v <= want,
                "=" => v == want,
                ">>" => v > want,
                "<<" => v < want,
                _ => false,
            },
        }
    }
}

/// Parses a `Depends` field into its relations (first alternative of each).
pub fn parse_depends(field: &str) -> Vec<Relation> {
    field
        .split(',')
        .filter_map(|group| {
            let first = group.split('|').next()?.trim();
            if first.is_empty() {
                return None;
            }
            let (name, rest) = match first.find('(') {
                Some(i) => (first[..i].trim(), Some(&first[i + 1..])),
                None => (first, None),
            };
            let name = name.split(':').next().unwrap_or(name).to_string();
            let constraint = rest.and_then(|r| {
                let r = r.trim_end().trim_end_matches(')').trim();
                let op_len = r.bytes().take_while(|b| b"<>=".contains(b)).count();
                let (op, ver) = r.split_at(op_len);
                ver.trim().parse().ok().map(|v| (op.to_string(), v))
            });
            Some(Relation {
                package: name,
                constraint,
            })
        })
        .collect()
}

/// Works out the package set of `release` from what `archive` offers.
pub fn plan(archive: &dyn Archive, release: &Release) -> Result<PackagePlan> {
    let names = [
        release.image_package(),
        release.headers_package(),
        release.headers_common_package(),
        release.kbuild_package(),
        release.source_package(),
        release.dbg_package(),
    ];
    let infos = archive.show(&names)?;
    let of =
        |name: &str| -> Vec<&PackageInfo> { infos.iter().filter(|i| i.package == name).collect() };
    let versions = |list: &[&PackageInfo]| -> Vec<String> {
        let mut v: Vec<&Version> = list.iter().map(|i| &i.version).collect();
        v.sort();
        v.dedup();
        v.iter().map(|v| v.to_string()).collect()
    };

    let images = of(&names[0]);
    let Some(image) = images
        .iter()
        .max_by(|a, b| a.version.cmp(&b.version))
        .copied()
    else {
        let available = crate::discover::release_names(archive, release.flavour())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        return Err(Error::UnknownRelease {
            release: release.to_string(),
            searched: archive.searched(),
            package: names[0].clone(),
            available,
        });
    };
    let version = image.version.clone();
    let exact = |role: Role, name: &str| -> Result<PlannedPackage> {
        let list = of(name);
        list.iter()
            .find(|i| i.version == version)
            .map(|i| PlannedPackage {
                role,
                info: (*i).clone(),
            })
            .ok_or_else(|| Error::VersionMismatch {
                release: release.to_string(),
                package: name.to_string(),
                wanted: format!("= {version}"),
                reason: format!("the image {} is {version}", names[0]),
                available: versions(&list),
            })
    };
    // Newer images are an empty package depending on their parts, each
    // of exactly the image's version.
    let part_names = release.image_part_packages();
    let wanted_parts: Vec<String> = parse_depends(&image.depends)
        .into_iter()
        .map(|r| r.package)
        .filter(|p| part_names.contains(p))
        .collect();
    let part_infos = if wanted_parts.is_empty() {
        Vec::new()
    } else {
        archive.show(&wanted_parts)?
    };
    let mut parts = Vec::new();
    for name in &wanted_parts {
        let list: Vec<&PackageInfo> = part_infos.iter().filter(|i| &i.package == name).collect();
        let info =
            list.iter()
                .find(|i| i.version == version)
                .ok_or_else(|| Error::VersionMismatch {
                    release: release.to_string(),
                    package: name.clone(),
                    wanted: format!("= {version}"),
                    reason: format!("the image {} depends on it", names[0]),
                    available: versions(&list),
                })?;
        parts.push(PlannedPackage {
            role: Role::ImagePart,
            info: (*info).clone(),
        });
    }
    let headers = exact(Role::Headers, &names[1])?;
    let common = exact(Role::HeadersCommon, &names[2])?;
    let source = exact(Role::Source, &names[4])?;

    // kbuild: whatever the headers package asks for. Debian 12's own 6.1
    // kernels share `linux-kbuild-6.1` and often only a newer one is served,
    // which the relation allows; backported kernels name a per-ABI package
    // (`linux-kbuild-6.12.117+deb12`).
    let relation = parse_depends(&headers.info.depends)
        .into_iter()
        .find(|r| r.package.starts_with("linux-kbuild-"))
        .unwrap_or(Relation {
            package: names[3].clone(),
            constraint: Some(("=".into(), version.clone())),
        });
    let kbuild_name = relation.package.clone();
    let extra;
    let kbuilds: Vec<&PackageInfo> = if kbuild_name == names[3] {
        of(&names[3])
    } else {
        extra = archive.show(std::slice::from_ref(&kbuild_name))?;
        extra.iter().filter(|i| i.package == kbuild_name).collect()
    };
    let fitting: Vec<&&PackageInfo> = kbuilds
        .iter()
        .filter(|i| relation.satisfied_by(&i.version))
        .collect();
    let kbuild = fitting
        .iter()
        .find(|i| i.version == version)
        .or_else(|| fitting.iter().max_by(|a, b| a.version.cmp(&b.version)))
        .map(|i| PlannedPackage {
            role: Role::Kbuild,
            info: (**i).clone(),
        })
        .ok_or_else(|| Error::VersionMismatch {
            release: release.to_string(),
            package: kbuild_name.clone(),
            wanted: relation
                .constraint
                .as_ref()
                .map(|(op, v)| format!("{op} {v}"))
                .unwrap_or_else(|| "any version".into()),
            reason: format!("{} depends on it", names[1]),
            available: versions(&kbuilds),
        })?;
    let dbg = of(&names[5])
        .into_iter()
        .find(|i| i.version == version)
        .cloned();

    let mut packages = vec![PlannedPackage {
        role: Role::Image,
        info: image.clone(),
    }];
    packages.extend(parts);
    packages.extend([headers, common, kbuild, source]);
    Ok(PackagePlan {
        release: release.clone(),
        version,
        packages,
        dbg,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::archive::parse_stanzas;
    use std::path::{Path, PathBuf};

    /// An archive answering from canned `apt-cache show` text, for the
    /// version logic only (downloads are exercised against real apt).
    pub(crate) struct Canned(pub Vec<PackageInfo>);

    impl Canned {
        pub(crate) fn new(entries: &[(&str, &str, &str)]) -> Canned {
            let text: String = entries
                .iter()
                .map(|(p, v, d)| {
                    format!(
                        "Package: {p}\nVersion: {v}\nSize: 10\nInstalled-Size: 1\nDepends: {d}\n\n"
                    )
                })
                .collect();
            Canned(parse_stanzas(&text).unwrap())
        }
    }

    impl Archive for Canned {
        fn show(&self, packages: &[String]) -> Result<Vec<PackageInfo>> {
            Ok(self
                .0
                .iter()
                .filter(|i| packages.contains(&i.package))
                .cloned()
                .collect())
        }
        fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
            let mut v: Vec<String> = self
                .0
                .iter()
                .map(|i| i.package.clone())
                .filter(|p| p.starts_with(prefix))
                .collect();
            v.sort();
            v.dedup();
            Ok(v)
        }
        fn download(&self, _: &str, _: &Version, _: &Path) -> Result<PathBuf> {
            unreachable!("the version logic never downloads")
        }
    }

    pub(crate) fn debian_archive() -> Canned {
        Canned::new(&[
            ("linux-image-6.1.0-47-cloud-amd64", "6.1.170-3", ""),
            ("linux-headers-6.1.0-47-cloud-amd64", "6.1.170-3", "linux-headers-6.1.0-47-common (= 6.1.170-3), linux-kbuild-6.1 (>= 6.1.170-3), linux-compiler-gcc-12-x86"),
            ("linux-headers-6.1.0-47-common", "6.1.170-3", ""),
            ("linux-image-6.1.0-47-cloud-amd64-dbg", "6.1.170-3", ""),
            ("linux-kbuild-6.1", "6.1.192-3", ""),
            ("linux-kbuild-6.1", "6.1.176-1", ""),
            ("linux-source-6.1", "6.1.192-3", ""),
            ("linux-source-6.1", "6.1.170-3", ""),
            // 48: source gone from the archive.
            ("linux-image-6.1.0-48-cloud-amd64", "6.1.176-1", ""),
            ("linux-headers-6.1.0-48-cloud-amd64", "6.1.176-1", "linux-kbuild-6.1 (>= 6.1.176-1)"),
            ("linux-headers-6.1.0-48-common", "6.1.176-1", ""),
            // 57: complete, newest.
            ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3", ""),
            ("linux-headers-6.1.0-57-cloud-amd64", "6.1.192-3", "linux-kbuild-6.1 (>= 6.1.192-3)"),
            ("linux-headers-6.1.0-57-common", "6.1.192-3", ""),
            // 50: headers of another version.
            ("linux-image-6.1.0-50-cloud-amd64", "6.1.180-1", ""),
            ("linux-headers-6.1.0-50-cloud-amd64", "6.1.180-2", "linux-kbuild-6.1 (>= 6.1.180-1)"),
            ("linux-headers-6.1.0-50-common", "6.1.180-1", ""),
            // a meta package that is no release.
            ("linux-image-cloud-amd64", "6.1.192-3", ""),
        ])
    }

    #[test]
    fn plans_the_pinned_kernel_with_a_newer_kbuild() {
        let a = debian_archive();
        let p = plan(&a, &"6.1.0-47-cloud-amd64".parse().unwrap()).unwrap();
        assert_eq!(p.version.to_string(), "6.1.170-3");
        assert_eq!(
            p.get(Role::Kbuild).unwrap().version.to_string(),
            "6.1.192-3"
        );
        assert_eq!(
            p.get(Role::Source).unwrap().version.to_string(),
            "6.1.170-3"
        );
        assert_eq!(
            p.get(Role::HeadersCommon).unwrap().package,
            "linux-headers-6.1.0-47-common"
        );
        assert!(p.dbg.is_some());
        assert_eq!(p.space_needed(), 5 * (10 + 1024));
    }

    #[test]
    fn missing_source_version_is_a_mismatch_naming_what_exists() {
        let err = plan(&debian_archive(), &"6.1.0-48-cloud-amd64".parse().unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::VersionMismatch { .. }), "{msg}");
        assert!(msg.contains("linux-source-6.1 = 6.1.176-1"), "{msg}");
        assert!(
            msg.contains("the archive has 6.1.170-3, 6.1.192-3"),
            "{msg}"
        );
    }

    #[test]
    fn headers_of_another_version_are_refused() {
        let err = plan(&debian_archive(), &"6.1.0-50-cloud-amd64".parse().unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("linux-headers-6.1.0-50-cloud-amd64 = 6.1.180-1"),
            "{msg}"
        );
        assert!(msg.contains("the archive has 6.1.180-2"), "{msg}");
    }

    #[test]
    fn unknown_release_lists_what_the_archive_offers() {
        let err = plan(&debian_archive(), &"6.1.0-99-cloud-amd64".parse().unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::UnknownRelease { .. }), "{msg}");
        assert!(msg.contains("6.1.0-47-cloud-amd64, 6.1.0-48-cloud-amd64, 6.1.0-50-cloud-amd64, 6.1.0-57-cloud-amd64"), "{msg}");
    }

    #[test]
    fn kbuild_too_old_is_a_mismatch() {
        let a = Canned::new(&[
            ("linux-image-6.1.0-47-cloud-amd64", "6.1.170-3", ""),
            (
                "linux-headers-6.1.0-47-cloud-amd64",
                "6.1.170-3",
                "linux-kbuild-6.1 (>= 6.1.170-3)",
            ),
            ("linux-headers-6.1.0-47-common", "6.1.170-3", ""),
            ("linux-source-6.1", "6.1.170-3", ""),
            ("linux-kbuild-6.1", "6.1.160-1", ""),
        ]);
        let msg = plan(&a, &"6.1.0-47-cloud-amd64".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("linux-kbuild-6.1 >= 6.1.170-3"), "{msg}");
        assert!(msg.contains("6.1.160-1"), "{msg}");
    }

    #[test]
    fn backported_kernel_names_its_own_kbuild() {
        let a = Canned::new(&[
            ("linux-image-6.12.117+deb12-cloud-amd64", "6.12.117-1~deb12u1", ""),
            ("linux-headers-6.12.117+deb12-cloud-amd64", "6.12.117-1~deb12u1", "linux-base (>= 4.12~), linux-headers-6.12.117+deb12-common (= 6.12.117-1~deb12u1), linux-kbuild-6.12.117+deb12, gcc-12"),
            ("linux-headers-6.12.117+deb12-common", "6.12.117-1~deb12u1", ""),
            ("linux-kbuild-6.12.117+deb12", "6.12.117-1~deb12u1", ""),
            ("linux-source-6.12", "6.12.115-2~deb12u1", ""),
            ("linux-source-6.12", "6.12.117-1~deb12u1", ""),
        ]);
        let p = plan(&a, &"6.12.117+deb12-cloud-amd64".parse().unwrap()).unwrap();
        let k = p.get(Role::Kbuild).unwrap();
        assert_eq!(k.package, "linux-kbuild-6.12.117+deb12");
        assert_eq!(
            p.get(Role::Source).unwrap().version.to_string(),
            "6.12.117-1~deb12u1"
        );
    }

    #[test]
    fn depends_relations() {
        let r = parse_depends("a (= 1.0), b (>= 2:1.0-1) | c, d, e:any (<< 3)");
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].package, "a");
        assert!(r[1].satisfied_by(&"2:1.0-1".parse().unwrap()));
        assert!(!r[1].satisfied_by(&"1.5".parse().unwrap()));
        assert!(r[2].constraint.is_none());
        assert_eq!(r[3].package, "e");
        assert!(r[3].satisfied_by(&"2".parse().unwrap()));
        // Debian ordering: ~ sorts before anything, epochs dominate.
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("6.1.170-3") < v("6.1.192-3"));
        assert!(v("6.1.170~rc1-1") < v("6.1.170-1"));
        assert!(v("1:6.1") > v("6.12"));
    }
}
