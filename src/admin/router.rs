//! A small HTTP/1.1 router for the admin listener: one request per
//! connection, its head parsed by httparse, its body (if any) read by
//! `Content-Length`, routed by method and path to a handler, answered, closed.
//!
//! Handlers see a [`Request`] (method, path, query, headers, body, and the
//! bearer token of `Authorization`) and return a [`Response`]; a path served
//! for another method answers 405 with `Allow`, an unknown path 404.

use std::io::{self, Read, Write};

/// Largest request head: admin requests are a line and a few headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 32;
/// Largest request body (POST endpoints take small JSON documents).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a handler gets.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without its query.
    pub path: String,
    pub query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The token of `Authorization: Bearer TOKEN`.
    pub fn bearer(&self) -> Option<&str> {
        let value = std::str::from_utf8(self.header("Authorization")?).ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// What a handler returns.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::with_type(status, "text/plain; charset=utf-8", body.into().into_bytes())
    }

    pub fn with_type(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response { status, content_type, headers: Vec::new(), body }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the response and leaves the connection to be closed.
    ///
    /// # Errors
    /// When the socket does not take it.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        out.write_all(&self.body)?;
        out.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

type Handler = Box<dyn Fn(&Request) -> Response + Send + Sync>;

/// Routes by exact method and path.
#[derive(Default)]
pub struct Router {
    routes: Vec<(&'static str, &'static str, Handler)>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    pub fn get(self, path: &'static str, handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Router {
        self.on("GET", path, handler)
    }

    pub fn post(self, path: &'static str, handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Router {
        self.on("POST", path, handler)
    }

    fn on(
        mut self,
        method: &'static str,
        path: &'static str,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Router {
        self.routes.push((method, path, Box::new(handler)));
        self
    }

    /// The handler's response, or 404 / 405.
    pub fn route(&self, request: &Request) -> Response {
        let on_path: Vec<_> = self.routes.iter().filter(|(_, path, _)| *path == request.path).collect();
        // HEAD is GET without the body (what some probes send).
        let method = if request.method == "HEAD" { "GET" } else { request.method.as_str() };
        match on_path.iter().find(|(m, _, _)| *m == method) {
            Some((_, _, handler)) => {
                let mut response = handler(request);
                if request.method == "HEAD" {
                    response.body.clear();
                }
                response
            }
            None if on_path.is_empty() => {
                let paths: Vec<&str> = self.routes.iter().map(|(_, p, _)| *p).collect();
                Response::text(404, format!("no such endpoint: {} (served: {})\n", request.path, paths.join(" ")))
            }
            None => {
                let allow: Vec<&str> = on_path.iter().map(|(m, _, _)| *m).collect();
                Response::text(405, format!("{} takes {}\n", request.path, allow.join(", ")))
                    .header("Allow", allow.join(", "))
            }
        }
    }
}

/// Reads one request from `stream` with a body of at most [`MAX_BODY_BYTES`].
pub fn read_request(stream: &mut impl Read) -> Result<Option<Request>, Response> {
    read_request_within(stream, MAX_BODY_BYTES)
}

/// Reads one request from `stream`, its body at most `max_body` bytes:
/// `Ok(None)` when the peer sent nothing, `Err(response)` for a request
/// that cannot be served (the response says why).
pub fn read_request_within(stream: &mut impl Read, max_body: usize) -> Result<Option<Request>, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(Response::text(400, "request cut short\n")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) if buf.is_empty() => return Ok(None),
            Err(_) => return Err(Response::text(408, "request not received in time\n")),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let request = head_of(&parsed)?;
                let body = buf.split_off(head_len);
                return read_body(stream, request, body, max_body).map(Some);
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(Response::text(431, "request head too large\n"));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(Response::text(431, "too many headers\n")),
            Err(e) => return Err(Response::text(400, format!("malformed HTTP request: {e}\n"))),
        }
    }
}

/// The parts of a parsed head a handler sees.
fn head_of(parsed: &httparse::Request<'_, '_>) -> Result<Request, Response> {
    let full = parsed.path.unwrap_or("/");
    let (path, query) = match full.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (full.to_string(), None),
    };
    let headers = parsed.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
    let request =
        Request { method: parsed.method.unwrap_or("GET").to_string(), path, query, headers, body: Vec::new() };
    if request.header("Transfer-Encoding").is_some() {
        return Err(Response::text(501, "chunked bodies are not accepted: send Content-Length\n"));
    }
    Ok(request)
}

/// Reads the body that `Content-Length` announces (`already` holds what
/// came with the head).
fn read_body(
    stream: &mut impl Read,
    mut request: Request,
    mut already: Vec<u8>,
    max_body: usize,
) -> Result<Request, Response> {
    let length = match request.header("Content-Length") {
        None => 0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| Response::text(400, "Content-Length is not a number\n"))?,
    };
    if length > max_body {
        return Err(Response::text(413, format!("body over {max_body} bytes\n")));
    }
    already.truncate(length);
    let missing = length - already.len();
    if missing > 0 {
        let mut rest = vec![0; missing];
        stream.read_exact(&mut rest).map_err(|_| Response::text(400, "body cut short\n"))?;
        already.extend_from_slice(&rest);
    }
    request.body = already;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new()
            .get("/a", |_| Response::text(200, "a\n"))
            .post("/b", |r| Response::text(200, format!("{} {:?}", r.body.len(), r.bearer())))
    }

    fn exchange(raw: &str) -> Response {
        match read_request(&mut raw.as_bytes()) {
            Ok(Some(request)) => router().route(&request),
            Ok(None) => Response::text(0, ""),
            Err(response) => response,
        }
    }

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(exchange("GET /a?x=1 HTTP/1.1\r\n\r\n").body, b"a\n");
        assert_eq!(exchange("HEAD /a HTTP/1.1\r\n\r\n").body, b"");
        assert_eq!(exchange("GET /nope HTTP/1.1\r\n\r\n").status, 404);
        let wrong = exchange("POST /a HTTP/1.1\r\n\r\n");
        assert_eq!((wrong.status, wrong.headers.clone()), (405, vec![("Allow", "GET".to_string())]));
    }

    #[test]
    fn reads_bodies_and_bearer_tokens() {
        let posted = exchange("POST /b HTTP/1.1\r\nAuthorization: Bearer k3y\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(String::from_utf8(posted.body).unwrap(), "5 Some(\"k3y\")");
        assert_eq!(exchange("POST /b HTTP/1.1\r\nContent-Length: 999999\r\n\r\n").status, 413);
        assert_eq!(exchange("POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").status, 501);
        assert_eq!(exchange("POST /b HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc").status, 400);
        assert_eq!(exchange("GARBAGE\0\r\n\r\n").status, 400);
        assert_eq!(exchange(&format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(20_000))).status, 431);
        assert_eq!(exchange("").status, 0);
    }
}
