//! Answers the API's image lookups (`GET /distribution/{name}/json`) from
//! this node's engine: an agent that has the image, or can resolve it at its
//! registry with the client's credentials, answers; the others stay silent.

use futures::StreamExt;
use shoal_shared::dispatch::{ImageAnswer, ImageQuery};
use shoal_shared::envelope::{self, Reply};
use shoal_shared::subjects;

use crate::docker::DockerExecutor;

/// Subscribes and answers in the background for as long as the connection lives.
pub async fn serve(nats: async_nats::Client, node_id: String, docker: DockerExecutor) -> anyhow::Result<()> {
    let mut sub = nats.subscribe(subjects::agent_image_query()).await?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(q) = envelope::decode::<ImageQuery>(&msg.payload) else {
                continue;
            };
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
