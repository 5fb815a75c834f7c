//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every route,
//! derived by utoipa from the handlers' `#[utoipa::path]` annotations and
//! the types they take and return (`ToSchema`, `IntoParams`), so a
//! changed type changes the document with it. [`ApiDoc`] lists the
//! handlers; the integration test `openapi` checks that list against
//! `router()` both ways and that every body's schema resolves.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{admin, agent, apt, dashboard, metrics};

/// The document's operations and the schemas no operation names.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "noreboot-server",
        description = "Live patch distribution, fleet status, compliance reports. Every 4xx/5xx answer of the API has an ErrorBody."
    ),
    paths(
        agent::register,
        agent::register_check,
        agent::checkin,
        agent::bundle,
        agent::report,
        admin::hosts::list,
        admin::hosts::retired,
        admin::hosts::move_host,
        admin::hosts::set_tags,
        admin::hosts::retire,
        admin::vex::host,
        admin::vex::fleet,
        admin::webhooks::list,
        admin::webhooks::create,
        admin::webhooks::delete,
        admin::reports::list,
        admin::reports::compliance,
        admin::reports::hosts,
        admin::reports::cves,
        admin::reports::summary,
        admin::reports::printable,
        admin::kernels::list,
        admin::kernels::reported,
        admin::levels::list,
        admin::feeds::list,
        admin::feeds::create,
        admin::feeds::state,
        admin::audit::list,
        admin::keys::list,
        admin::keys::create,
        admin::keys::revoke,
        admin::publish::publish,
        admin::packages::list,
        admin::packages::upload,
        admin::packages::remove,
        admin::releases::promote,
        admin::releases::pin,
        admin::releases::hold,
        admin::releases::unpin,
        admin::releases::rollback,
        openapi,
        super::healthz,
        apt::install_sh,
        apt::bundle_keys,
        apt::key_asc,
        apt::key_gpg,
        apt::in_release,
        apt::release,
        apt::release_gpg,
        apt::packages,
        apt::packages_gz,
        apt::pool,
        metrics::metrics,
        dashboard::index,
        dashboard::login_page,
        dashboard::login,
        dashboard::logout,
        dashboard::hosts,
        dashboard::kernels,
        dashboard::compliance,
        dashboard::compliance_report,
        dashboard::audit,
    ),
    components(schemas(protocol::ErrorBody)),
    modifiers(&Finish)
)]
pub struct ApiDoc;

/// What the derive cannot say: the security schemes, and operation ids
/// made from method and path (utoipa's default, the function's name, is
/// not unique: every resource has a `list`).
struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut Document) {
        let bearer = |description: &str| {
            let mut h = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
            h.description = Some(description.to_string());
            SecurityScheme::Http(h)
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("hostToken", bearer("A host token (nrh_...) from /register"));
        components.add_security_scheme(
            "adminToken",
            bearer("An admin API token: any role reads; operations that require [\"admin\"] need the admin role (read-only tokens get 403)"),
        );
        components.add_security_scheme("metricsToken", bearer("serve --metrics-token, when set"));
        components.add_security_scheme(
            "dashboardCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::dashboard::COOKIE,
                "A dashboard session id (nrs_...) from /ui/login: HttpOnly, SameSite=Strict, Path=/, Secure over HTTPS; it ends at its expiry, at logout, or when its token is revoked",
            ))),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let PathItem { get, post, .. } = item;
            for (method, op) in [("get", get), ("post", post)] {
                if let Some(op) = op {
                    op.operation_id = Some(format!(
                        "{method}{}",
                        path.replace(['/', '{', '}', '.'], "_")
                    ));
                }
            }
        }
    }
}

/// An OpenAPI 3.1 document (see <https://spec.openapis.org/oas/v3.1.0>).
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct OpenApiDocument(Document);

/// The document.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/api/v1/openapi.json",
    summary = "This document",
    security(()),
    responses((status = 200, description = "the document", body = OpenApiDocument)))]
pub async fn openapi() -> axum::Json<OpenApiDocument> {
    axum::Json(OpenApiDocument(document()))
}
