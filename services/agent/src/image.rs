//! Answers the API's image lookups (`GET /distribution/{name}/json`) from
//! this node's engine: the image's digest and platforms when the engine has
//! it or can resolve it at its registry, else "not found" (always, with the
//! process executor), so the API stops waiting once every node has answered.
//! Lookups with the client's credentials come only on this node's own subject.

use futures::StreamExt;
use shoal_shared::dispatch::{ImageAnswer, ImageQuery};
use shoal_shared::envelope::{self, Reply};
use shoal_shared::{subjects, ShoalError};

use crate::docker::DockerExecutor;

/// Subscribes and answers in the background for as long as the connection lives.
pub async fn serve(nats: async_nats::Client, node_id: String, docker: Option<DockerExecutor>) -> anyhow::Result<()> {
    let all = nats.subscribe(subjects::agent_image_query()).await?;
    let mine = nats.subscribe(subjects::agent_image_query_on(&node_id)).await?;
    let mut sub = futures::stream::select(all, mine);
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(mut q) = envelope::decode::<ImageQuery>(&msg.payload) else {
                continue;
            };
            if msg.subject.as_str() == subjects::agent_image_query() {
                // Credentials are never used from the all-agents subject.
                q.registry_auth = None;
            }
            let (nats, node_id, docker) = (nats.clone(), node_id.clone(), docker.clone());
            tokio::spawn(async move {
                let found = match &docker {
                    Some(d) => d.distribution(&q.image, q.registry_auth.as_deref()).await,
                    None => None,
                };
                let reply = match found {
                    Some(inspect) => Reply::Ok(ImageAnswer { node_id, inspect }),
                    None => Reply::Err(ShoalError::not_found(format!(
                        "{} is not known on node {node_id}",
                        q.image
                    ))),
                };
                envelope::respond(&nats, &msg, &reply).await;
            });
        }
    });
    Ok(())
}
