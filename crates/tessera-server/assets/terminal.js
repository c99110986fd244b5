// Tessera web terminal: xterm.js over /ws/viewer.
//
// The page's CSRF token buys a viewer token for this session from
// POST /sessions/<id>/viewer-token (same site, cookie session). The token
// goes to /ws/viewer as a WebSocket subprotocol ("tessera.token.<token>"
// beside "tessera.viewer"), never in the URL. Messages are protobuf
// Envelopes (proto/tessera.proto); the few this page needs are encoded and
// decoded by hand below.
(function () {
  "use strict";

  // --- protobuf, just enough (assets/protobuf.js) ----------------------
  var pb = window.tesseraProtobuf;
  var concat = pb.concat, bytesField = pb.bytesField, intField = pb.intField,
    str = pb.str, parse = pb.parse, text = pb.text;

  var ENV = { error: 6, data: 21, resize: 22, close: 23, ended: 24, ready: 27 };

  // --- the page --------------------------------------------------------
  var el = document.getElementById("terminal");
  var status = document.getElementById("term-status");
  if (!el || !window.Terminal) { return; }
  var session = el.getAttribute("data-session");
  var control = el.getAttribute("data-control") === "1";
  function say(msg) { status.textContent = msg; }

  var term = new window.Terminal({ disableStdin: !control, cursorBlink: control, convertEol: false,
    fontFamily: "monospace", fontSize: 14, scrollback: 5000 });
  var fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  if (!control) { el.classList.add("readonly"); }
  try { fit.fit(); } catch (e) { /* not laid out yet */ }
  window.tesseraTerminal = term;

  var ws = null, channel = 1;
  function send(bytes) { if (ws && ws.readyState === 1) { ws.send(bytes); } }
  function sendResize() {
    if (!control) { return; }
    send(bytesField(ENV.resize, concat([bytesField(1, str(session)), intField(2, channel),
      intField(3, term.cols), intField(4, term.rows)])));
  }

  fetch("/sessions/" + encodeURIComponent(session) + "/viewer-token", {
    method: "POST", credentials: "same-origin",
    headers: { "x-csrf-token": el.getAttribute("data-csrf") }
  }).then(function (r) {
    return r.json().then(function (body) {
      if (!r.ok) { throw new Error((body.error && body.error.message) || ("HTTP " + r.status)); }
      return body;
    });
  }).then(function (t) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + "/ws/viewer?session=" + encodeURIComponent(session),
      ["tessera.viewer", "tessera.token." + t.token]);
    ws.binaryType = "arraybuffer";
    ws.onmessage = function (ev) {
      var env = parse(new Uint8Array(ev.data));
      var body;
      if ((body = env[ENV.data])) {
        term.write(parse(body[0])[3] ? parse(body[0])[3][0] : new Uint8Array(0));
      } else if ((body = env[ENV.ready])) {
        var f = parse(body[0]);
        channel = f[3] ? f[3][0] : 1;
        el.setAttribute("data-access", text(f, 2));
        say("Connected to " + text(f, 4) + (control ? "" : " (view only)") + ".");
        sendResize();
        if (control) { term.focus(); }
      } else if ((body = env[ENV.close])) {
        say("The shell ended: " + (text(parse(body[0]), 4) || "closed") + ".");
      } else if ((body = env[ENV.ended])) {
        var e = parse(body[0]);
        say("The session ended: " + (text(e, 3) || text(e, 2)) + ".");
      } else if ((body = env[ENV.error])) {
        say("Refused: " + text(parse(body[0]), 2));
      }
    };
    ws.onclose = function (ev) {
      if (!/ended|Refused/.test(status.textContent)) {
        say("Disconnected" + (ev.reason ? " (" + ev.reason + ")" : "") + ". Reload the page to reconnect.");
      }
    };
  }).catch(function (e) { say("Could not open the terminal: " + e.message); });

  term.onData(function (data) {
    if (!control) { return; }
    send(bytesField(ENV.data, concat([bytesField(1, str(session)), intField(2, channel), bytesField(3, str(data))])));
  });
  term.onResize(sendResize);
  // Copy on select, where the browser lets a page write the clipboard
  // (a secure context: https, or this machine).
  term.onSelectionChange(function () {
    var text = term.getSelection();
    if (text && navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).catch(function () { /* refused: select and copy by hand */ });
    }
  });
  window.addEventListener("resize", function () { try { fit.fit(); } catch (e) { /* hidden */ } });
})();
