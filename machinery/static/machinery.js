// Machinery UI: follow a live event page, open a linked step record, and submit list filters on change.
// Pages work without it.
(function () {
  "use strict";

  // Follow a pending, running or waiting event: fetch the live part of its page and swap it in, keeping
  // the records the reader opened, until the event has ended (the part comes back without data-poll).
  function followEvent(root) {
    var url = root.getAttribute("data-live-url");
    var every = parseInt(root.getAttribute("data-poll"), 10) || 1500;
    var last = null;
    var failures = 0;
    function swap(html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("event");
      if (!fresh) { return true; }
      var current = document.getElementById("event");
      var opened = {};
      current.querySelectorAll("details[id]").forEach(function (details) { opened[details.id] = details.open; });
      current.innerHTML = fresh.innerHTML;
      ["data-status", "data-poll"].forEach(function (name) {
        if (fresh.hasAttribute(name)) { current.setAttribute(name, fresh.getAttribute(name)); }
        else { current.removeAttribute(name); }
      });
      current.querySelectorAll("details[id]").forEach(function (details) {
        if (opened.hasOwnProperty(details.id)) { details.open = opened[details.id] || details.open; }
      });
      return current.hasAttribute("data-poll");
    }
    function check() {
      if (document.hidden) { return setTimeout(check, every); }
      fetch(url, { headers: { Accept: "text/html" }, cache: "no-store", credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 404) { return null; }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          failures = 0;
          if (html === null) { return; }  // the event is gone: nothing more to follow
          var going = html === last ? true : swap(html);
          last = html;
          if (going) { setTimeout(check, every); }
        })
        .catch(function () {
          failures += 1;
          setTimeout(check, every * Math.min(Math.pow(2, failures), 20));
        });
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
    var live = document.querySelector("#event[data-poll][data-live-url]");
    if (live && window.fetch && window.DOMParser) { followEvent(live); }
    var list = document.querySelector("[data-refresh]");
    if (list) { reloadList(list); }
    document.querySelectorAll("form.filters select").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
