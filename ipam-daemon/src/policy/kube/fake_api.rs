//! A scripted Kubernetes API server for the watcher tests: plain HTTP/1.1 on 127.0.0.1, a
//! routing function that answers each request (a list body, or a watch stream of JSON lines
//! that then stays open, ends cleanly or is cut), and a log of the requests received. It
//! speaks just enough of the API for kube's client and watcher: no auth, no TLS.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::{
    Request, Response,
    body::{Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How a watch stream ends after its events.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// Stays open (a healthy, idle watch).
    Hold,
    /// The body ends properly (as on the server's watch timeout).
    Close,
    /// The connection is cut mid-body (an API server restart, a network failure).
    Cut,
}

pub enum Reply {
    /// A JSON document (lists).
    Json(Value),
    /// A watch stream: one JSON line per event, then `End`.
    Watch(Vec<Value>, End),
}

/// A request as the script sees it.
#[derive(Clone, Debug)]
pub struct Req {
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl Req {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|w| w == "true" || w == "1")
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.query.get("resourceVersion").map(String::as_str)
    }
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub struct FakeApi {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

fn respond(reply: Reply) -> Response<Body> {
    let body: Body = match reply {
        Reply::Json(v) => http_body_util::Full::new(Bytes::from(v.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
        Reply::Watch(events, end) => {
            let lines = futures::stream::iter(
                events
                    .into_iter()
                    .map(|e| Ok(Frame::data(Bytes::from(format!("{e}\n"))))),
            );
            let tail = match end {
                End::Hold => futures::stream::pending().boxed(),
                End::Close => futures::stream::empty().boxed(),
                End::Cut => futures::stream::once(async {
                    // Give the client time to read the events before the connection goes.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Err(std::io::Error::other("connection cut by the test"))
                })
                .boxed(),
            };
            StreamBody::new(lines.chain(tail)).boxed_unsync()
        }
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .expect("static response")
}

impl FakeApi {
    /// Serve `route` on a free loopback port until dropped.
    pub async fn start(route: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let route = Arc::new(route);
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                // Connections live in this set: aborting the server task closes them all.
                let mut conns = tokio::task::JoinSet::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    while conns.try_join_next().is_some() {}
                    let (route, log) = (route.clone(), log.clone());
                    conns.spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let r = Req {
                                path: req.uri().path().to_owned(),
                                query: req
                                    .uri()
                                    .query()
                                    .unwrap_or_default()
                                    .split('&')
                                    .filter_map(|kv| kv.split_once('='))
                                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                    .collect(),
                            };
                            log.lock().expect("log").push(r.clone());
                            let resp = respond(route(&r));
                            async move { Ok::<_, Infallible>(resp) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            })
        };
        Self { addr, log, task }
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> kube::Client {
        let uri = format!("http://{}", self.addr).parse().expect("uri");
        kube::Client::try_from(kube::Config::new(uri)).expect("kube client")
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
