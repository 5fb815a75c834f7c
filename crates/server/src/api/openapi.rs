//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 description of every route,
//! written by hand from one table ([`OPS`]) rather than generated: the
//! handlers take bodies from `protocol` and `serde_json` values, so a
//! derive-based generator would need annotations on every type for little
//! gain. The integration test `openapi` keeps the table honest: it checks
//! that every route in `router()` is listed and every listed route exists.

use serde_json::{json, Map, Value};

/// Who may call an operation.
#[derive(Debug, Clone, Copy)]
enum Auth {
    /// Anyone.
    None,
    /// A host token.
    Host,
    /// Any admin token (admin or read-only).
    AdminRead,
    /// An admin token with the admin role.
    AdminWrite,
    /// The dashboard's session cookie (a login sets it).
    Cookie,
    /// Open, or the `--metrics-token` bearer token when configured.
    Metrics,
}

/// One operation: method, path, summary, who, query parameters, request
/// body schema (a `components.schemas` name), success status and type.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    query: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    ok: (u16, &'static str),
}

const JSON: &str = "application/json";
const REPORT_Q: &[(&str, &str)] = &[
    ("format", "`json` (default) or `csv`"),
    ("policy_days", "policy in days (default: the server's, 30)"),
    (
        "stale_hours",
        "hours without check-in after which a host is stale",
    ),
];

const PAGE_LIMIT: (&str, &str) = (
    "limit",
    "rows per page, 1 to 1000 (default 100); out of range: 400",
);
const PAGE_CURSOR: (&str, &str) = (
    "cursor",
    "where the page starts: the `next` or `prev` of an earlier answer (opaque; one this list did not hand out: 400). The answer's `Link` header carries the same as URLs (rel=\"next\", rel=\"prev\")",
);
const HOST_FILTERS: [(&str, &str); 7] = [
    ("feed", "only hosts following this feed"),
    ("kernel", "only hosts whose kernel build-id starts with this, or whose release (`uname -r`) is exactly this"),
    ("level", "only hosts at this applied level"),
    ("tag", "only hosts with this tag (exact)"),
    ("hostname", "only hosts whose hostname starts with this (case matters)"),
    ("status", "`protected`, `exposed` or `unsupported` (see Compliance)"),
    ("stale", "`true`: only hosts without a check-in within the staleness threshold; `false`: only the others"),
];
const HOSTS_Q: &[(&str, &str)] = &[
    PAGE_LIMIT,
    PAGE_CURSOR,
    HOST_FILTERS[0],
    HOST_FILTERS[1],
    HOST_FILTERS[2],
    HOST_FILTERS[3],
    HOST_FILTERS[4],
    HOST_FILTERS[5],
    HOST_FILTERS[6],
];
const HOST_REPORT_Q: &[(&str, &str)] = &[
    ("format", "`json` (default: one page, as the host list) or `csv` (the whole report, streamed; no limit or cursor)"),
    ("policy_days", "policy in days (default: the server's, 30)"),
    (
        "stale_hours",
        "hours without check-in after which a host is stale",
    ),
    ("limit", "hosts per page, 1 to 1000 (default 100); JSON only"),
    PAGE_CURSOR,
    HOST_FILTERS[0],
    HOST_FILTERS[1],
    HOST_FILTERS[2],
    HOST_FILTERS[3],
    HOST_FILTERS[4],
    HOST_FILTERS[5],
    HOST_FILTERS[6],
];

/// Every operation the server answers.
const OPS: &[Op] = &[
    Op {
        method: "post",
        path: "/api/v1/register",
        summary:
            "Register a host with a registration key; answers its token (rate limited per address)",
        auth: Auth::None,
        query: &[],
        body: Some("RegisterRequest"),
        ok: (201, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/checkin",
        summary: "Record the host's state; answers its target level",
        auth: Auth::Host,
        query: &[],
        body: Some("CheckinRequest"),
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/bundles/{sha256}",
        summary: "Download a bundle of the host's kernel",
        auth: Auth::Host,
        query: &[],
        body: None,
        ok: (200, "application/octet-stream"),
    },
    Op {
        method: "post",
        path: "/api/v1/report",
        summary: "Report what the host did with a level",
        auth: Auth::Host,
        query: &[],
        body: Some("ReportRequest"),
        ok: (204, ""),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/hosts",
        summary: "Active hosts, one page by hostname then id: {hosts, next, prev}",
        auth: Auth::AdminRead,
        query: HOSTS_Q,
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/hosts/retired",
        summary: "Retired hosts, most recently retired first, one page: {hosts, next, prev}",
        auth: Auth::AdminRead,
        query: &[PAGE_LIMIT, PAGE_CURSOR],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/hosts/{host}/move",
        summary: "Move a host (id, or a hostname one active host has) to another feed; its next check-in gets that feed's level",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("MoveHost"),
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/hosts/{host}/tags",
        summary: "Replace a host's tags (`[]` clears them)",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("HostTags"),
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/hosts/{host}/retire",
        summary: "Retire a decommissioned host: its token stops working, it leaves the host list and the reports, its reports are kept",
        auth: Auth::AdminWrite,
        query: &[],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/reports",
        summary: "Host reports, newest first, one page: {reports, next, prev}",
        auth: Auth::AdminRead,
        query: &[
            ("host", "only this host id"),
            ("result", "only reports with this result (`applied`, `failed`, ...)"),
            PAGE_LIMIT,
            PAGE_CURSOR,
        ],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/reports/compliance",
        summary: "Every host x CVE exposure with days exposed and policy breach, by hostname, host id and CVE; as JSON one page of exposed hosts' exposures: {exposures, next, prev}",
        auth: Auth::AdminRead,
        query: HOST_REPORT_Q,
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/reports/hosts",
        summary: "Each host's compliance standing, by hostname then id; as JSON one page: {hosts, next, prev}",
        auth: Auth::AdminRead,
        query: HOST_REPORT_Q,
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/reports/cves",
        summary: "Each CVE across the fleet",
        auth: Auth::AdminRead,
        query: REPORT_Q,
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/reports/summary",
        summary: "Fleet compliance summary",
        auth: Auth::AdminRead,
        query: REPORT_Q,
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/kernels",
        summary: "Kernels with published levels",
        auth: Auth::AdminRead,
        query: &[],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/kernels/reported",
        summary: "Kernel builds active hosts run, as a bare array of {release, version, build_id, hosts, newest_level}; newest_level is null for a build no published level covers",
        auth: Auth::AdminRead,
        query: &[(
            "uncovered",
            "`true`: only builds with no published level (`false`, the default: all); any other parameter is refused with 400",
        )],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/levels",
        summary: "Published levels with CVEs and feeds",
        auth: Auth::AdminRead,
        query: &[("kernel", "only this build-id")],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/feeds",
        summary: "Feeds",
        auth: Auth::AdminRead,
        query: &[],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/feeds",
        summary: "Create a feed",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("CreateFeed"),
        ok: (201, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/feeds/{feed}/kernels/{kernel}",
        summary: "What a feed serves for one kernel, with its pin or hold",
        auth: Auth::AdminRead,
        query: &[],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/audit",
        summary: "The audit trail, newest first, one page: {audit, next, prev}",
        auth: Auth::AdminRead,
        query: &[
            PAGE_LIMIT,
            PAGE_CURSOR,
            ("action", "only entries of this action (exact)"),
            ("actor", "only entries by this actor (exact)"),
            ("target", "only entries on this target (exact)"),
        ],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/admin/keys",
        summary: "Registration keys (without secrets)",
        auth: Auth::AdminRead,
        query: &[],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/keys",
        summary: "Create a registration key (the secret is in this answer only)",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("CreateKey"),
        ok: (201, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/keys/{id}/revoke",
        summary: "Revoke a registration key",
        auth: Auth::AdminWrite,
        query: &[],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/publish",
        summary: "Publish a signed bundle (the body is the .nrb file)",
        auth: Auth::AdminWrite,
        query: &[("feed", "release to this feed (repeatable)")],
        body: Some("Bundle"),
        ok: (201, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/promote",
        summary: "Release a level to a feed",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("Promote"),
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/pin",
        summary: "Serve exactly this level on a feed for one kernel",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("Pin"),
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/hold",
        summary: "Keep a feed at its current level for one kernel",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("FeedKernel"),
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/unpin",
        summary: "Remove a pin or hold",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("FeedKernel"),
        ok: (200, JSON),
    },
    Op {
        method: "post",
        path: "/api/v1/admin/rollback",
        summary: "Withdraw the level a feed serves for one kernel",
        auth: Auth::AdminWrite,
        query: &[],
        body: Some("FeedKernel"),
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        auth: Auth::None,
        query: &[],
        body: None,
        ok: (200, JSON),
    },
    Op {
        method: "get",
        path: "/healthz",
        summary: "Liveness",
        auth: Auth::None,
        query: &[],
        body: None,
        ok: (200, "text/plain"),
    },
    Op {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics (text exposition 0.0.4)",
        auth: Auth::Metrics,
        query: &[],
        body: None,
        ok: (200, "text/plain"),
    },
    Op {
        method: "get",
        path: "/ui",
        summary: "Dashboard: redirects to the host list",
        auth: Auth::None,
        query: &[],
        body: None,
        ok: (303, ""),
    },
    Op {
        method: "get",
        path: "/ui/login",
        summary: "Dashboard login form",
        auth: Auth::None,
        query: &[],
        body: None,
        ok: (200, "text/html"),
    },
    Op {
        method: "post",
        path: "/ui/login",
        summary: "Dashboard login: an admin or read-only token in, a session cookie (a random session id, not the token) out; 401 with the form again, 429 after too many failures from the address",
        auth: Auth::None,
        query: &[],
        body: Some("Login"),
        ok: (303, ""),
    },
    Op {
        method: "post",
        path: "/ui/logout",
        summary: "Dashboard logout: ends the session on the server and clears the cookie",
        auth: Auth::Cookie,
        query: &[],
        body: None,
        ok: (303, ""),
    },
    Op {
        method: "get",
        path: "/ui/hosts",
        summary: "Dashboard: hosts, one page by hostname, with previous and next links",
        auth: Auth::Cookie,
        query: &[
            ("kernel", "build-id prefix or release"),
            ("level", "applied level"),
            ("feed", "feed"),
            ("tag", "tag"),
            ("hostname", "hostname prefix"),
            ("status", "`protected`, `exposed` or `unsupported`"),
            ("stale", "`1`: only stale hosts"),
            PAGE_LIMIT,
            PAGE_CURSOR,
        ],
        body: None,
        ok: (200, "text/html"),
    },
    Op {
        method: "get",
        path: "/ui/kernels",
        summary: "Dashboard: kernels and their levels, and the builds hosts run that no level covers",
        auth: Auth::Cookie,
        query: &[],
        body: None,
        ok: (200, "text/html"),
    },
    Op {
        method: "get",
        path: "/ui/compliance",
        summary: "Dashboard: compliance (summary, CVEs, one page of exposed hosts' exposures)",
        auth: Auth::Cookie,
        query: &[
            ("policy_days", "policy in days"),
            ("format", "`csv`: every exposure as CSV, streamed"),
            PAGE_CURSOR,
        ],
        body: None,
        ok: (200, "text/html"),
    },
    Op {
        method: "get",
        path: "/ui/audit",
        summary: "Dashboard: audit trail, newest first, 100 entries a page",
        auth: Auth::Cookie,
        query: &[
            PAGE_CURSOR,
            ("action", "action (exact)"),
            ("actor", "who (exact)"),
            ("target", "target (exact)"),
        ],
        body: None,
        ok: (200, "text/html"),
    },
];

/// JSON answers described field by field, by (method, path); every other
/// JSON answer is `Object` ("fields as the admin CLI's --json shows
/// them"). Listed here when another program reads the answer.
const ANSWERS: &[(&str, &str, &str)] =
    &[("get", "/api/v1/admin/kernels/reported", "ReportedBuilds")];

fn obj(props: &[(&str, Value)], required: &[&str]) -> Value {
    let mut p = Map::new();
    for (k, v) in props {
        p.insert((*k).to_string(), v.clone());
    }
    json!({ "type": "object", "properties": p, "required": required })
}

fn schemas() -> Value {
    let s = json!({"type": "string"});
    let u = json!({"type": "integer", "minimum": 0});
    let kernel = obj(
        &[
            ("release", s.clone()),
            ("version", s.clone()),
            ("build_id", s.clone()),
        ],
        &["release", "version", "build_id"],
    );
    json!({
        "ErrorBody": obj(&[("error", s.clone())], &["error"]),
        "Object": {"type": "object", "description": "See the endpoint's summary; fields as the admin CLI's --json shows them"},
        "Kernel": kernel,
        "RegisterRequest": obj(&[("registration_key", s.clone()), ("hostname", s.clone()), ("kernel", json!({"$ref": "#/components/schemas/Kernel"})), ("agent_version", s.clone()), ("tags", json!({"type": "array", "items": s}))], &["registration_key", "hostname", "kernel", "agent_version"]),
        "CheckinRequest": obj(&[("kernel", json!({"$ref": "#/components/schemas/Kernel"})), ("level", u.clone()), ("effective_version", s.clone()), ("skipped", json!({"type": "array", "items": u})), ("agent_version", s.clone())], &["kernel", "level", "effective_version", "agent_version"]),
        "ReportRequest": obj(&[("action", s.clone()), ("level", u.clone()), ("result", s.clone()), ("reason", s.clone()), ("stalled_tasks", json!({"type": "array", "items": s})), ("duration_ms", u.clone()), ("active_level", u.clone())], &["action", "level", "result", "duration_ms", "active_level"]),
        "CreateFeed": obj(&[("name", s.clone()), ("delay_hours", u.clone())], &["name"]),
        "CreateKey": obj(&[("feed", s.clone()), ("note", s.clone())], &["feed"]),
        "Promote": obj(&[("kernel", s.clone()), ("level", u.clone()), ("feed", s.clone())], &["kernel", "level", "feed"]),
        "Pin": obj(&[("feed", s.clone()), ("kernel", s.clone()), ("level", u)], &["feed", "kernel", "level"]),
        "MoveHost": obj(&[("feed", s.clone())], &["feed"]),
        "HostTags": obj(&[("tags", json!({"type": "array", "items": s.clone()}))], &["tags"]),
        "FeedKernel": obj(&[("feed", s.clone()), ("kernel", s.clone())], &["feed", "kernel"]),
        "Login": obj(&[("token", s)], &["token"]),
        "Bundle": {"type": "string", "format": "binary"},
        "ReportedBuilds": {"type": "array", "items": obj(
            &[
                ("release", json!({"type": "string", "description": "`uname -r` as the hosts report it"})),
                ("version", json!({"type": "string", "description": "`uname -v` as the hosts report it"})),
                ("build_id", json!({"type": "string", "description": "GNU build-id, lowercase hex"})),
                ("hosts", json!({"type": "integer", "minimum": 1, "description": "active (not retired) hosts running it"})),
                ("newest_level", json!({"type": ["integer", "null"], "minimum": 1, "description": "the newest level published for the build-id; null: none"})),
            ],
            &["release", "version", "build_id", "hosts", "newest_level"],
        ), "description": "One entry per (release, version, build_id) active hosts report, by release, then build_id"},
    })
}

fn operation(op: &Op) -> Value {
    let mut params: Vec<Value> = Vec::new();
    // Path parameters, from the `{name}` segments.
    for seg in op.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    for (name, desc) in op.query {
        params.push(json!({"name": name, "in": "query", "required": false, "description": desc, "schema": {"type": "string"}}));
    }
    let err = json!({"description": "error", "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
    let mut responses = Map::new();
    let (code, ct) = op.ok;
    let ok = if ct.is_empty() {
        json!({"description": "done"})
    } else if ct == JSON {
        let schema = ANSWERS
            .iter()
            .find(|(m, p, _)| *m == op.method && *p == op.path)
            .map_or("Object", |(_, _, schema)| schema);
        json!({"description": "done", "content": {JSON: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
    } else {
        json!({"description": "done", "content": {ct: {"schema": {"type": "string"}}}})
    };
    responses.insert(code.to_string(), ok);
    responses.insert("4XX".into(), err.clone());
    responses.insert("5XX".into(), err);
    let mut o = json!({
        "summary": op.summary,
        "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.'], "_")),
        "parameters": params,
        "responses": responses,
    });
    let security = match op.auth {
        Auth::None => json!([]),
        Auth::Host => json!([{"hostToken": []}]),
        Auth::AdminRead | Auth::AdminWrite => json!([{"adminToken": []}]),
        Auth::Cookie => json!([{"dashboardCookie": []}]),
        Auth::Metrics => json!([{}, {"metricsToken": []}]),
    };
    o["security"] = security;
    if let Auth::AdminWrite = op.auth {
        o["description"] = json!("Needs a token with the admin role; read-only tokens get 403.");
    }
    if op.method == "post" && op.path.starts_with("/ui") {
        o["description"] = json!(
            "A dashboard form: refused with 403 when Sec-Fetch-Site is not same-origin, or when \
             Origin (or, without it, Referer) names another origin than the request's Host \
             (https only when the server is reached over HTTPS). Without either header it is \
             refused too, except for /ui/login."
        );
    }
    if let Some(schema) = op.body {
        let ct = match schema {
            "Bundle" => "application/octet-stream",
            "Login" => "application/x-www-form-urlencoded",
            _ => JSON,
        };
        o["requestBody"] = json!({"required": true, "content": {ct: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "noreboot-server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Live patch distribution, fleet status, compliance reports. Every 4xx/5xx answer has an ErrorBody.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "hostToken": {"type": "http", "scheme": "bearer", "description": "A host token (nrh_...) from /register"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "An admin API token (admin or read-only role)"},
                "metricsToken": {"type": "http", "scheme": "bearer", "description": "serve --metrics-token, when set"},
                "dashboardCookie": {"type": "apiKey", "in": "cookie", "name": "noreboot_session", "description": "A dashboard session id (nrs_...) from /ui/login: HttpOnly, SameSite=Strict, Path=/, Secure over HTTPS; it ends at its expiry, at logout, or when its token is revoked"},
            },
        },
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> axum::Json<Value> {
    axum::Json(document())
}
