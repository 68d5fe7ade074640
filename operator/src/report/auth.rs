//! Agent authentication. An agent sends its projected service-account token (audience
//! `procwatch`, bound to its pod); the operator asks the API server about it with a TokenReview
//! and caches the answer under a hash of the token (an acceptance until the token expires), so
//! a pod costs one review per token. A report is then accepted only for the pod the token was
//! issued to.
//!
//! Anyone who reaches the endpoint can send tokens, so a review is never spent on a token that
//! cannot be a procwatch pod token (its unverified payload must name the audience, a pod and a
//! future expiry), and at most [`MAX_REVIEWS_IN_FLIGHT`] reviews run at once: a flood of
//! random tokens cannot become a flood on the API server.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use procwatch_crds::constants::TOKEN_AUDIENCE;
use procwatch_crds::report::AgentReport;
use sha2::{Digest, Sha256};

use super::throttle::RefusalsBySource;
use crate::lock;

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// Refusals are remembered for less time than acceptances: long enough to absorb a flood of
/// one bad token, short enough that a fixed token is accepted soon.
const REFUSAL_TTL: Duration = Duration::from_secs(10);
/// TokenReviews in flight at once, whatever the number of tokens presented.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 8;
/// How long a report waits for a review slot before it is told to retry.
const REVIEW_SLOT_WAIT: Duration = Duration::from_secs(2);

/// The pod a token was issued to, as the API server vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
}

/// Why a token is not accepted; `Unauthenticated` answers 401, `NotAPod` 403.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("token not accepted: {0}")]
    Unauthenticated(String),
    #[error("token is valid but {0}")]
    NotAPod(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The TokenReview itself failed: the agent should retry.
    #[error("cannot review the token with the API server")]
    Unavailable(#[source] kube::Error),
    /// Every review slot stayed taken: the agent should retry.
    #[error("too many tokens under review; retry")]
    Busy,
    /// The source address had its share of refusals: turned away unheard for a while.
    #[error("too many refused tokens from this address")]
    Throttled,
}

/// Reads the pod identity out of a TokenReview's answer.
pub fn identity(status: Option<&TokenReviewStatus>) -> Result<PodIdentity, Refusal> {
    let unauthenticated = |why: &str| Refusal::Unauthenticated(why.to_string());
    let status = status.ok_or_else(|| unauthenticated("the token review has no status"))?;
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().filter(|e| !e.is_empty());
        return Err(unauthenticated(
            why.unwrap_or("the API server did not authenticate it"),
        ));
    }
    // An audience-unaware authenticator returns no audiences: such a token is not ours.
    let audiences = status.audiences.iter().flatten();
    if !audiences.into_iter().any(|a| a == TOKEN_AUDIENCE) {
        return Err(Refusal::Unauthenticated(format!(
            "it is not issued for the audience {TOKEN_AUDIENCE:?}"
        )));
    }
    let user = status
        .user
        .as_ref()
        .ok_or_else(|| unauthenticated("the token review names no user"))?;
    let username = user.username.as_deref().unwrap_or_default();
    let not_a_pod = |why: String| Refusal::NotAPod(why);
    let (namespace, service_account) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| not_a_pod(format!("{username:?} is not a service account")))?;
    let extra = |key: &str| -> Result<String, Refusal> {
        user.extra
            .as_ref()
            .and_then(|extra| extra.get(key))
            .and_then(|values| values.first())
            .filter(|value| !value.is_empty())
            .cloned()
            .ok_or_else(|| not_a_pod(format!("it is not bound to a pod (no {key})")))
    };
    Ok(PodIdentity {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod_name: extra(POD_NAME_EXTRA)?,
        pod_uid: extra(POD_UID_EXTRA)?,
    })
}

/// A report about another pod than the one the token was issued to (answered with 403).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the token was issued to pod {token_pod}, the report is about pod {report_pod}")]
pub struct ClaimsError {
    pub token_pod: String,
    pub report_pod: String,
}

/// The report must be about the very pod (namespace, name and uid) the token was issued to.
pub fn check_claims(identity: &PodIdentity, report: &AgentReport) -> Result<(), ClaimsError> {
    let same = identity.namespace == report.pod_namespace
        && identity.pod_name == report.pod_name
        && identity.pod_uid == report.pod_uid;
    if same {
        return Ok(());
    }
    Err(ClaimsError {
        token_pod: format!(
            "{}/{} (uid {})",
            identity.namespace, identity.pod_name, identity.pod_uid
        ),
        report_pod: format!(
            "{}/{} (uid {})",
            report.pod_namespace, report.pod_name, report.pod_uid
        ),
    })
}

/// The claims of a JWT, read without verifying anything.
fn claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// The `exp` claim of a JWT, unverified: it only bounds how long an answer is cached, the API
/// server did the verifying.
fn expiry(token: &str) -> Option<Timestamp> {
    Timestamp::from_second(claims(token)?.get("exp")?.as_i64()?).ok()
}

/// Refuses, without asking the API server, a token that cannot be a live procwatch pod token:
/// not a JWT, no audience `procwatch`, expired, or bound to no pod. Nothing is verified here;
/// the TokenReview that follows does that.
pub fn precheck(token: &str, now: Timestamp) -> Result<(), Refusal> {
    let refuse = |why: &str| Err(Refusal::Unauthenticated(format!("{why} (not reviewed)")));
    let Some(claims) = claims(token) else {
        return refuse("it is not a JWT");
    };
    let audience = match claims.get("aud") {
        Some(serde_json::Value::String(one)) => one == TOKEN_AUDIENCE,
        Some(serde_json::Value::Array(many)) => many.iter().any(|a| a == TOKEN_AUDIENCE),
        _ => false,
    };
    if !audience {
        return refuse("it is not issued for the audience \"procwatch\"");
    }
    let expires = claims.get("exp").and_then(serde_json::Value::as_i64);
    if expires.is_none_or(|exp| exp <= now.as_second()) {
        return refuse("it has expired");
    }
    let pod = claims.pointer("/kubernetes.io/pod/name");
    if pod
        .and_then(serde_json::Value::as_str)
        .is_none_or(str::is_empty)
    {
        return refuse("it is not bound to a pod");
    }
    Ok(())
}

type TokenHash = [u8; 32];

struct CacheEntry {
    expires: Instant,
    result: Result<PodIdentity, Refusal>,
}

/// Review results by token hash, bounded in size; the tokens themselves are never kept. When
/// full, the oldest insertion goes: O(1) per insert, whatever the cache holds.
struct TokenCache {
    entries: HashMap<TokenHash, CacheEntry>,
    /// Keys in insertion order; each key of `entries` is here exactly once.
    order: VecDeque<TokenHash>,
    capacity: usize,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        TokenCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &TokenHash, now: Instant) -> Option<Result<PodIdentity, Refusal>> {
        let entry = self.entries.get(key)?;
        (entry.expires > now).then(|| entry.result.clone())
    }

    fn insert(
        &mut self,
        key: TokenHash,
        result: Result<PodIdentity, Refusal>,
        expires: Instant,
        now: Instant,
    ) {
        if expires <= now {
            return;
        }
        let entry = CacheEntry { expires, result };
        if let Some(existing) = self.entries.get_mut(&key) {
            *existing = entry;
            return;
        }
        if self.entries.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.entries.remove(&oldest);
        }
        self.order.push_back(key);
        self.entries.insert(key, entry);
    }
}

pub struct Authenticator {
    reviews: Api<TokenReview>,
    cache: Mutex<TokenCache>,
    /// How long a result is cached when the token names no expiry.
    ttl: Duration,
    review_slots: tokio::sync::Semaphore,
    refusals: RefusalsBySource,
}

impl Authenticator {
    pub fn new(client: Client, ttl: Duration, capacity: usize) -> Self {
        Authenticator {
            reviews: Api::all(client),
            cache: Mutex::new(TokenCache::new(capacity)),
            ttl,
            review_slots: tokio::sync::Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
            refusals: RefusalsBySource::default(),
        }
    }

    /// The pod the token was issued to, from the cache or a fresh TokenReview. A source
    /// address (when known) that earned too many refusals lately is turned away before its
    /// token is looked at, unless the token is one already accepted.
    pub async fn authenticate(
        &self,
        token: &str,
        source: Option<IpAddr>,
    ) -> Result<PodIdentity, AuthError> {
        let result = self.authenticate_token(token, source).await;
        if let (Err(AuthError::Refused(_)), Some(source)) = (&result, source) {
            self.refusals.record(source, Instant::now());
        }
        result
    }

    async fn authenticate_token(
        &self,
        token: &str,
        source: Option<IpAddr>,
    ) -> Result<PodIdentity, AuthError> {
        let key: TokenHash = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = lock(&self.cache).get(&key, Instant::now()) {
            return Ok(cached?);
        }
        if source.is_some_and(|source| self.refusals.exhausted(source, Instant::now())) {
            return Err(AuthError::Throttled);
        }
        precheck(token, Timestamp::now())?;
        let _slot = tokio::time::timeout(REVIEW_SLOT_WAIT, self.review_slots.acquire())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        // Another report with this token may have been reviewed while this one waited, and
        // the source may have run out of refusals meanwhile (a flood queues at once).
        if let Some(cached) = lock(&self.cache).get(&key, Instant::now()) {
            return Ok(cached?);
        }
        if source.is_some_and(|source| self.refusals.exhausted(source, Instant::now())) {
            return Err(AuthError::Throttled);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let answer = self
            .reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::Unavailable)?;
        let result = identity(answer.status.as_ref());
        let now = Instant::now();
        let ttl = match (&result, expiry(token)) {
            (Err(_), _) => self.ttl.min(REFUSAL_TTL),
            // The kubelet replaces the token before it expires: one review per token.
            (Ok(_), Some(expires)) => {
                let left = expires.duration_since(Timestamp::now());
                Duration::try_from(left).unwrap_or(Duration::ZERO)
            }
            (Ok(_), None) => self.ttl,
        };
        lock(&self.cache).insert(key, result.clone(), now + ttl, now);
        Ok(result?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    pub(crate) fn review_status(username: &str, pod: Option<(&str, &str)>) -> TokenReviewStatus {
        let mut extra = BTreeMap::new();
        if let Some((name, uid)) = pod {
            extra.insert(POD_NAME_EXTRA.to_string(), vec![name.to_string()]);
            extra.insert(POD_UID_EXTRA.to_string(), vec![uid.to_string()]);
        }
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
            user: Some(UserInfo {
                username: Some(username.to_string()),
                extra: Some(extra),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    fn report(namespace: &str, name: &str, uid: &str) -> AgentReport {
        AgentReport {
            pod_name: name.into(),
            pod_namespace: namespace.into(),
            pod_uid: uid.into(),
            ..AgentReport::default()
        }
    }

    #[test]
    fn pod_tokens_give_the_pod_identity() {
        let status = review_status("system:serviceaccount:shop:default", Some(("web-1", "u1")));
        let identity = identity(Some(&status)).unwrap();
        assert_eq!(
            identity,
            PodIdentity {
                namespace: "shop".into(),
                service_account: "default".into(),
                pod_name: "web-1".into(),
                pod_uid: "u1".into(),
            }
        );
        assert_eq!(
            check_claims(&identity, &report("shop", "web-1", "u1")),
            Ok(())
        );
    }

    #[test]
    fn reports_about_other_pods_are_refused() {
        let status = review_status("system:serviceaccount:shop:default", Some(("web-1", "u1")));
        let identity = identity(Some(&status)).unwrap();
        for (namespace, name, uid) in [
            ("shop", "web-2", "u1"),
            ("shop", "web-1", "u2"),
            ("other", "web-1", "u1"),
        ] {
            let error = check_claims(&identity, &report(namespace, name, uid)).unwrap_err();
            assert!(error.to_string().contains("shop/web-1 (uid u1)"), "{error}");
        }
    }

    #[test]
    fn unauthenticated_and_wrong_audience_tokens_are_refused() {
        let mut status = review_status("system:serviceaccount:shop:default", Some(("web-1", "u1")));
        status.authenticated = Some(false);
        status.error = Some("token has expired".into());
        assert_eq!(
            identity(Some(&status)),
            Err(Refusal::Unauthenticated("token has expired".into()))
        );
        let mut status = review_status("system:serviceaccount:shop:default", Some(("web-1", "u1")));
        status.audiences = Some(vec!["https://kubernetes.default.svc".into()]);
        assert!(matches!(
            identity(Some(&status)),
            Err(Refusal::Unauthenticated(_))
        ));
        status.audiences = None;
        assert!(matches!(
            identity(Some(&status)),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(identity(None), Err(Refusal::Unauthenticated(_))));
    }

    #[test]
    fn tokens_not_bound_to_a_pod_are_forbidden() {
        let unbound = review_status("system:serviceaccount:shop:default", None);
        assert!(matches!(identity(Some(&unbound)), Err(Refusal::NotAPod(_))));
        let user = review_status("alice", Some(("web-1", "u1")));
        assert!(matches!(identity(Some(&user)), Err(Refusal::NotAPod(_))));
    }

    /// A JWT that passes [`precheck`]: audience procwatch, bound to a pod, valid for an hour;
    /// `signature` is its third part.
    pub(crate) fn pod_jwt(signature: &[u8]) -> String {
        let exp = Timestamp::now().as_second() + 3600;
        let claims = serde_json::json!({
            "aud": [TOKEN_AUDIENCE],
            "exp": exp,
            "kubernetes.io": {"namespace": "shop", "pod": {"name": "web-1", "uid": "u1"}},
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{payload}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    #[test]
    fn precheck_wants_a_live_procwatch_pod_jwt() {
        let now = Timestamp::now();
        assert_eq!(precheck(&pod_jwt(b"sig"), now), Ok(()));
        let jwt = |claims: serde_json::Value| {
            format!("h.{}.s", URL_SAFE_NO_PAD.encode(claims.to_string()))
        };
        let pod = serde_json::json!({"pod": {"name": "web-1"}});
        let far = now.as_second() + 60;
        for (token, why) in [
            ("opaque".to_string(), "not a JWT"),
            ("a.b.c.d".to_string(), "not a JWT"),
            (
                jwt(serde_json::json!({"aud": "other", "exp": far, "kubernetes.io": pod})),
                "audience",
            ),
            (
                jwt(serde_json::json!({"exp": far, "kubernetes.io": pod})),
                "audience",
            ),
            (
                jwt(
                    serde_json::json!({"aud": "procwatch", "exp": now.as_second(), "kubernetes.io": pod}),
                ),
                "expired",
            ),
            (
                jwt(serde_json::json!({"aud": ["procwatch"], "kubernetes.io": pod})),
                "expired",
            ),
            (
                jwt(serde_json::json!({"aud": ["procwatch"], "exp": far})),
                "pod",
            ),
            (
                jwt(
                    serde_json::json!({"aud": ["procwatch"], "exp": far, "kubernetes.io": {"pod": {"name": ""}}}),
                ),
                "pod",
            ),
        ] {
            let refusal = precheck(&token, now).unwrap_err();
            assert!(refusal.to_string().contains(why), "{token}: {refusal}");
        }
    }

    /// However many distinct tokens arrive at once, at most [`MAX_REVIEWS_IN_FLIGHT`] reviews
    /// reach the API server; the others wait for a slot.
    #[tokio::test]
    async fn reviews_in_flight_are_bounded() {
        use tower_test::mock;
        let (service, mut handle) =
            mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let authenticator = std::sync::Arc::new(Authenticator::new(
            Client::new(service, "default"),
            Duration::from_secs(60),
            100,
        ));
        let waiting: Vec<_> = (0..3 * MAX_REVIEWS_IN_FLIGHT)
            .map(|i| {
                let authenticator = authenticator.clone();
                tokio::spawn(async move {
                    authenticator
                        .authenticate(&pod_jwt(format!("t{i}").as_bytes()), None)
                        .await
                })
            })
            .collect();
        let mut held = Vec::new();
        while let Ok(Some(request)) =
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
        {
            held.push(request);
        }
        assert_eq!(held.len(), MAX_REVIEWS_IN_FLIGHT);
        // Answering them frees the slots for the next ones.
        let refused = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {}, "status": {"authenticated": false, "error": "invalid"}
        })
        .to_string();
        let answer = |send: tower_test::mock::SendResponse<http::Response<kube::client::Body>>| {
            send.send_response(http::Response::new(kube::client::Body::from(
                refused.clone().into_bytes(),
            )))
        };
        for (_, send) in held {
            answer(send);
        }
        let mut answered = MAX_REVIEWS_IN_FLIGHT;
        while answered < waiting.len() {
            let (_, send) = handle.next_request().await.unwrap();
            answer(send);
            answered += 1;
        }
        for task in waiting {
            assert!(matches!(
                task.await.unwrap(),
                Err(AuthError::Refused(Refusal::Unauthenticated(_)))
            ));
        }
    }

    #[test]
    fn expiry_is_read_from_the_jwt_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"aud":["procwatch"],"exp":1700000000}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln");
        assert_eq!(
            expiry(&token),
            Some(Timestamp::from_second(1_700_000_000).unwrap())
        );
        assert_eq!(expiry("garbage"), None);
        assert_eq!(expiry("a.!!!.c"), None);
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let mut cache = TokenCache::new(2);
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let refused = || Err(Refusal::Unauthenticated("x".into()));
        cache.insert([1; 32], refused(), now + Duration::from_secs(10), now);
        cache.insert([2; 32], refused(), now + Duration::from_secs(20), now);
        cache.insert([3; 32], refused(), now + Duration::from_secs(30), now);
        assert_eq!(cache.entries.len(), 2);
        assert!(
            cache.get(&[1; 32], now).is_none(),
            "the soonest to expire was dropped"
        );
        assert!(cache.get(&[3; 32], now).is_some());
        assert!(
            cache.get(&[3; 32], later).is_none(),
            "expired entries are not served"
        );
        cache.insert([4; 32], refused(), now, now);
        assert!(
            cache.get(&[4; 32], now).is_none(),
            "already expired results are not kept"
        );
    }
}
