// Keyboard shortcuts for the review desk. Every action is also a plain form or link, so the desk
// works without this file; it only adds keys (see the footer, or press ?). No inline script: the
// Content-Security-Policy allows scripts from /static only.
(function () {
  "use strict";
  var page = document.body.getAttribute("data-page");

  // A second submit of the same form (double click, key repeat) is dropped here; the server's
  // idempotency key makes it harmless anyway.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.getAttribute("data-submitted")) { ev.preventDefault(); return; }
    form.setAttribute("data-submitted", "1");
  }, true);

  function submitForm(id) {
    var form = document.getElementById(id);
    if (!form) { return false; }
    if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
    return true;
  }
  function follow(id) {
    var a = document.getElementById(id);
    if (a) { window.location.assign(a.getAttribute("href")); return true; }
    return false;
  }
  function isField(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  function toggleHelp() {
    var help = document.getElementById("keys-help");
    if (help) { help.open = !help.open; if (help.open) { help.scrollIntoView(); } }
  }

  // Queue page: j/k move a selection through the rows, Enter opens the selected item.
  var rows = Array.prototype.slice.call(document.querySelectorAll(".queue-row"));
  var selected = -1;
  function select(i) {
    if (!rows.length) { return; }
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, n) { r.classList.toggle("selected", n === selected); });
    rows[selected].scrollIntoView({block: "nearest"});
  }

  var correct = document.getElementById("correct-form");
  function startEditing() {
    if (!correct) { return false; }
    correct.classList.add("editing");
    var first = correct.querySelector("select, input:not([type=hidden])");
    if (first) { first.focus(); }
    return true;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) { return; }
    var t = ev.target;
    if (correct && correct.contains(t)) {
      if (ev.key === "Enter") { ev.preventDefault(); submitForm("correct-form"); }
      else if (ev.key === "Escape") { t.blur(); correct.classList.remove("editing"); }
      return;
    }
    if (isField(t)) { return; }
    var onControl = t && /^(BUTTON|A|SUMMARY)$/.test(t.tagName);
    var done = false;
    switch (ev.key) {
      case "?": toggleHelp(); done = true; break;
      case "u": done = submitForm("undo-form"); break;
      case "a": done = page === "item" && submitForm("approve-form"); break;
      case "x": done = page === "item" && submitForm("reject-form"); break;
      case "e": done = page === "item" && startEditing(); break;
      case " ":
        if (!onControl) { done = page === "item" && submitForm("skip-form"); }
        break;
      case "j":
        if (page === "item") { done = follow("next-link"); }
        else if (page === "queue") { select(selected + 1); done = true; }
        break;
      case "k":
        if (page === "item") { done = follow("prev-link"); }
        else if (page === "queue") { select(selected - 1); done = true; }
        break;
      case "Enter":
        if (page === "queue" && selected >= 0 && !onControl) {
          window.location.assign(rows[selected].getAttribute("data-href"));
          done = true;
        }
        break;
    }
    if (done) { ev.preventDefault(); }
  }, true);
})();
