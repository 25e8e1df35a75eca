//! Requests that cross the boundary already parsed, and responses that
//! cross already shaped (since 0.1.2).
//!
//! Before 0.1.2 the host copied the method, the target and every header
//! into strings ([`crate::FfiRequest`]) and the plugin parsed them all
//! again. A [`ParsedRequest`] carries what the host has already parsed
//! and validated: the method as an enum, the path and query split, the
//! headers as one block of validated pairs (lower-case names, values of
//! visible ASCII, nothing for the plugin to re-check), the body, and the
//! client that sent it. A [`ParsedResponse`] shares its headers and body
//! with whatever cache the plugin keeps, so a cached answer crosses
//! without a copy or an allocation.
//!
//! The host calls [`crate::PluginMod::handle_parsed`] when a plugin has it;
//! [`crate::export_plugin!`] always exports it, and a plugin that does not
//! override [`crate::Plugin::handle_parsed`] gets the request converted
//! into an [`FfiRequest`] for its `handle`.

use std::{fmt, net::SocketAddr};

use abi_stable::{
    StableAbi,
    std_types::{RArc, RString, RVec, Tuple2},
};

use crate::{FfiRequest, FfiResponse, FfiSharedResponse, Header};

/// The method of a request.
///
/// Every method the host serves has a variant; anything else is
/// [`HttpMethod::Other`], with its name in [`ParsedRequest::method_name`].
///
/// ```
/// use host_api::HttpMethod;
/// assert_eq!(HttpMethod::from_name("GET"), HttpMethod::Get);
/// assert_eq!(HttpMethod::from_name("PROPFIND"), HttpMethod::Other);
/// assert_eq!(HttpMethod::Put.name(), Some("PUT"));
/// ```
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HttpMethod {
    /// `GET`.
    #[default]
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// Any other method: see [`ParsedRequest::method_name`].
    Other,
}

impl HttpMethod {
    /// The variant for a method name (case-sensitive, as HTTP is).
    pub fn from_name(name: &str) -> Self {
        match name {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }

    /// The method's name, `None` for [`HttpMethod::Other`].
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Self::Get => Some("GET"),
            Self::Head => Some("HEAD"),
            Self::Post => Some("POST"),
            Self::Put => Some("PUT"),
            Self::Patch => Some("PATCH"),
            Self::Delete => Some("DELETE"),
            Self::Options => Some("OPTIONS"),
            Self::Other => None,
        }
    }
}

/// Where one header of a [`Headers`] block ends: the name ends at
/// `name_end`, the value right after it at `value_end` (byte offsets into
/// the block's text; the next header starts where this one's value ends).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderSpan {
    name_end: u32,
    value_end: u32,
}

/// HTTP headers as one block of text and the offsets of each name and
/// value: two allocations for any number of headers.
///
/// Headers the host builds are validated: names are lower case, values are
/// visible ASCII (and tabs and spaces), so a plugin uses them as they are.
/// A block made by a plugin for a response is checked by the host.
///
/// ```
/// use host_api::Headers;
/// let mut h = Headers::default();
/// h.push("content-type", "application/json");
/// h.push("x-tag", "a");
/// h.push("X-Tag", "b");
/// assert_eq!(h.get("Content-Type"), Some("application/json"));
/// assert_eq!(h.get_all("x-tag").collect::<Vec<_>>(), ["a", "b"]);
/// assert_eq!(h.len(), 3);
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    text: RString,
    spans: RVec<HeaderSpan>,
}

impl Headers {
    /// An empty block with room for `headers` headers of `bytes` bytes of
    /// names and values together.
    pub fn with_capacity(headers: usize, bytes: usize) -> Self {
        Self {
            text: RString::with_capacity(bytes),
            spans: RVec::with_capacity(headers),
        }
    }

    /// Appends a header. Returns `false` (and appends nothing) when the
    /// block would pass 4 GiB.
    pub fn push(&mut self, name: &str, value: &str) -> bool {
        let Some(value_end) = self
            .text
            .len()
            .checked_add(name.len())
            .and_then(|n| n.checked_add(value.len()))
            .and_then(|n| u32::try_from(n).ok())
        else {
            return false;
        };
        let name_end = (self.text.len() + name.len()) as u32;
        self.text.push_str(name);
        self.text.push_str(value);
        self.spans.push(HeaderSpan {
            name_end,
            value_end,
        });
        true
    }

    /// Appends a header (builder style).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.push(name, value);
        self
    }

    /// How many headers the block holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the block holds no header.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Every `(name, value)` pair, in order. A block whose offsets do not
    /// fit its text (never one the host or this crate made) ends early
    /// instead of panicking.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let text = self.text.as_str();
        let mut start = 0usize;
        self.spans.iter().map_while(move |span| {
            let (name_end, value_end) = (span.name_end as usize, span.value_end as usize);
            let name = text.get(start..name_end)?;
            let value = text.get(name_end..value_end)?;
            start = value_end;
            Some((name, value))
        })
    }

    /// The first value of the header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every value of the header `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The headers as the pairs of [`FfiRequest::headers`].
    pub fn to_pairs(&self) -> RVec<Header> {
        self.iter()
            .map(|(n, v)| Tuple2(RString::from(n), RString::from(v)))
            .collect()
    }

    /// A block of `pairs`, in order.
    pub fn from_pairs(pairs: &[Header]) -> Self {
        let bytes = pairs.iter().map(|h| h.0.len() + h.1.len()).sum();
        let mut block = Self::with_capacity(pairs.len(), bytes);
        for h in pairs {
            block.push(h.0.as_str(), h.1.as_str());
        }
        block
    }
}

// Header values can be credentials (`authorization`, `x-api-key`): Debug
// shows the names only.
impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(n, _)| n)).finish()
    }
}

/// The address of a request's peer: IPv4, IPv6 or unknown (a connection
/// that is not over IP).
///
/// ```
/// use host_api::PeerAddr;
/// let peer = PeerAddr::from("127.0.0.1:4242".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(peer.to_string(), "127.0.0.1:4242");
/// assert_eq!(PeerAddr::default().to_string(), "unknown");
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeerAddr {
    /// 4 for IPv4, 6 for IPv6, 0 when unknown.
    pub family: u8,
    /// The port, 0 when unknown.
    pub port: u16,
    /// The address: the first 4 bytes for IPv4, all 16 for IPv6.
    pub ip: [u8; 16],
}

impl PeerAddr {
    /// The address as a socket address; `None` when unknown.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        match self.family {
            4 => {
                let [a, b, c, d, ..] = self.ip;
                Some(SocketAddr::from(([a, b, c, d], self.port)))
            }
            6 => Some(SocketAddr::from((self.ip, self.port))),
            _ => None,
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        let mut ip = [0u8; 16];
        let family = match addr {
            SocketAddr::V4(a) => {
                ip[..4].copy_from_slice(&a.ip().octets());
                4
            }
            SocketAddr::V6(a) => {
                ip = a.ip().octets();
                6
            }
        };
        Self {
            family,
            port: addr.port(),
            ip,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_socket_addr() {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a request proved it may call the API.
///
/// Open-ended: a later host may report a method this crate does not name
/// yet, so it is a number with named constants rather than an enum, and
/// [`AuthMethod::name`] says `"other"` for a value it does not know.
///
/// ```
/// use host_api::AuthMethod;
/// assert_eq!(AuthMethod::BEARER.name(), "bearer");
/// assert_eq!(AuthMethod(200).name(), "other");
/// ```
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AuthMethod(pub u8);

impl AuthMethod {
    /// No credential: the host has no API token, or the route is public.
    pub const NONE: Self = Self(0);
    /// `Authorization: Bearer <token>`.
    pub const BEARER: Self = Self(1);
    /// `X-Milady-Token: <token>`.
    pub const MILADY_TOKEN: Self = Self(2);
    /// `X-Api-Key: <token>`.
    pub const API_KEY: Self = Self(3);

    /// A stable lower-case name, e.g. for an audit line.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "none",
            1 => "bearer",
            2 => "milady_token",
            3 => "api_key",
            _ => "other",
        }
    }
}

/// Who sent a request: what the host knows of the client.
///
/// Nothing here is a secret: the token is never carried, only its
/// fingerprint (`"hmac-sha256:"` and 16 hex digits of an HMAC under a key
/// the host keeps), which tells two tokens apart and reveals nothing of
/// either.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// The peer's address.
    pub peer: PeerAddr,
    /// How the request authenticated.
    pub auth: AuthMethod,
    /// The fingerprint of the token it presented; empty when none.
    pub token_fingerprint: RString,
}

/// A request as the host forwards it to [`crate::PluginMod::handle_parsed`].
///
/// The host has parsed and checked everything here: a plugin matches on
/// [`ParsedRequest::method`] and compares [`ParsedRequest::path`] without
/// any further parsing. The body has been read in full, within the host's
/// size limit and deadline.
///
/// ```
/// use host_api::{HttpMethod, ParsedRequest};
/// let req = ParsedRequest::new(HttpMethod::Get, "/api/weather", "city=Oslo");
/// assert_eq!(req.target(), "/api/weather?city=Oslo");
/// let ffi = req.to_ffi_request();
/// assert_eq!((ffi.method.as_str(), ffi.uri.as_str()), ("GET", "/api/weather?city=Oslo"));
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Default)]
pub struct ParsedRequest {
    /// The method.
    pub method: HttpMethod,
    /// The method's name when `method` is [`HttpMethod::Other`]; empty
    /// otherwise.
    pub method_name: RString,
    /// The path as the client sent it (percent-encoding kept), starting
    /// with `/`.
    pub path: RString,
    /// The query without its `?`; empty when there is none.
    pub query: RString,
    /// The request headers, in arrival order.
    pub headers: Headers,
    /// The complete request body.
    pub body: RVec<u8>,
    /// Who sent it.
    pub client: ClientInfo,
}

impl ParsedRequest {
    /// A request without headers, body or client details (for tests and
    /// in-process callers).
    pub fn new(method: HttpMethod, path: &str, query: &str) -> Self {
        Self {
            method,
            path: path.into(),
            query: query.into(),
            ..Self::default()
        }
    }

    /// The method's name, whichever variant it is.
    pub fn method_str(&self) -> &str {
        self.method
            .name()
            .unwrap_or_else(|| self.method_name.as_str())
    }

    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Path and query as the client sent them, e.g. `/api/x?y=1`.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.to_string()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The same request as an [`FfiRequest`], for a plugin's `handle`.
    pub fn to_ffi_request(&self) -> FfiRequest {
        FfiRequest {
            method: self.method_str().into(),
            uri: self.target().into(),
            headers: self.headers.to_pairs(),
            body: self.body.clone(),
        }
    }

    /// An [`FfiRequest`] (from a host older than 0.1.2) as a parsed
    /// request: the method named, the target split at its `?`, the headers
    /// packed as they are (such a host validated them already).
    pub fn from_ffi_request(request: FfiRequest) -> Self {
        let method = HttpMethod::from_name(&request.method);
        let (path, query) = request
            .uri
            .split_once('?')
            .unwrap_or((request.uri.as_str(), ""));
        Self {
            method,
            method_name: match method {
                HttpMethod::Other => request.method.clone(),
                _ => RString::new(),
            },
            path: path.into(),
            query: query.into(),
            headers: Headers::from_pairs(&request.headers),
            body: request.body,
            client: ClientInfo::default(),
        }
    }

    /// [`ParsedRequest::to_ffi_request`], moving the body instead of
    /// copying it.
    pub fn into_ffi_request(mut self) -> FfiRequest {
        let body = std::mem::take(&mut self.body);
        FfiRequest {
            body,
            ..self.to_ffi_request()
        }
    }
}

// The body and header values may carry secrets: never print them.
impl fmt::Debug for ParsedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedRequest")
            .field("method", &self.method_str())
            .field("path", &self.path)
            .field("query_len", &self.query.len())
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("client", &self.client)
            .finish()
    }
}

/// A response from [`crate::PluginMod::handle_parsed`]: status, headers and
/// body, the last two shared so a plugin can answer from its cache with
/// two reference-count increments.
///
/// The host checks every header (names and values must be valid HTTP;
/// framing and hop-by-hop headers are dropped, the host frames every
/// response) and sends the body without copying it.
///
/// ```
/// let r = host_api::ParsedResponse::json(200, br#"{"ok":true}"#.to_vec());
/// assert_eq!(r.headers.get("content-type"), Some("application/json; charset=utf-8"));
/// let e = host_api::ParsedResponse::error(404, host_api::ErrorCode::NotFound, "no such route");
/// assert_eq!(e.status, 404);
/// ```
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct ParsedResponse {
    /// Status code, e.g. `200`.
    pub status: u16,
    /// Response headers.
    pub headers: RArc<Headers>,
    /// The complete response body.
    pub body: RArc<RVec<u8>>,
}

impl ParsedResponse {
    /// A JSON response with the given status and already-serialised body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: RArc::new(
                Headers::with_capacity(1, 43)
                    .with("content-type", "application/json; charset=utf-8"),
            ),
            body: RArc::new(RVec::from(body.into())),
        }
    }

    /// The JSON error shape every host and plugin error uses (see
    /// [`crate::ErrorCode`]).
    pub fn error(status: u16, code: impl AsRef<str>, message: &str) -> Self {
        Self::json(status, crate::codes::error_body(code, message))
    }
}

impl From<FfiSharedResponse> for ParsedResponse {
    fn from(response: FfiSharedResponse) -> Self {
        Self {
            status: response.status,
            headers: RArc::new(Headers::from_pairs(&response.headers)),
            body: response.body,
        }
    }
}

impl From<ParsedResponse> for FfiSharedResponse {
    /// For a host older than 0.1.2: the headers as pairs, the body still
    /// shared.
    fn from(response: ParsedResponse) -> Self {
        Self {
            status: response.status,
            headers: response.headers.to_pairs(),
            body: response.body,
        }
    }
}

impl From<FfiResponse> for ParsedResponse {
    fn from(response: FfiResponse) -> Self {
        FfiSharedResponse::from(response).into()
    }
}

impl fmt::Debug for ParsedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedResponse")
            .field("status", &self.status)
            .field("headers", &*self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_pairs_in_order() {
        let pairs = RVec::from(vec![
            Tuple2(RString::from("host"), RString::from("127.0.0.1")),
            Tuple2(RString::from("x-empty"), RString::new()),
            Tuple2(RString::from("accept"), RString::from("*/*")),
        ]);
        let block = Headers::from_pairs(&pairs);
        assert_eq!(block.to_pairs(), pairs);
        assert_eq!(block.get("x-empty"), Some(""));
        assert_eq!(block.get("missing"), None);
    }

    #[test]
    fn a_block_with_offsets_past_its_text_ends_early() {
        let mut block = Headers::default().with("a", "1");
        block.spans.push(HeaderSpan {
            name_end: 100,
            value_end: 200,
        });
        assert_eq!(block.iter().collect::<Vec<_>>(), [("a", "1")]);
    }

    #[test]
    fn debug_never_shows_values_or_bodies() {
        let mut req = ParsedRequest::new(HttpMethod::Put, "/api/x", "token=CANARY-Q");
        req.headers.push("authorization", "Bearer CANARY-H");
        req.body = RVec::from(b"CANARY-B".to_vec());
        let text = format!("{req:?}");
        assert!(!text.contains("CANARY"), "{text}");
        assert!(text.contains("authorization"), "{text}");
    }

    #[test]
    fn other_methods_keep_their_name() {
        let req = ParsedRequest {
            method: HttpMethod::Other,
            method_name: "PROPFIND".into(),
            ..ParsedRequest::new(HttpMethod::Other, "/", "")
        };
        assert_eq!(req.to_ffi_request().method.as_str(), "PROPFIND");
        for m in [
            HttpMethod::Get,
            HttpMethod::Head,
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Patch,
            HttpMethod::Delete,
            HttpMethod::Options,
        ] {
            assert_eq!(HttpMethod::from_name(m.name().unwrap_or_default()), m);
        }
    }

    #[test]
    fn peers_of_both_families_round_trip() {
        for addr in ["10.1.2.3:80", "[::1]:2138"] {
            let sock: SocketAddr = addr.parse().expect("addr");
            assert_eq!(PeerAddr::from(sock).to_socket_addr(), Some(sock));
        }
    }

    #[test]
    fn an_ffi_request_parses_back() {
        let mut req = ParsedRequest::new(HttpMethod::Delete, "/api/x", "a=1?b");
        req.headers.push("x-h", "v");
        let back = ParsedRequest::from_ffi_request(req.to_ffi_request());
        assert_eq!(back.method, HttpMethod::Delete);
        assert_eq!(
            (back.path.as_str(), back.query.as_str()),
            ("/api/x", "a=1?b")
        );
        assert_eq!(back.header("x-h"), Some("v"));
    }

    #[test]
    fn into_ffi_moves_the_body() {
        let mut req = ParsedRequest::new(HttpMethod::Post, "/p", "");
        req.body = RVec::from(vec![1u8; 64]);
        let ptr = req.body.as_ptr();
        let ffi = req.into_ffi_request();
        assert_eq!(ffi.body.as_ptr(), ptr);
    }
}
