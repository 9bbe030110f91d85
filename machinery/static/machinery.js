// Machinery UI: follow a live event page, open a linked step record, check and register definitions as
// they are typed, and submit list filters on change. Pages work without it (the editor then does nothing).
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

  // The definition editor: POST /workflows/check?graph=svg 400 ms after the last keystroke, showing the
  // drawing or the errors (each with its step and path); Register POSTs the text to /workflows.
  // Calls carry X-Machinery-UI so that, with API keys configured, the API offers the browser Basic
  // and the browser answers with the key given to the UI.
  var DEBOUNCE_MS = 400;

  function contentType(text) {
    return /^\s*[{\[]/.test(text) ? "application/json" : "application/yaml";
  }

  function post(url, text, signal) {
    return fetch(url, {
      method: "POST", body: text, signal: signal, cache: "no-store", credentials: "same-origin",
      headers: { "Content-Type": contentType(text), Accept: "application/json", "X-Machinery-UI": "1" }
    }).then(function (response) {
      return response.text().then(function (body) {
        var answer;
        try { answer = JSON.parse(body); } catch (error) { answer = { message: body || response.statusText }; }
        return { status: response.status, body: answer || {} };
      });
    });
  }

  function item(list, parts) {
    var li = document.createElement("li");
    parts.forEach(function (part) {
      var node = document.createElement(part[0]);
      node.textContent = part[1];
      if (part[2]) { node.className = part[2]; }
      li.appendChild(node);
    });
    list.appendChild(li);
  }

  // An error answer's details: the check's [{step, path, problem}], or the schema's {field: [messages]}.
  function listErrors(list, errors, prefix) {
    if (Array.isArray(errors)) {
      errors.forEach(function (error) {
        if (error && typeof error === "object" && (error.path || error.problem)) {
          item(list, [["code", error.path || error.step || "", "path"], ["span", " " + (error.problem || ""), ""],
                      ["span", error.step ? " (step " + error.step + ")" : "", "muted small"]]);
        } else {
          item(list, [["code", prefix || "", "path"], ["span", " " + String(error), ""]]);
        }
      });
    } else if (errors && typeof errors === "object") {
      Object.keys(errors).forEach(function (key) {
        listErrors(list, errors[key], prefix ? prefix + "." + key : key);
      });
    } else if (errors !== undefined && errors !== null) {
      item(list, [["code", prefix || "", "path"], ["span", " " + String(errors), ""]]);
    }
  }

  function editor(root) {
    var area = root.querySelector("textarea");
    var status = root.querySelector("#check-status");
    var errors = root.querySelector("#check-errors");
    var warnings = root.querySelector("#check-warnings");
    var drawing = root.querySelector("#check-graph");
    var button = root.querySelector("#register");
    var answer = root.querySelector("#register-answer");
    var registerErrors = root.querySelector("#register-errors");
    var timer = null;
    var sequence = 0;
    var inFlight = null;

    function say(text, state) {
      status.textContent = text;
      status.setAttribute("data-state", state);
    }

    function check() {
      var text = area.value;
      var mine = ++sequence;
      if (inFlight) { inFlight.abort(); }
      if (!text.trim()) {
        errors.innerHTML = ""; warnings.innerHTML = ""; drawing.innerHTML = "";
        say("Nothing to check yet.", "empty");
        return;
      }
      inFlight = window.AbortController ? new AbortController() : null;
      say("Checking…", "checking");
      post(root.getAttribute("data-check-url"), text, inFlight && inFlight.signal).then(function (result) {
        if (mine !== sequence) { return; }  // a newer text is being checked
        errors.innerHTML = ""; warnings.innerHTML = "";
        if (result.status === 200) {
          say("It checks: every path, every type. Nothing is registered yet.", "ok");
          (result.body.warnings || []).forEach(function (warning) { item(warnings, [["span", warning, ""]]); });
          drawing.innerHTML = result.body.graph || "";  // drawn by the server, every text escaped
        } else {
          drawing.innerHTML = "";
          say((result.status === 401 || result.status === 403 ? "Not allowed: " : "It does not check: ") +
              (result.body.message || "HTTP " + result.status), "error");
          listErrors(errors, result.body.errors);
        }
      }).catch(function (error) {
        if (mine === sequence && error.name !== "AbortError") { say("The check did not answer: " + error, "error"); }
      });
    }

    function schedule() {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(check, DEBOUNCE_MS);
    }

    function register() {
      var text = area.value;
      button.disabled = true;
      registerErrors.innerHTML = "";
      answer.textContent = "Registering…";
      answer.setAttribute("data-state", "registering");
      post(root.getAttribute("data-register-url"), text).then(function (result) {
        var body = result.body;
        answer.textContent = "";
        if (result.status === 200 || result.status === 201) {
          answer.setAttribute("data-state", "ok");
          answer.appendChild(document.createTextNode(
            (result.status === 201 ? "Registered " : "Replaced: a new version of ") + body.name +
            ", version " + body.version + ". "));
          var link = document.createElement("a");
          link.href = root.getAttribute("data-workflow-url") + encodeURIComponent(body.name);
          link.textContent = "Open " + body.name;
          answer.appendChild(link);
        } else {
          answer.setAttribute("data-state", "error");
          answer.textContent = "Not registered (HTTP " + result.status + "): " + (body.message || "");
          listErrors(registerErrors, body.errors);
        }
      }).catch(function (error) {
        answer.setAttribute("data-state", "error");
        answer.textContent = "Not registered: " + error;
      }).then(function () { button.disabled = false; });
    }

    area.addEventListener("input", schedule);
    button.addEventListener("click", register);
    button.disabled = false;
    // On a workflow's page the editor is folded: it checks once it is opened.
    var folded = root.closest("details");
    if (folded && !folded.open) {
      folded.addEventListener("toggle", function first() {
        if (folded.open) { folded.removeEventListener("toggle", first); check(); }
      });
    } else {
      check();
    }
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
    var definition = document.querySelector("#editor[data-check-url]");
    if (definition && window.fetch) { editor(definition); }
    var list = document.querySelector("[data-refresh]");
    if (list) { reloadList(list); }
    document.querySelectorAll("form.filters select").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
