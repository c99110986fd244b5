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
  // Every device id the presence stream has named so far. Its first event
  // names all of the tenant's devices; a list page shows at most one page
  // of them, so an id missing from the page is not news: only an id the
  // stream never named before (a device just approved) is.
  var known = null;

  function refreshList() {
    var list = document.querySelector("[data-live-list]");
    if (!list || !window.htmx || listRefresh) { return; }
    // Fetch the list again, keeping the search, sort and page.
    listRefresh = setTimeout(function () {
      listRefresh = null;
      window.htmx.ajax("GET", window.location.pathname + window.location.search,
        { target: "#devices", select: "#devices", swap: "outerHTML" });
    }, 200);
  }

  function presence() {
    if (source || !document.querySelector("[data-presence], [data-live-list]")) { return; }
    source = new EventSource("/events/presence");
    source.addEventListener("presence", function (ev) {
      var states = JSON.parse(ev.data);
      var ids = Object.keys(states);
      var fresh = false;
      ids.forEach(function (id) {
        document.querySelectorAll('[data-presence="' + id + '"]').forEach(function (el) {
          el.textContent = states[id];
          el.className = "presence " + states[id];
        });
        if (known && !known[id]) { fresh = true; }
      });
      if (!known) {
        // The first event: news only if it names more devices than the
        // page counted when it was made.
        var list = document.querySelector("[data-live-list]");
        var total = list ? parseInt(list.getAttribute("data-total") || "0", 10) : 0;
        fresh = !!list && ids.length > total;
        known = {};
      }
      ids.forEach(function (id) { known[id] = true; });
      if (fresh) { refreshList(); }
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
