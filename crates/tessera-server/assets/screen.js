// Tessera web screen viewer: a screen session on a <canvas>, over /ws/viewer.
//
// Like the web terminal, the page's CSRF token buys a viewer token from
// POST /sessions/<id>/viewer-token; the token goes to /ws/viewer as a
// WebSocket subprotocol, never in the URL. Messages are protobuf Envelopes
// (proto/tessera.proto), the few this page needs encoded and decoded by
// hand (assets/protobuf.js).
//
// Two codecs (docs/PROTOCOL.md §10, §11). raw-zstd always: each part's
// data is one zstd frame (decompressed by the vendored fzstd) of R,G,B
// pixels for the part's rectangles, after the frame's copies. h264 as
// well when the browser has WebCodecs and its VideoDecoder says it can
// decode what the agent's encoder makes (Constrained Baseline up to level
// 5.1): a frame is one Annex B access unit, handed to the VideoDecoder as
// it is (no description: Annex B), configured from the keyframe's SPS;
// each decoded VideoFrame is drawn cropped to the format's size and
// closed. A decoder failure asks for a keyframe; a second one before any
// frame decoded makes the page reconnect declaring raw-zstd alone (a
// viewer declares its decoders once per connection) and say so.
//
// Rules kept from the protocol (§9): ScreenDecoders first after
// ViewerReady; a frame is drawn only once whole, and only if it is a
// keyframe or follows the last frame drawn, otherwise the page asks for a
// keyframe (once, again after 2 s if none came); every frame drawn is
// acknowledged. Input only with control access: pointer and keys (by
// physical key, KeyboardEvent.code → USB usage through the server's key
// table, plus the keysym of the character typed), SpecialKeys from the
// "Send keys" menu, and ReleaseInput when the picture loses focus or the
// pointer leaves with a button held.
(function () {
  "use strict";

  // --- protobuf, just enough (assets/protobuf.js) ----------------------
  var pb = window.tesseraProtobuf;
  var concat = pb.concat, bytesField = pb.bytesField, intField = pb.intField,
    str = pb.str, parse = pb.parse, text = pb.text, num = pb.num, list = pb.list;

  var ENV = { error: 6, close: 23, ended: 24, ready: 27, screen: 60 };
  // Screen body fields.
  var SCR = { decoders: 11, format: 13, frame: 14, ack: 15, keyframe: 17, pointer: 18, key: 19,
    special: 20, release: 23, notice: 24 };
  var RAW = "raw-zstd", H264 = "h264";
  var CODEC_NAMES = { "raw-zstd": "lossless raw-zstd", h264: "H.264" };
  // The most the agent's OpenH264 encoder makes: Constrained Baseline at
  // level 5.1 (3840×2160). The page offers h264 only if this decodes.
  var H264_PROBE = "avc1.42C033";
  var MAX_FRAME_BYTES = 64 * 1024 * 1024;

  // --- the page --------------------------------------------------------
  var canvas = document.getElementById("screen");
  var status = document.getElementById("screen-status");
  if (!canvas || !canvas.getContext) { return; }
  var session = canvas.getAttribute("data-session");
  var control = canvas.getAttribute("data-control") === "1";
  var codes = JSON.parse(canvas.getAttribute("data-keys") || "{}");
  var ctx = canvas.getContext("2d");
  var fit = document.getElementById("screen-fit");
  var ended = false;
  function say(msg) { status.textContent = msg; }
  function stop(msg) { ended = true; say(msg); canvas.setAttribute("data-ended", "1"); }
  if (!window.fzstd) { say("The zstd decoder did not load; reload the page."); return; }

  // What the page shows, for people and for tests.
  var view = { frames: 0, width: 0, height: 0, device: "", access: "", sent: 0,
    decoders: [], codec: "", h264: "", avc: "" };
  window.tesseraScreen = view;

  var ws = null, channel = 2, device = "";
  function send(body) {
    if (!ws || ws.readyState !== 1 || ended) { return; }
    ws.send(bytesField(ENV.screen, concat([bytesField(1, str(session)), intField(2, channel), body])));
  }
  function sendInput(body) {
    if (!control) { return; }
    view.sent++;
    send(body);
  }

  // --- frames ------------------------------------------------------------
  var picture = null;        // ImageData of the whole remote screen (raw-zstd)
  var codec = "";            // the codec of the current format
  var pending = null;        // the frame being put together from its parts
  var last = null;           // number of the last frame drawn
  var lastWhole = null;      // number of the last frame put together
  var resync = "expected";   // expected (after a format) | asked | no
  var askedAt = 0;

  function askKeyframe() {
    resync = "asked";
    askedAt = Date.now();
    send(bytesField(SCR.keyframe, new Uint8Array(0)));
  }
  function broken(code) {
    pending = null;
    if (resync !== "asked") {
      canvas.setAttribute("data-resync", code);
      askKeyframe();
    }
  }
  setInterval(function () {
    if (resync === "asked" && Date.now() - askedAt > 2000 && !ended) { askKeyframe(); }
  }, 1000);

  // A frame is on the canvas: count and acknowledge it.
  function shown(number) {
    view.frames++;
    canvas.setAttribute("data-frame", String(number));
    send(bytesField(SCR.ack, intField(1, number)));
  }

  function connected() {
    say("Connected to " + device + ": " + view.width + "×" + view.height + " in " +
      (CODEC_NAMES[codec] || codec) + (control ? "" : " (view only)") + "." +
      (h264.failed ? " " + h264.failed : ""));
  }

  function onFormat(f) {
    var c = text(f, 1);
    if (decoders().indexOf(c) < 0) {
      stop("The device sends " + c + ", which this page cannot show. Use tessera view.");
      return;
    }
    var w = num(f, 3), h = num(f, 4);
    if (w < 1 || h < 1 || w > 16384 || h > 16384) { stop("The device's screen size is not usable."); return; }
    closeVideo();
    canvas.width = w; canvas.height = h;
    picture = ctx.createImageData(w, h);
    for (var i = 3; i < picture.data.length; i += 4) { picture.data[i] = 255; }
    codec = c;
    pending = null; last = null; lastWhole = null; resync = "expected";
    view.width = w; view.height = h; view.codec = c;
    canvas.setAttribute("data-codec", c);
    connected();
  }

  function rect(buf) {
    var r = parse(buf);
    return { x: num(r, 1), y: num(r, 2), w: num(r, 3), h: num(r, 4) };
  }

  function onFramePart(f) {
    var number = num(f, 1), part = num(f, 3);
    if (pending && pending.number !== number) { return broken("frame_interrupted"); }
    if (!pending && lastWhole !== null && number <= lastWhole) { return broken("frame_not_newer"); }
    var expected = pending ? pending.parts.length : 0;
    if (part !== expected) { return broken("frame_part_out_of_order"); }
    var copies = list(f, 5);
    if (part > 0 && copies.length) { return broken("frame_late_copies"); }
    var data = f[7] ? f[7][0] : new Uint8Array(0);
    if (!pending) {
      pending = { number: number, keyframe: num(f, 2) === 1, bytes: 0, parts: [],
        copies: copies.map(function (c) {
          var cf = parse(c);
          return { sx: num(cf, 1), sy: num(cf, 2), dst: cf[3] ? rect(cf[3][0]) : null };
        }) };
    }
    pending.bytes += data.length;
    if (pending.bytes > MAX_FRAME_BYTES) { return broken("frame_too_many_bytes"); }
    pending.parts.push({ rects: list(f, 6).map(rect), data: data });
    if (num(f, 4) !== 1) { return; }
    var frame = pending;
    pending = null;
    lastWhole = frame.number;
    var follows = last !== null && frame.number === last + 1;
    if (!frame.keyframe) {
      if (resync !== "no") { return; }
      if (!follows) { return broken("frames_missing"); }
    }
    if (codec === H264) {
      // Drawn and acknowledged when the decoder gives the picture back.
      if (!decodeH264(frame)) { return; }
    } else {
      var err = draw(frame);
      if (err) { return broken(err); }
      shown(frame.number);
    }
    last = frame.number;
    resync = "no";
  }

  function inside(r, w, h) {
    return r && r.x + r.w <= w && r.y + r.h <= h;
  }

  // Applies a whole raw-zstd frame; returns an error code and leaves the
  // picture unchanged when the frame is not valid.
  function draw(frame) {
    if (!picture) { return "no_keyframe_yet"; }
    var w = picture.width, h = picture.height, px = picture.data, i, r;
    var area = 0, count = frame.copies.length, pixels = [];
    for (i = 0; i < frame.copies.length; i++) {
      var c = frame.copies[i];
      if (!c.dst || !inside(c.dst, w, h) || !inside({ x: c.sx, y: c.sy, w: c.dst.w, h: c.dst.h }, w, h)) {
        return "frame_out_of_bounds";
      }
    }
    for (i = 0; i < frame.parts.length; i++) {
      var part = frame.parts[i], size = 0;
      for (var j = 0; j < part.rects.length; j++) {
        r = part.rects[j];
        if (!inside(r, w, h)) { return "frame_out_of_bounds"; }
        size += r.w * r.h * 3;
        area += r.w * r.h;
      }
      count += part.rects.length;
      if (size === 0) {
        if (part.data.length) { return "bad_frame_payload"; }
        pixels.push(null);
        continue;
      }
      var out;
      try { out = window.fzstd.decompress(part.data, new Uint8Array(size)); }
      catch (e) { return "bad_frame_payload"; }
      if (out.length !== size) { return "bad_frame_payload"; }
      pixels.push(out);
    }
    if (area > 2 * w * h) { return "frame_too_large"; }
    if (count > 65536) { return "frame_too_many_rects"; }

    var dirty = [];
    frame.copies.forEach(function (c) {
      var d = c.dst, row = d.w * 4, tmp = new Uint8ClampedArray(row * d.h), y;
      for (y = 0; y < d.h; y++) {
        var from = ((c.sy + y) * w + c.sx) * 4;
        tmp.set(px.subarray(from, from + row), y * row);
      }
      for (y = 0; y < d.h; y++) {
        px.set(tmp.subarray(y * row, (y + 1) * row), ((d.y + y) * w + d.x) * 4);
      }
      dirty.push(d);
    });
    frame.parts.forEach(function (part, k) {
      var src = pixels[k], at = 0;
      if (!src) { return; }
      part.rects.forEach(function (r) {
        for (var y = 0; y < r.h; y++) {
          var o = ((r.y + y) * w + r.x) * 4;
          for (var x = 0; x < r.w; x++, o += 4, at += 3) {
            px[o] = src[at]; px[o + 1] = src[at + 1]; px[o + 2] = src[at + 2];
          }
        }
        dirty.push(r);
      });
    });
    dirty.forEach(function (d) {
      if (d.w && d.h) { ctx.putImageData(picture, 0, 0, d.x, d.y, d.w, d.h); }
    });
    return null;
  }

  // --- H.264 through WebCodecs ------------------------------------------
  // offered: this browser's VideoDecoder takes H264_PROBE; failures: decoder
  // failures since the last picture it gave back; failed: why the page
  // stopped offering h264, in words.
  var h264 = { offered: false, failures: 0, failed: "" };
  var video = null;          // { decoder, codec } for the current h264 format

  function decoders() { return h264.offered ? [H264, RAW] : [RAW]; }

  function probeH264() {
    if (!window.VideoDecoder || !window.EncodedVideoChunk || !window.VideoDecoder.isConfigSupported) {
      view.h264 = "no WebCodecs VideoDecoder";
      return Promise.resolve(false);
    }
    return window.VideoDecoder.isConfigSupported({ codec: H264_PROBE, optimizeForLatency: true })
      .then(function (r) {
        view.h264 = r.supported ? "supported" : H264_PROBE + " not supported";
        return !!r.supported;
      }, function (e) { view.h264 = "isConfigSupported failed: " + e.message; return false; });
  }

  function even(n) { return n + (n & 1); }

  // The WebCodecs codec string of an Annex B access unit's SPS
  // (avc1.PPCCLL: profile_idc, constraint flags, level_idc), or "".
  function avcCodec(data) {
    for (var i = 0; i + 6 < data.length; i++) {
      if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1 && (data[i + 3] & 0x1F) === 7) {
        return "avc1." + [data[i + 4], data[i + 5], data[i + 6]].map(function (b) {
          return (b < 16 ? "0" : "") + b.toString(16).toUpperCase();
        }).join("");
      }
    }
    return "";
  }

  function closeVideo() {
    if (video && video.decoder.state !== "closed") { video.decoder.close(); }
    video = null;
  }

  function openVideo(c) {
    var w = view.width, h = view.height, mine = {};
    mine.decoder = new window.VideoDecoder({
      output: function (vf) {
        // The picture the agent encoded (H.264's own macroblock padding
        // is cropped away by the SPS): the format's size rounded up to even.
        var number = vf.timestamp, r = vf.visibleRect;
        var fits = !!r && r.width === even(w) && r.height === even(h);
        if (fits && video === mine) { ctx.drawImage(vf, 0, 0, w, h, 0, 0, w, h); }
        vf.close();
        if (video !== mine) { return; }
        if (!fits) { h264Failed("bad_frame_payload", "a picture of the wrong size"); return; }
        h264.failures = 0;
        shown(number);
      },
      error: function (e) {
        if (video === mine) { h264Failed("bad_frame_payload", e.message || String(e)); }
      }
    });
    mine.codec = c;
    view.avc = c;
    // The stream's colours are BT.601, limited range (PROTOCOL.md §11), and
    // its SPS does not say so; unsaid, Chromium assumes BT.709 (a red
    // comes out 11 levels too red).
    mine.decoder.configure({ codec: c, codedWidth: even(w), codedHeight: even(h), optimizeForLatency: true,
      colorSpace: { primaries: "smpte170m", transfer: "smpte170m", matrix: "smpte170m", fullRange: false } });
    return mine;
  }

  // Hands a whole h264 frame to the decoder; false when it is refused.
  function decodeH264(frame) {
    var w = view.width, h = view.height, i, data = [];
    if (frame.copies.length) { broken("bad_frame_payload"); return false; }
    for (i = 0; i < frame.parts.length; i++) {
      var rs = frame.parts[i].rects, r = rs[0];
      var whole = rs.length === 1 && r.x === 0 && r.y === 0 && r.w === w && r.h === h;
      if (i === 0 ? !whole : rs.length) { broken("frame_out_of_bounds"); return false; }
      data.push(frame.parts[i].data);
    }
    data = concat(data);
    if (!data.length) { broken("bad_frame_payload"); return false; }
    try {
      if (frame.keyframe) {
        var c = avcCodec(data);
        if (!c) { h264Failed("bad_frame_payload", "a keyframe without its SPS"); return false; }
        if (!video || video.codec !== c) { closeVideo(); video = openVideo(c); }
      }
      if (!video) { broken("no_keyframe_yet"); return false; }
      video.decoder.decode(new window.EncodedVideoChunk({
        type: frame.keyframe ? "key" : "delta", timestamp: frame.number, data: data }));
    } catch (e) {
      h264Failed("bad_frame_payload", e.message || String(e));
      return false;
    }
    return true;
  }

  // The decoder refused a frame: start afresh at a keyframe; if that fails
  // too, stop offering h264.
  function h264Failed(code, why) {
    closeVideo();
    h264.failures++;
    canvas.setAttribute("data-h264-error", why);
    if (h264.failures < 2) { broken(code); return; }
    h264.offered = false;
    h264.failed = "This browser could not decode the H.264 stream (" + why +
      "), so the page uses lossless raw-zstd.";
    view.decoders = decoders();
    say(h264.failed + " Reconnecting…");
    open();
  }

  // --- the connection ------------------------------------------------------
  // One WebSocket at a time; a new one (after H.264 failed) replaces it.
  function open() {
    if (ws) { ws.onmessage = null; ws.onclose = null; ws.close(1000); ws = null; }
    picture = null; codec = ""; pending = null;
    fetch("/sessions/" + encodeURIComponent(session) + "/viewer-token", {
      method: "POST", credentials: "same-origin",
      headers: { "x-csrf-token": canvas.getAttribute("data-csrf") }
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error((body.error && body.error.message) || ("HTTP " + r.status)); }
        return body;
      });
    }).then(function (t) {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var sock = new WebSocket(scheme + location.host + "/ws/viewer?session=" + encodeURIComponent(session),
        ["tessera.viewer", "tessera.token." + t.token]);
      sock.binaryType = "arraybuffer";
      sock.onmessage = onMessage;
      sock.onclose = function (ev) {
        if (!ended) {
          stop("Disconnected" + (ev.reason ? " (" + ev.reason + ")" : "") + ". Reload the page to reconnect.");
        }
      };
      ws = sock;
    }).catch(function (e) { stop("Could not open the screen: " + e.message); });
  }

  function onMessage(ev) {
    var env = parse(new Uint8Array(ev.data)), body;
    if ((body = env[ENV.screen])) {
      onScreen(parse(body[0]));
    } else if ((body = env[ENV.ready])) {
      var f = parse(body[0]);
      channel = num(f, 3) || 2;
      device = text(f, 4);
      view.device = device;
      view.access = text(f, 2);
      if (view.access !== "control") { control = false; }
      canvas.setAttribute("data-access", view.access);
      send(bytesField(SCR.decoders, concat(decoders().map(function (c) { return bytesField(1, str(c)); }))));
      say("Connected to " + device + (control ? "" : " (view only)") + "; waiting for the picture…");
    } else if ((body = env[ENV.close])) {
      stop("The screen channel closed: " + (text(parse(body[0]), 4) || "closed") + ".");
    } else if ((body = env[ENV.ended])) {
      var e = parse(body[0]);
      stop("The session ended: " + (text(e, 3) || text(e, 2)) + ".");
    } else if ((body = env[ENV.error])) {
      stop("Refused: " + text(parse(body[0]), 2));
    }
  }

  probeH264().then(function (yes) {
    h264.offered = yes;
    view.decoders = decoders();
    open();
  });

  function onScreen(s) {
    var b;
    if ((b = s[SCR.format])) { onFormat(parse(b[0])); }
    else if ((b = s[SCR.frame])) { if (picture) { onFramePart(parse(b[0])); } }
    else if ((b = s[SCR.notice])) {
      var n = parse(b[0]);
      say((text(n, 2) || text(n, 1)) + ".");
    }
  }

  // --- scaling -------------------------------------------------------------
  function applyFit() { canvas.classList.toggle("fit", !fit || fit.checked); }
  if (fit) { fit.addEventListener("change", applyFit); }
  applyFit();

  if (!control) { return; }

  // --- pointer ---------------------------------------------------------------
  // DOM buttons bits: 1 left, 2 right, 4 middle, 8 back, 16 forward;
  // the protocol's: bit 0 left, 1 middle, 2 right, 3 back, 4 forward.
  function buttons(b) {
    return (b & 1) | ((b & 4) ? 2 : 0) | ((b & 2) ? 4 : 0) | (b & 8) | (b & 16);
  }
  var held = 0, moveQueued = null;
  function where(ev) {
    var box = canvas.getBoundingClientRect();
    var x = Math.floor((ev.clientX - box.left) * canvas.width / Math.max(box.width, 1));
    var y = Math.floor((ev.clientY - box.top) * canvas.height / Math.max(box.height, 1));
    return { x: Math.min(Math.max(x, 0), canvas.width - 1), y: Math.min(Math.max(y, 0), canvas.height - 1) };
  }
  function pointer(p, b, wx, wy) {
    sendInput(bytesField(SCR.pointer, concat([intField(1, p.x), intField(2, p.y), intField(3, b),
      intField(4, wx || 0), intField(5, wy || 0)])));
  }
  // Moves go out at most once an animation frame (the relay allows 200
  // events a second); presses and releases at once.
  canvas.addEventListener("mousemove", function (ev) {
    if (!picture) { return; }
    var first = moveQueued === null;
    moveQueued = { p: where(ev), b: buttons(ev.buttons) };
    if (first) {
      requestAnimationFrame(function () {
        var m = moveQueued; moveQueued = null;
        if (m) { pointer(m.p, m.b); }
      });
    }
  });
  function press(ev) {
    if (!picture) { return; }
    ev.preventDefault();
    canvas.focus();
    moveQueued = null;
    held = buttons(ev.buttons);
    pointer(where(ev), held);
  }
  canvas.addEventListener("mousedown", press);
  canvas.addEventListener("mouseup", press);
  canvas.addEventListener("contextmenu", function (ev) { ev.preventDefault(); });
  canvas.addEventListener("wheel", function (ev) {
    if (!picture) { return; }
    ev.preventDefault();
    var sy = Math.sign(ev.deltaY), sx = Math.sign(ev.deltaX);
    if (sx || sy) { pointer(where(ev), buttons(ev.buttons), sx, sy); }
  }, { passive: false });
  canvas.addEventListener("mouseleave", function () {
    if (held) { held = 0; release(); }
  });

  // --- keyboard --------------------------------------------------------------
  var MOD = { ShiftLeft: 1, ShiftRight: 1, ControlLeft: 2, ControlRight: 2, AltLeft: 4,
    MetaLeft: 8, MetaRight: 8, AltRight: 16 };
  var NAMED = { Enter: 0xFF0D, Tab: 0xFF09, Backspace: 0xFF08, Escape: 0xFF1B, Delete: 0xFFFF,
    Home: 0xFF50, ArrowLeft: 0xFF51, ArrowUp: 0xFF52, ArrowRight: 0xFF53, ArrowDown: 0xFF54,
    PageUp: 0xFF55, PageDown: 0xFF56, End: 0xFF57, Insert: 0xFF63, CapsLock: 0xFFE5,
    ShiftLeft: 0xFFE1, ShiftRight: 0xFFE2, ControlLeft: 0xFFE3, ControlRight: 0xFFE4,
    AltLeft: 0xFFE9, AltRight: 0xFFEA, MetaLeft: 0xFFEB, MetaRight: 0xFFEC };
  var down = {};   // code → usage of the keys this page holds on the remote screen
  var hostDown = false, hostChord = false;

  // The X keysym of what a key typed: Latin-1 is itself, the rest of
  // Unicode 0x01000000 + code point (tessera_proto::keys::keysym_for_char).
  function keysym(ev) {
    var k = ev.key;
    if (k && k.length && Array.from(k).length === 1) {
      var c = k.codePointAt(0);
      if ((c >= 0x20 && c <= 0x7E) || (c >= 0xA0 && c <= 0xFF)) { return c; }
      if (c >= 0x100) { return 0x01000000 + c; }
      return 0;
    }
    if (/^F([1-9]|1[0-2])$/.test(k)) { return 0xFFBD + Number(k.slice(1)); }
    return NAMED[k] || NAMED[ev.code] || 0;
  }
  function modifiers(ev) {
    var m = 0;
    Object.keys(down).forEach(function (c) { m |= MOD[c] || 0; });
    if (ev && ev.getModifierState) {
      if (ev.getModifierState("CapsLock")) { m |= 32; }
      if (ev.getModifierState("NumLock")) { m |= 64; }
    }
    return m;
  }
  function key(ev, isDown) {
    // Right Ctrl tapped alone gives the keyboard back (as in tessera view).
    if (ev.code === "ControlRight") {
      ev.preventDefault();
      if (isDown) { hostDown = true; hostChord = false; return; }
      var tapped = hostDown && !hostChord;
      hostDown = false;
      if (tapped) { canvas.blur(); if (fit) { fit.focus(); } }
      return;
    }
    if (hostDown && isDown) { hostChord = true; }
    var usage = codes[ev.code] || 0, sym = keysym(ev);
    ev.preventDefault();
    if (!usage && !sym) { return; }
    var id = ev.code || ("sym" + sym);
    if (isDown) { down[id] = usage; }
    else if (!(id in down)) { return; } // pressed before the picture had the keyboard
    else { delete down[id]; }
    sendInput(bytesField(SCR.key, concat([intField(1, usage), intField(2, sym), intField(3, isDown ? 1 : 0),
      intField(4, modifiers(ev))])));
  }
  canvas.addEventListener("keydown", function (ev) { if (picture) { key(ev, true); } });
  canvas.addEventListener("keyup", function (ev) { if (picture) { key(ev, false); } });

  function release() {
    down = {}; hostDown = false; held = 0;
    sendInput(bytesField(SCR.release, new Uint8Array(0)));
  }
  canvas.addEventListener("blur", function () {
    if (Object.keys(down).length || held) { release(); }
  });
  window.addEventListener("blur", function () {
    if (Object.keys(down).length || held) { release(); }
  });

  // --- the "Send keys" menu --------------------------------------------------
  var menu = document.getElementById("send-keys");
  if (menu) {
    menu.addEventListener("click", function (ev) {
      var combo = ev.target && ev.target.getAttribute && ev.target.getAttribute("data-combo");
      if (!combo) { return; }
      sendInput(bytesField(SCR.special, bytesField(1, str(combo))));
      say("Sent " + ev.target.textContent.replace(/^Send /, "") + " to " + device + ".");
      menu.open = false;
      canvas.focus();
    });
  }
})();
