//! `--devconsole`: a small self-contained page (inline CSS and JavaScript, nothing
//! loaded from elsewhere) for trying the endpoint from a browser: connect, type messages,
//! see the replies and how the connection closed. It owns that page and nothing else.
//!
//! The page is a constant: the server inserts nothing from the request into it (the
//! WebSocket URL is computed in the browser from `location`, `wss://` under `https:`), and
//! messages are shown with `textContent`, so there is nothing to inject (websocketd's
//! console reflected the request URL unescaped). A Content-Security-Policy keeps it that
//! way: no external scripts, styles, frames or forms.
//!
//! The page connects and sends only when the person using it clicks or types: nothing in
//! its URL makes it act by itself. Any site can send a browser to this page, and the
//! WebSocket it opens is same-origin, so a page that connected or sent on load would let
//! that site talk to the program past the origin check.

use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::body::{self, Body};

/// The answer to any plain request when `--devconsole` is on.
pub fn serve(method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = body::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let mut resp = Response::new(body::full(PAGE));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    resp
}

/// The page. Kept small; edit with care: nothing from the request may ever go in here.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsbridge console</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; display: flex; flex-direction: column; height: 100vh; color: #222; }
  header, form { display: flex; gap: .5em; padding: .6em; background: #f3f3f3; }
  header { border-bottom: 1px solid #ddd; } form { border-top: 1px solid #ddd; }
  input { flex: 1; font: 13px ui-monospace, monospace; padding: .35em; }
  #log { flex: 1; overflow: auto; margin: 0; padding: .6em; font: 13px/1.5 ui-monospace, monospace; white-space: pre-wrap; }
  .in { color: #05c; } .out { color: #070; } .info { color: #777; } .err { color: #c00; }
</style>
</head>
<body>
<header>
  <input id="url" aria-label="WebSocket URL" spellcheck="false">
  <button id="open">Connect</button>
  <button id="close" disabled>Disconnect</button>
</header>
<pre id="log" aria-live="polite"></pre>
<form id="form">
  <input id="msg" aria-label="Message" placeholder="Type a message, Enter sends it" autocomplete="off" disabled>
  <button id="send" disabled>Send</button>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const MAX_LINES = 2000;
let ws = null;
$("url").value = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname + location.search;

function show(kind, text) {
  const line = document.createElement("div");
  line.className = kind;
  line.textContent = { in: "\u2190 ", out: "\u2192 ", info: "", err: "" }[kind] + text;
  const log = $("log");
  log.appendChild(line);
  while (log.childNodes.length > MAX_LINES) log.removeChild(log.firstChild);
  log.scrollTop = log.scrollHeight;
}

function connected(on) {
  $("open").disabled = on; $("url").disabled = on;
  $("close").disabled = !on; $("msg").disabled = !on; $("send").disabled = !on;
  if (on) $("msg").focus();
}

function connect() {
  let sock;
  try { sock = new WebSocket($("url").value); } catch (e) { show("err", "error: " + e.message); return; }
  ws = sock;
  show("info", "connecting to " + sock.url);
  sock.onopen = () => { show("info", "open"); connected(true); };
  sock.onmessage = (e) => show("in", typeof e.data === "string" ? e.data : "[binary message, " + (e.data.size || e.data.byteLength) + " bytes]");
  sock.onerror = () => show("err", "error");
  sock.onclose = (e) => { show("info", "closed (code " + e.code + (e.reason ? ", " + e.reason : "") + ")"); if (ws === sock) { ws = null; connected(false); } };
}

function send(text) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(text);
  show("out", text);
}

$("open").onclick = () => connect();
$("close").onclick = () => { if (ws) ws.close(1000); };
$("form").onsubmit = (e) => { e.preventDefault(); send($("msg").value); $("msg").value = ""; };
</script>
</body>
</html>
"##;
