// asyncmonolith dashboard: progressive enhancements only; every page works without it.
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";

  // The overview refreshes its table in place every 5 seconds: one request at a time, and
  // none while the tab is hidden (the counts scan the whole queue).
  // A refresh that fails (the database is down, the server is gone, no answer in 10 s)
  // says so above the table, which stays as it was, dimmed, until a refresh succeeds.
  var live = document.getElementById("live");
  var liveError = document.getElementById("live-error");
  if (live) {
    var busy = false;
    var failed = function (why) {
      live.setAttribute("data-stale", "true");
      if (liveError) {
        var at = live.querySelector("caption time");
        liveError.textContent = "Refresh failed: " + why + "." + (at ? " The counts below are from " + at.textContent + "." : "");
        liveError.hidden = false;
      }
    };
    setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      var opts = { credentials: "same-origin", headers: { Accept: "text/html" } };
      if (window.AbortSignal && AbortSignal.timeout) { opts.signal = AbortSignal.timeout(10000); }
      fetch(base + "/overview/live", opts)
        .then(function (r) {
          return r.text().then(function (body) {
            if (!r.ok) { throw new Error("HTTP " + r.status + ": " + body.trim()); }
            return body;
          });
        })
        .then(function (html) {
          live.innerHTML = html;
          live.removeAttribute("data-stale");
          if (liveError) { liveError.hidden = true; liveError.textContent = ""; }
        })
        .catch(function (err) { failed((err && err.name === "TimeoutError") ? "no answer in 10 s" : String(err && err.message || err)); })
        .finally(function () { busy = false; });
    }, 5000);
  }

  // Times in the viewer's zone.
  document.querySelectorAll("time.local").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      t.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "long" });
    }
  });

  // "Select all" on the poisoned list.
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('#poisoned-form input[name="id"]').forEach(function (c) { c.checked = all.checked; });
    });
  }
})();
