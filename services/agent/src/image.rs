//! Answers the API's image lookups (`GET /distribution/{name}/json`) from
//! this node's engine: the image's digest and platforms when the engine has
//! it or can resolve it at its registry, else "not found" (always, with the
//! process executor), so the API stops waiting once every node has answered.
//! Lookups with the client's credentials come only on this node's own subject.

use futures::StreamExt;
use shoal_shared::dispatch::{ImageAnswer, ImageQuery};
use shoal_shared::envelope::{self, Reply};
use shoal_shared::{subjects, ShoalError};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde_json::Value;

use crate::docker::DockerExecutor;

/// Decodes an `X-Registry-Auth` value (base64url or base64 of a JSON auth config).
pub fn decode_registry_auth(header: &str) -> Option<DockerCredentials> {
    let header = header.trim();
    let bytes = [
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
    ]
    .iter()
    .find_map(|e| e.decode(header).ok())?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let creds = DockerCredentials {
        username: s("username"),
        password: s("password"),
        auth: s("auth"),
        email: s("email"),
        serveraddress: s("serveraddress"),
        identitytoken: s("identitytoken"),
        registrytoken: s("registrytoken"),
    };
    (creds != DockerCredentials::default()).then_some(creds)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_headers_decode_in_either_alphabet() {
        let json = r#"{"username":"u","password":"p?>","serveraddress":"127.0.0.1:5000"}"#;
        for engine in [
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::STANDARD,
        ] {
            let c = decode_registry_auth(&engine.encode(json)).unwrap();
            assert_eq!(c.username.as_deref(), Some("u"));
            assert_eq!(c.password.as_deref(), Some("p?>"));
            assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        }
        assert!(decode_registry_auth("e30=").is_none(), "{{}} carries no credentials");
        assert!(decode_registry_auth("not base64!").is_none());
    }
}
