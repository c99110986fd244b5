// Tessera web console: progressive enhancement only. Every page works
// without this file; with it, times read in local time, presence badges
// update live, and "copy" buttons appear.
(function () {
  "use strict";

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = d.toLocaleString(); }
    });
  }

  function copyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (b) {
      b.hidden = false;
      b.addEventListener("click", function () {
        var src = document.querySelector(b.getAttribute("data-copy"));
        if (!src || !navigator.clipboard) { return; }
        navigator.clipboard.writeText(src.textContent.trim()).then(function () {
          b.textContent = "Copied";
        });
      });
    });
  }

  var source = null;
  var listRefresh = null;

  function presence() {
    if (source || !document.querySelector("[data-presence], [data-live-list]")) { return; }
    source = new EventSource("/events/presence");
    source.addEventListener("presence", function (ev) {
      var states = JSON.parse(ev.data);
      var unknown = false;
      Object.keys(states).forEach(function (id) {
        var els = document.querySelectorAll('[data-presence="' + id + '"]');
        if (els.length === 0) { unknown = true; }
        els.forEach(function (el) {
          el.textContent = states[id];
          el.className = "presence " + states[id];
        });
      });
      var list = document.querySelector("[data-live-list]");
      if (unknown && list && window.htmx && !listRefresh) {
        // A device this list does not show yet (just approved): fetch the
        // list again, keeping the search and sort.
        listRefresh = setTimeout(function () {
          listRefresh = null;
          window.htmx.ajax("GET", window.location.pathname + window.location.search,
            { target: "#devices", select: "#devices", swap: "outerHTML" });
        }, 200);
      }
    });
  }

  function enhance(root) {
    localTimes(root);
    copyButtons(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    presence();
  });
  document.addEventListener("htmx:afterSettle", function (ev) { enhance(ev.target); });
})();
