//! Calling a host's endpoint in-process, without a network, as the server
//! would: for the server-time figures and for `bench profile`.

use std::sync::Arc;

use anyhow::{Result, ensure};
use poem::Endpoint;

/// An endpoint called in-process, as the server would call it.
pub(crate) type Ep = Box<dyn Fn(poem::Request) -> BoxFut + Send + Sync>;
/// The response future of an [`Ep`].
type BoxFut = std::pin::Pin<Box<dyn std::future::Future<Output = poem::Response> + Send>>;

/// `ep` behind an [`Ep`], so that plugin and native endpoints (different
/// types) are called alike.
pub(crate) fn boxed<E: Endpoint + 'static>(ep: E) -> Ep {
    let ep = Arc::new(ep);
    Box::new(move |req| {
        let ep = Arc::clone(&ep);
        Box::pin(async move { ep.get_response(req).await })
    })
}

fn get_request() -> poem::Request {
    poem::Request::builder()
        .uri_str("/api/secrets")
        .header("host", "127.0.0.1:2138")
        .header("accept", "application/json")
        .finish()
}

/// One in-process GET: the handler's response with its body collected
/// (zero-copy for a buffered body), as the server would write it.
pub(crate) async fn one_get(ep: &Ep) -> Result<usize> {
    let resp = ep(get_request()).await;
    ensure!(resp.status() == 200, "GET answered {}", resp.status());
    Ok(resp.into_body().into_bytes().await?.len())
}
