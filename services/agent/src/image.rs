//! Answers the API's image lookups (`GET /distribution/{name}/json`) from
//! this node's engine: an agent that has the image, or can resolve it at its
//! registry, answers; the others stay silent. Lookups with the client's
//! credentials come only on this node's own subject.

use futures::StreamExt;
use shoal_shared::dispatch::{ImageAnswer, ImageQuery};
use shoal_shared::envelope::{self, Reply};
use shoal_shared::subjects;

use crate::docker::DockerExecutor;

/// Subscribes and answers in the background for as long as the connection lives.
pub async fn serve(nats: async_nats::Client, node_id: String, docker: DockerExecutor) -> anyhow::Result<()> {
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
                if let Some(inspect) = docker.distribution(&q.image, q.registry_auth.as_deref()).await {
                    let answer = ImageAnswer { node_id, inspect };
                    envelope::respond(&nats, &msg, &Reply::Ok(answer)).await;
                }
            });
        }
    });
    Ok(())
}
