//! A stand-in for the operator's report endpoint: real HTTPS on 127.0.0.1 with a certificate
//! from a throwaway CA, answering each report as the test scripts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use procwatch_crds::report::AgentReport;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;

pub struct TestCa {
    pub pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A rustls server configuration with a certificate for 127.0.0.1 signed by this CA.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Arc::new(config)
    }
}

/// One report as the operator received it.
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub report: AgentReport,
}

/// The answer to the n-th report (counting from 0): status and body.
pub type Script = dyn Fn(usize) -> (StatusCode, String) + Send + Sync;

pub struct FakeOperator {
    pub url: String,
    pub received: mpsc::UnboundedReceiver<Received>,
}

impl FakeOperator {
    pub async fn start(ca: &TestCa, script: Arc<Script>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/report/v1", listener.local_addr().unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
        let (sender, received) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, sender, count, script) = (
                    acceptor.clone(),
                    sender.clone(),
                    count.clone(),
                    script.clone(),
                );
                tokio::spawn(async move {
                    // A client that refuses our certificate ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (sender, count, script) =
                            (sender.clone(), count.clone(), script.clone());
                        async move {
                            let path = request.uri().path().to_string();
                            let authorization = request
                                .headers()
                                .get(http::header::AUTHORIZATION)
                                .map(|value| value.to_str().unwrap().to_string());
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let report: AgentReport =
                                serde_json::from_slice(&body).expect("an AgentReport");
                            let _ = sender.send(Received {
                                path,
                                authorization,
                                report,
                            });
                            let (status, body) = script(count.fetch_add(1, Ordering::SeqCst));
                            let response = Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeOperator { url, received }
    }
}
