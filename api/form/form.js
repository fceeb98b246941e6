// mxprobe sign-up helper: checks an <input type=email> when the user leaves
// it and shows mxprobe's message and a clickable suggestion under it.
//
//   <script src="https://mxprobe.example/form.js" data-key="pk_shop" defer></script>
//
// data-key: a publishable key (allowed for this page's origin).
// data-input: a CSS selector for the fields (default input[type=email]).
// data-wait: the time budget in seconds (default: the server's, 3 s).
// data-block: "reject" (default) keeps the form from submitting while the
//   address shown is rejected; "none" never blocks. A slow or unreachable
//   server never blocks a form.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var base = new URL(script.src, document.baseURI).origin;
  var key = script.getAttribute("data-key") || "";
  var selector = script.getAttribute("data-input") || "input[type=email]";
  var wait = script.getAttribute("data-wait") || "";
  var block = script.getAttribute("data-block") !== "none";

  function attach(input) {
    if (input.mxprobeAttached) return;
    input.mxprobeAttached = true;
    var box = document.createElement("div");
    box.className = "mxprobe-message";
    box.setAttribute("aria-live", "polite");
    input.insertAdjacentElement("afterend", box);
    var seq = 0, checked = "", decision = null, timer = null;

    function clear() {
      box.textContent = "";
      box.removeAttribute("data-decision");
      input.removeAttribute("aria-invalid");
    }

    function render(answer) {
      clear();
      decision = answer;
      box.setAttribute("data-decision", answer.decision);
      if (answer.decision === "accept") return;
      if (answer.decision === "reject") input.setAttribute("aria-invalid", "true");
      var msg = answer.message || "";
      var fix = answer.did_you_mean;
      var at = fix ? msg.lastIndexOf(fix) : -1;
      if (at < 0) {
        box.appendChild(document.createTextNode(msg));
        if (!fix) return;
        box.appendChild(document.createTextNode(" "));
        at = msg.length;
        msg += fix;
      }
      box.appendChild(document.createTextNode(msg.slice(0, at)));
      var b = document.createElement("button");
      b.type = "button";
      b.className = "mxprobe-suggestion";
      b.textContent = fix;
      b.addEventListener("click", function () {
        input.value = fix;
        clear();
        decision = null;
        input.focus();
        check();
      });
      box.appendChild(b);
      box.appendChild(document.createTextNode(msg.slice(at + fix.length)));
    }

    function check() {
      var value = input.value.trim();
      if (!value || value === checked) return;
      checked = value;
      decision = null;
      var mine = ++seq;
      var headers = { "Content-Type": "application/json" };
      if (key) headers.Authorization = "Bearer " + key;
      var url = base + "/validate" + (wait ? "?wait=" + encodeURIComponent(wait) : "");
      fetch(url, { method: "POST", headers: headers, body: JSON.stringify({ email: value }), credentials: "omit" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (answer) {
          if (answer && mine === seq && input.value.trim() === value) render(answer);
        })
        .catch(function () { /* unreachable: the form goes on without us */ });
    }

    input.addEventListener("blur", function () {
      clearTimeout(timer);
      timer = setTimeout(check, 250); // debounce: leaving and coming back
    });
    input.addEventListener("input", function () {
      clearTimeout(timer);
      checked = "";
      decision = null;
      clear();
    });
    if (block && input.form) {
      input.form.addEventListener("submit", function (e) {
        if (decision && decision.decision === "reject" && input.value.trim() === checked) {
          e.preventDefault();
          input.focus();
        }
      });
    }
  }

  function attachAll() {
    document.querySelectorAll(selector).forEach(attach);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", attachAll);
  } else {
    attachAll();
  }
})();
