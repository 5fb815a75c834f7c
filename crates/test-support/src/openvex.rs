//! Validation of OpenVEX documents against the OpenVEX v0.2.0 JSON schema
//! (vendored in `data/`, see its README), by a real JSON-schema validator:
//! Python's `jsonschema` (Debian: `python3-jsonschema`), Draft 2020-12,
//! with format checking (`date-time`; `uri` only where `rfc3987` is
//! installed).

use std::io::Write;
use std::process::{Command, Stdio};

/// The vendored schema's path.
pub const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/openvex_json_schema.json");

const CHECK: &str = r#"
import json, sys
from jsonschema import Draft202012Validator, FormatChecker
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
checker = FormatChecker()
if "date-time" not in checker.checkers:
    # Debian 12's jsonschema checks date-time only with a module Debian
    # does not package: RFC 3339 by hand then.
    import datetime, re
    @checker.checks("date-time", raises=ValueError)
    def date_time(s):
        if not isinstance(s, str):
            return True
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", s):
            raise ValueError(f"{s!r} is not RFC 3339")
        datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
        return True
validator = Draft202012Validator(schema, format_checker=checker)
bad = 0
for i, doc in enumerate(json.load(sys.stdin)):
    for e in sorted(validator.iter_errors(doc), key=str):
        bad += 1
        print("document", i, "/".join(str(p) for p in e.absolute_path) or "(top)", ":", e.message)
sys.exit(1 if bad else 0)
"#;

/// Debian's python3, where `python3-jsonschema` installs (a `python3`
/// earlier on PATH, pyenv's say, may lack it); else whichever is on PATH.
fn python3() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Checks `doc` (JSON text) against the OpenVEX schema; the error lists
/// each violation with its path. Panics when python3 or its `jsonschema`
/// is missing: a test must not pass for want of its validator.
pub fn validate(doc: &str) -> Result<(), String> {
    validate_all(&[doc])
}

/// [`validate`] for several documents in one run of the validator (its
/// start takes a third of a second); errors name the document by index.
pub fn validate_all(docs: &[&str]) -> Result<(), String> {
    let mut list = String::from("[");
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(d);
    }
    list.push(']');
    let mut child = Command::new(python3())
        .args(["-c", CHECK, SCHEMA])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with python3-jsonschema) is needed to validate OpenVEX documents");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(list.as_bytes())
        .expect("write the document to the validator");
    let out = child.wait_with_output().expect("run the validator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Traceback") || stderr.contains("JSONDecodeError"),
        "the OpenVEX validator failed to run: {stderr}"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The validator refuses what the schema forbids, so a passing
    /// document means something.
    #[test]
    fn refuses_what_the_schema_forbids() {
        let good = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"urn:x:1","author":"a",
            "timestamp":"2025-01-01T00:00:00Z","version":1,
            "statements":[{"vulnerability":{"name":"CVE-2099-0001"},"status":"fixed"}]}"#;
        validate(good).unwrap();
        let empty = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"urn:x:1","author":"a",
            "timestamp":"2025-01-01T00:00:00Z","version":1,"statements":[]}"#;
        let bad = [
            (
                good.replace(r#""status":"fixed""#, r#""status":"affected""#),
                "action_statement",
            ),
            (
                good.replace(r#""status":"fixed""#, r#""status":"patched""#),
                "patched",
            ),
            (good.replace(r#","version":1"#, ""), "version"),
            (
                good.replace(r#""2025-01-01T00:00:00Z""#, r#""yesterday""#),
                "date-time",
            ),
            (empty.to_string(), "statements"),
        ];
        let docs: Vec<&str> = bad.iter().map(|(d, _)| d.as_str()).collect();
        let e = validate_all(&docs).unwrap_err();
        for (i, (_, why)) in bad.iter().enumerate() {
            let line = e
                .lines()
                .find(|l| l.starts_with(&format!("document {i} ")))
                .unwrap_or_else(|| panic!("document {i} ({why}) passed: {e}"));
            assert!(line.contains(why), "{why}: {line}");
        }
    }
}
