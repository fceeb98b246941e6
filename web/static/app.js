// mxprobe web page. No framework, no inline code: the page runs under
// "script-src 'self'". Every value from the server is put into the DOM with
// textContent — results echo attacker-chosen input (the address, the remote
// mail server's reply), so innerHTML with data would be an XSS hole.
//
// URLs are relative ("v1/…"), so the page also works when a reverse proxy
// mounts mxprobe under a path prefix.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // humanDuration turns Go's "2.925113ms" or "1m3.5s" into "2.9 ms" or
  // "1 min 4 s"; anything else is shown as it came.
  function humanDuration(d) {
    const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)(s|ms|µs|us|ns))?$/.exec(String(d));
    if (!m) return String(d);
    const unit = { s: 1, ms: 1e-3, "µs": 1e-6, us: 1e-6, ns: 1e-9 }[m[4] || "s"];
    const secs = (Number(m[1] || 0) * 3600) + (Number(m[2] || 0) * 60) + Number(m[3] || 0) * unit;
    if (secs < 1) return (secs * 1000).toFixed(secs < 0.01 ? 1 : 0) + " ms";
    if (secs < 60) return secs.toFixed(secs < 10 ? 1 : 0) + " s";
    const h = Math.floor(secs / 3600), mi = Math.floor((secs % 3600) / 60), se = Math.round(secs % 60);
    return (h ? h + " h " : "") + mi + " min" + (se ? " " + se + " s" : "");
  }

  // ---- HTTP with login-on-401 -------------------------------------------

  // One login at a time: every request that meets a 401 waits on the same
  // promise, and all of them retry once the key is accepted.
  let loginPromise = null;
  let loginDone = null; // resolves loginPromise once /login accepts the key

  function needLogin() {
    if (!loginPromise) {
      loginPromise = new Promise((resolve) => {
        const section = $("login");
        section.hidden = false;
        $("login-error").textContent = "";
        $("login-key").focus();
        loginDone = () => {
          section.hidden = true;
          loginPromise = null;
          resolve();
        };
      });
    }
    return loginPromise;
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = $("login-key").value;
    const err = $("login-error");
    err.textContent = "";
    try {
      // JSON, not a form post: the server answers JSON with 204 or a 401
      // in the error shape, where a form post would be redirected to an
      // HTML page meant for a browser without this script.
      const resp = await fetch("login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ key: key }),
      });
      if (!resp.ok) {
        err.textContent = (await errorMessage(resp)) || "That key was not accepted.";
        $("login-key").select();
        return;
      }
    } catch (e) {
      err.textContent = "Cannot reach the server: " + e.message;
      return;
    }
    $("login-key").value = "";
    if (loginDone) loginDone();
  });

  // api performs a same-origin request; on 401 it asks for the key and
  // retries. It resolves to the Response of the last attempt.
  async function api(url, init) {
    for (;;) {
      const resp = await fetch(url, Object.assign({ credentials: "same-origin" }, init));
      if (resp.status !== 401) return resp;
      await needLogin();
    }
  }

  // errorMessage reads the API's one error shape
  // {"error":{"code","message","field"?}}, tolerating anything else.
  async function errorMessage(resp) {
    let msg = "";
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) msg = String(body.error.message);
    } catch (e) { /* not JSON */ }
    if (!msg) msg = "The server answered " + resp.status + " " + resp.statusText + ".";
    const ra = resp.headers.get("Retry-After");
    if (resp.status === 503 && ra) msg += " Try again in " + ra + " s.";
    return msg;
  }

  async function errorField(resp) {
    try {
      const body = await resp.clone().json();
      return (body && body.error && body.error.field) || "";
    } catch (e) { return ""; }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // ---- verdict presentation ---------------------------------------------

  // A verdict is shown as a word and a symbol on a coloured badge, so it
  // reads the same without colour vision or with a screen reader.
  const VERDICTS = {
    valid: { sym: "\u2713", label: "Valid" },
    invalid: { sym: "\u2717", label: "Invalid" },
    risky: { sym: "!", label: "Risky" },
    unknown: { sym: "?", label: "Unknown" },
  };

  function verdictBadge(el, verdict, final) {
    const v = VERDICTS[verdict] || { sym: "?", label: String(verdict || "pending") };
    el.className = "verdict v-" + (VERDICTS[verdict] ? verdict : "unknown");
    el.textContent = "";
    const sym = document.createElement("span");
    sym.className = "sym";
    sym.setAttribute("aria-hidden", "true");
    sym.textContent = v.sym;
    el.append(sym, " " + v.label + (final === false ? " (not final)" : ""));
  }

  function smtpText(smtp) {
    if (!smtp) return "";
    const parts = [];
    if (smtp.code) parts.push(String(smtp.code));
    if (smtp.enhanced_code) parts.push(String(smtp.enhanced_code));
    if (smtp.text) parts.push(String(smtp.text));
    let s = parts.join(" ");
    if (smtp.stage) s = (s ? s + " " : "") + "(at " + smtp.stage + ")";
    return s;
  }

  function flagList(flags) {
    if (!flags) return [];
    const names = {
      disposable: "disposable domain", catch_all: "catch-all domain", role_account: "role account",
      free_provider: "free provider", smtputf8: "needs SMTPUTF8", allowlisted: "allow-listed", denylisted: "deny-listed",
    };
    return Object.keys(names).filter((k) => flags[k] === true).map((k) => names[k]);
  }

  function showResult(r) {
    $("check-result").hidden = false;
    verdictBadge($("verdict"), r.verdict, r.final);
    $("verdict-address").textContent = r.address || r.input || "";
    $("r-reason").textContent = (r.reason || "—") + (r.retryable ? " (temporary)" : "");
    $("r-mx").textContent = r.mx_host ? r.mx_host + (r.mx_addr ? " [" + r.mx_addr + "]" : "") + (r.tls ? ", TLS" : "") : "—";
    $("r-smtp").textContent = smtpText(r.smtp) || "—";
    const flags = flagList(r.flags);
    $("r-flags").textContent = flags.length ? flags.join(", ") : "none";
    const details = [];
    if (r.attempts) details.push(r.attempts + (r.attempts === 1 ? " attempt" : " attempts"));
    if (r.duration) details.push("took " + humanDuration(r.duration));
    if (r.provider) details.push("provider " + r.provider);
    if (r.error) details.push(r.error);
    if (!r.final && r.next_attempt_at) details.push("next attempt " + new Date(r.next_attempt_at).toLocaleString());
    $("r-details").textContent = details.join(" · ") || "—";
  }

  // ---- one address ------------------------------------------------------

  let checkRun = 0; // a new submit abandons the previous poll loop

  $("check-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const run = ++checkRun;
    const input = $("address");
    const address = input.value.trim();
    const err = $("check-error");
    const status = $("check-status");
    err.textContent = "";
    input.removeAttribute("aria-invalid");
    if (!address) {
      err.textContent = "Enter an email address.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    $("check-result").hidden = true;
    $("check-button").disabled = true;
    status.textContent = "Checking " + address + "\u2026";
    try {
      const resp = await api("v1/validations?wait=20s", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ address: address }),
      });
      if (resp.status !== 200 && resp.status !== 202) {
        if (await errorField(resp) === "address") input.setAttribute("aria-invalid", "true");
        err.textContent = await errorMessage(resp);
        status.textContent = "";
        return;
      }
      let body = await resp.json();
      // Poll until the validation has ended (body.final: a final result, or
      // a task the server gave up on); the delay grows so a greylisted
      // address (retried over minutes) does not hammer the API.
      let delay = 1000;
      while (!body.final && !(body.result && body.result.final)) {
        if (run !== checkRun) return;
        if (body.result) showResult(body.result);
        status.textContent = body.result
          ? "Not final yet (" + (body.result.reason || "pending") + "); still checking\u2026"
          : "Queued; waiting for a worker\u2026";
        await sleep(delay);
        delay = Math.min(delay * 1.5, 10000);
        if (run !== checkRun) return;
        const poll = await api("v1/validations/" + encodeURIComponent(body.id), { headers: { Accept: "application/json" } });
        if (!poll.ok) {
          err.textContent = await errorMessage(poll);
          status.textContent = "";
          return;
        }
        body = await poll.json();
      }
      if (run !== checkRun) return;
      if (!body.result) {
        err.textContent = "The check ended without a verdict (state " + (body.state || "unknown") + ").";
        status.textContent = "";
        return;
      }
      showResult(body.result);
      status.textContent = "Done: " + (body.result.verdict || "") + ".";
    } catch (e) {
      err.textContent = "Cannot reach the server: " + e.message;
      status.textContent = "";
    } finally {
      if (run === checkRun) $("check-button").disabled = false;
    }
  });

  // ---- a CSV batch ------------------------------------------------------

  const fileInput = $("csv-file");
  const drop = $("drop-zone");

  function showFileName() {
    const f = fileInput.files && fileInput.files[0];
    $("csv-name").textContent = f ? "Selected: " + f.name + " (" + f.size + " bytes)" : "";
  }
  fileInput.addEventListener("change", showFileName);
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    if (ev.dataTransfer && ev.dataTransfer.files.length) {
      fileInput.files = ev.dataTransfer.files;
      showFileName();
    }
  });

  // The table shows at most this many rows; the CSV download has them all.
  const TABLE_LIMIT = 1000;

  function renderCounts(counts) {
    const ul = $("batch-counts");
    ul.textContent = "";
    if (!counts) return;
    ["valid", "invalid", "risky", "unknown", "pending"].forEach((k) => {
      if (counts[k] === undefined) return;
      const li = document.createElement("li");
      li.className = "c-" + k;
      li.textContent = k + ": " + counts[k];
      ul.append(li);
    });
  }

  function renderRejected(rejected) {
    const box = $("batch-rejected");
    const ul = $("rejected-list");
    ul.textContent = "";
    box.hidden = !rejected || rejected.length === 0;
    (rejected || []).forEach((r) => {
      const li = document.createElement("li");
      li.textContent = "Line " + r.line + ": " + (r.input === undefined ? "" : "\u201c" + r.input + "\u201d \u2014 ") + (r.error || "rejected");
      ul.append(li);
    });
  }

  // data-label lets the phone layout show each cell with its column name.
  function cell(tr, label, text, cls) {
    const td = document.createElement("td");
    td.setAttribute("data-label", label);
    td.setAttribute("role", "cell");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.append(td);
    return td;
  }

  // A results row (GET /v1/batches/{id}/results?format=ndjson) is flat:
  // {line, input, state, address, verdict, reason, mx_host, smtp_code,
  // smtp_enhanced_code, smtp_text, error}. state is "done", "rejected" (the
  // row was never queued) or the queue's state while it is still pending.
  function rowReply(r) {
    const reply = smtpText({ code: r.smtp_code, enhanced_code: r.smtp_enhanced_code, text: r.smtp_text });
    return reply || r.error || "";
  }

  function renderResults(text) {
    const tbody = document.querySelector("#batch-results tbody");
    tbody.textContent = "";
    const lines = text.split("\n").filter((l) => l.trim() !== "");
    let shown = 0;
    for (const line of lines) {
      if (shown >= TABLE_LIMIT) break;
      let r;
      try { r = JSON.parse(line); } catch (e) { continue; }
      if (!r || typeof r !== "object") continue;
      const tr = document.createElement("tr");
      tr.setAttribute("role", "row");
      cell(tr, "Address", r.address || r.input || "");
      const td = cell(tr, "Verdict", "");
      const badge = document.createElement("span");
      verdictBadge(badge, r.verdict, r.state === "done" || r.state === "rejected");
      td.append(badge);
      cell(tr, "Reason", (r.reason || "") + (r.state === "rejected" ? " (not queued)" : ""));
      cell(tr, "Mail server", r.mx_host || "");
      cell(tr, "Reply", rowReply(r), "reply");
      tbody.append(tr);
      shown++;
    }
    const trunc = $("batch-truncated");
    trunc.hidden = lines.length <= TABLE_LIMIT;
    trunc.textContent = "Showing the first " + TABLE_LIMIT + " of " + lines.length + " rows; the CSV has them all.";
    $("results-caption").textContent = "Results (" + lines.length + ")";
  }

  let batchRun = 0;

  // ---- recent lists, kept in this browser --------------------------------

  const RECENT_KEY = "mxprobe.recentBatches";
  const RECENT_MAX = 10;

  function recentBatches() {
    try {
      const list = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
      return Array.isArray(list) ? list.filter((b) => b && typeof b.id === "string") : [];
    } catch (e) {
      return [];
    }
  }

  function rememberBatch(id, name) {
    const list = recentBatches().filter((b) => b.id !== id);
    list.unshift({ id: id, name: String(name || id), at: new Date().toISOString() });
    try {
      localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, RECENT_MAX)));
    } catch (e) { /* storage full or off: the list is a convenience */ }
    renderRecent();
  }

  function renderRecent() {
    const list = recentBatches();
    const box = $("recent-batches");
    const ul = $("recent-list");
    ul.textContent = "";
    box.hidden = list.length === 0;
    list.forEach((b) => {
      const li = document.createElement("li");
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "link";
      btn.textContent = b.name;
      btn.addEventListener("click", () => follow(b.id, b.name, []));
      li.append(btn);
      const when = document.createElement("span");
      when.className = "hint";
      when.textContent = " " + new Date(b.at).toLocaleString();
      li.append(when);
      ul.append(li);
    });
  }

  // follow shows a batch until it is done: progress, counts, the results
  // table as rows finish, and a download link that works at any time (rows
  // not final yet carry their state).
  async function follow(batchID, name, rejected) {
    const run = ++batchRun;
    const err = $("batch-error");
    err.textContent = "";
    renderRejected(rejected);
    const box = $("batch-progress-box");
    const bar = $("batch-progress");
    const status = $("batch-status");
    bar.max = 1;
    bar.value = 0;
    renderCounts(null);
    box.hidden = false;
    const id = encodeURIComponent(batchID);
    const dl = $("batch-download");
    dl.href = "v1/batches/" + id + "/results?format=csv";
    dl.setAttribute("download", "mxprobe-" + batchID + ".csv");
    dl.textContent = "Download results so far (CSV)";
    $("batch-done").hidden = false;
    status.textContent = "Checking " + name + "\u2026";
    let st;
    let delay = 500;
    let lastDone = -1;
    for (;;) {
      if (run !== batchRun) return;
      const poll = await api("v1/batches/" + id, { headers: { Accept: "application/json" } });
      if (!poll.ok) {
        err.textContent = await errorMessage(poll);
        box.hidden = true;
        $("batch-done").hidden = true;
        return;
      }
      st = await poll.json();
      const total = Number(st.total) || 0;
      const done = Number(st.done) || 0;
      bar.max = Math.max(total, 1);
      bar.value = total === 0 ? 1 : Math.min(done, total);
      const pct = total === 0 ? 100 : Math.floor((100 * Math.min(done, total)) / total);
      bar.setAttribute("aria-valuetext", pct + "%");
      status.textContent = name + ": " + done + " of " + total + " checked (" + pct + "%)";
      renderCounts(st.counts);
      if (done !== lastDone || st.state === "done") {
        // The table follows the rows as they finish.
        lastDone = done;
        const res = await api("v1/batches/" + id + "/results?format=ndjson", { headers: { Accept: "application/x-ndjson" } });
        if (run !== batchRun) return;
        if (res.ok) renderResults(await res.text());
      }
      if (st.state === "done") break;
      await sleep(delay);
      delay = Math.min(delay * 1.25, 3000);
    }
    dl.textContent = "Download results (CSV)";
    status.textContent = "Done: " + name + ", " + st.total + " checked (100%).";
  }

  $("batch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = $("batch-error");
    err.textContent = "";
    const f = fileInput.files && fileInput.files[0];
    if (!f) {
      err.textContent = "Choose a CSV file first.";
      fileInput.focus();
      return;
    }
    $("batch-done").hidden = true;
    $("batch-rejected").hidden = true;
    const box = $("batch-progress-box");
    box.hidden = false;
    $("batch-status").textContent = "Uploading " + f.name + "\u2026";
    $("batch-button").disabled = true;
    try {
      const resp = await api("v1/batches", {
        method: "POST",
        headers: { "Content-Type": "text/csv" },
        body: f,
      });
      if (resp.status !== 202 && resp.status !== 200 && resp.status !== 201) {
        err.textContent = await errorMessage(resp);
        box.hidden = true;
        return;
      }
      const created = await resp.json();
      rememberBatch(created.id, f.name);
      $("batch-button").disabled = false;
      await follow(created.id, f.name, created.rejected);
    } catch (e) {
      err.textContent = "Cannot reach the server: " + e.message;
    } finally {
      $("batch-button").disabled = false;
    }
  });

  renderRecent();
})();
