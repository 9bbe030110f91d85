// Machinery UI: refresh a live event page, and submit list filters on change. Pages work without it.
(function () {
  "use strict";

  function pollEvent(root) {
    var url = root.getAttribute("data-event-url");
    var every = parseInt(root.getAttribute("data-poll"), 10) || 1500;
    var seen = {
      status: root.getAttribute("data-status"),
      steps: root.getAttribute("data-steps"),
      run: root.getAttribute("data-run")
    };
    function check() {
      if (document.hidden) { return setTimeout(check, every); }
      fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (event) {
          if (event && (event.status !== seen.status || String((event.steps || []).length) !== seen.steps ||
                        String(event.run || 0) !== seen.run)) {
            window.location.reload();
            return;
          }
          setTimeout(check, every);
        })
        .catch(function () { setTimeout(check, every * 2); });
    }
    setTimeout(check, every);
  }

  function reloadList(root) {
    var seconds = parseInt(root.getAttribute("data-refresh"), 10) || 5;
    setTimeout(function () { if (!document.hidden) { window.location.reload(); } else { reloadList(root); } },
               seconds * 1000);
  }

  // A link to a step's record (a timeline bar) opens it.
  function openTarget() {
    var target = window.location.hash ? document.getElementById(window.location.hash.slice(1)) : null;
    if (target && target.tagName === "DETAILS") { target.open = true; }
  }

  document.addEventListener("DOMContentLoaded", function () {
    openTarget();
    window.addEventListener("hashchange", openTarget);
    var live = document.querySelector("[data-poll][data-event-url]");
    if (live && window.fetch) { pollEvent(live); }
    var list = document.querySelector("[data-refresh]");
    if (list) { reloadList(list); }
    document.querySelectorAll("form.filters select").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
