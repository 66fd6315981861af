//! The chat page a newcomer opens after `cargo run --release`: three static
//! files built into the binary (no build step, nothing fetched from elsewhere),
//! served on the chat port. It logs in (with a token when the node asks for
//! one), chats one-to-one and in rooms, and shows who is in a room and online.

/// A file of the page.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

const INDEX: Asset = Asset { content_type: "text/html; charset=utf-8", body: include_str!("web/index.html") };
const SCRIPT: Asset = Asset { content_type: "text/javascript; charset=utf-8", body: include_str!("web/app.js") };
const STYLE: Asset = Asset { content_type: "text/css; charset=utf-8", body: include_str!("web/style.css") };

/// The file served at `path`, if the page has one there.
pub fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/index.html" => Some(&INDEX),
        "/app.js" => Some(&SCRIPT),
        "/style.css" => Some(&STYLE),
        _ => None,
    }
}
