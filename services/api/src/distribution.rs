//! `/distribution`: what the CLI asks about images and
//! registries before it writes a service.

use actix_web::{web, HttpRequest, HttpResponse};
use shoal_shared::dispatch::{ImageAnswer, ImageQuery};
use shoal_shared::model::{Node, NodeState};
use shoal_shared::store::ListFilter;
use shoal_shared::{envelope, subjects};

use crate::error::{ApiError, ApiResult};
use crate::request::IdPath;
use crate::state::AppState;

/// `GET /distribution/{name}/json`: answered by the agents, from their
/// engines' image stores (or their registries). Without credentials every
/// agent is asked and the first that knows the image answers; with the
/// client's `X-Registry-Auth`, only this node's agent is asked. Once every
/// ready node has said it does not know the image (or after
/// [`DISTRIBUTION_TIMEOUT`]), a 404 the CLI turns into its usual
/// "could not be accessed on a registry to record its digest" warning.
pub async fn distribution(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<IdPath>,
) -> ApiResult<HttpResponse> {
    let query = ImageQuery {
        image: path.id.clone(),
        registry_auth: req
            .headers()
            .get("X-Registry-Auth")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    };
    let store = state.store()?;
    let asked = match query.registry_auth {
        // With credentials, only this node's agent is asked (they reach no other node).
        Some(_) => {
            let subject = subjects::agent_image_query_on(&state.node_id);
            envelope::first_ok::<_, ImageAnswer>(store.nats(), subject, &query, 1, DISTRIBUTION_TIMEOUT).await?
        }
        // Every agent is asked at once; the ready nodes are counted meanwhile
        // (so a miss ends once each has answered). The count never holds up
        // an agent that has the image: without a store quorum it fails after
        // the store's deadline, which `service create` would pay twice.
        None => {
            let count = async {
                let nodes: Vec<Node> = store
                    .with_deadline(DISTRIBUTION_TIMEOUT)
                    .list(ListFilter::default())
                    .await
                    .ok()?;
                Some(
                    nodes
                        .iter()
                        .filter(|n| n.status.state == NodeState::Ready)
                        .count()
                        .max(1),
                )
            };
            let subject = subjects::agent_image_query();
            envelope::first_ok_counted::<_, ImageAnswer>(store.nats(), subject, &query, count, DISTRIBUTION_TIMEOUT)
                .await?
        }
    };
    match asked {
        Some(a) => {
            tracing::debug!(image = %query.image, node = %a.node_id, "distribution answered by an agent");
            Ok(HttpResponse::Ok().json(a.inspect))
        }
        None => Err(ApiError::not_found(format!(
            "no such image: {}: no node has it and no registry a node can reach knows it",
            query.image
        ))),
    }
}

/// How long `/distribution` waits for an agent that knows the image.
pub const DISTRIBUTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
