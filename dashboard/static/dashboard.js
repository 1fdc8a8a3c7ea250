// asyncmonolith dashboard: progressive enhancements only; every page works without it.
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";

  // The overview refreshes its table in place every 5 seconds: one request at a time, and
  // none while the tab is hidden (the counts scan the whole queue).
  var live = document.getElementById("live");
  if (live) {
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(base + "/overview/live", { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
        .then(function (html) { live.innerHTML = html; live.removeAttribute("data-stale"); })
        .catch(function () { live.setAttribute("data-stale", "true"); })
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
