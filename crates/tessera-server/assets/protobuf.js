// Tessera console: the little protobuf the web terminal and the web screen
// viewer speak (proto/tessera.proto, encoded and decoded by hand): one
// copy, loaded before either page's script, as window.tesseraProtobuf.
(function () {
  "use strict";

  function varint(n) {
    var out = [];
    while (n > 127) { out.push((n % 128) | 128); n = Math.floor(n / 128); }
    out.push(n);
    return out;
  }
  // A negative int32 travels as its 64-bit two's complement: ten bytes.
  function signedVarint(n) {
    if (n >= 0) { return varint(n); }
    var lo = n >>> 0, out = [], i;
    for (i = 0; i < 4; i++) { out.push((lo & 127) | 128); lo >>>= 7; }
    // Bits 28-31 of the low word with bits 32-34 of the (all-ones) high word.
    out.push((lo & 15) | 0x70 | 128);
    for (i = 0; i < 4; i++) { out.push(127 | 128); }
    out.push(1);
    return out;
  }
  function concat(parts) {
    var len = 0; parts.forEach(function (p) { len += p.length; });
    var out = new Uint8Array(len), at = 0;
    parts.forEach(function (p) { out.set(p, at); at += p.length; });
    return out;
  }
  function bytesField(num, bytes) {
    return concat([new Uint8Array(varint((num << 3) | 2)), new Uint8Array(varint(bytes.length)), bytes]);
  }
  function intField(num, n) {
    if (!n) { return new Uint8Array(0); }
    return new Uint8Array(varint(num << 3).concat(n < 0 ? signedVarint(n) : varint(n)));
  }
  var enc = new TextEncoder(), dec = new TextDecoder();
  function str(s) { return enc.encode(s); }

  // Returns {fieldNumber: [values]}: Uint8Array for length-delimited
  // fields, numbers for varints.
  function parse(buf) {
    var fields = {}, i = 0;
    function readVarint() {
      var n = 0, mul = 1, b;
      do { b = buf[i++]; n += (b & 127) * mul; mul *= 128; } while (b & 128 && i < buf.length);
      return n;
    }
    while (i < buf.length) {
      var key = readVarint(), num = Math.floor(key / 8), wire = key & 7, v;
      if (wire === 0) { v = readVarint(); }
      else if (wire === 2) { var len = readVarint(); v = buf.subarray(i, i + len); i += len; }
      else if (wire === 5) { i += 4; continue; }
      else if (wire === 1) { i += 8; continue; }
      else { break; }
      (fields[num] = fields[num] || []).push(v);
    }
    return fields;
  }
  function text(f, n) { return f[n] ? dec.decode(f[n][0]) : ""; }
  function num(f, n) { return f[n] ? f[n][f[n].length - 1] : 0; }
  function list(f, n) { return f[n] || []; }

  window.tesseraProtobuf = {
    concat: concat, bytesField: bytesField, intField: intField,
    str: str, parse: parse, text: text, num: num, list: list
  };
})();
