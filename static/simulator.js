// The simulator's fields, kept per tab (static file: the page runs under a strict CSP).
// While a run goes, the fields show the values it runs with (the server draws them so). Idle, what was typed
// in this tab comes back when the card is drawn again (a navigation, a reload): kept in sessionStorage, which
// is per tab, so another tab shows the last run's values rather than this one's draft.
(function () {
  "use strict";
  var KEY = "quanda.simulator.fields", FIELDS = ["sim-chunks", "sim-delay-min", "sim-delay-max"];

  function running() {
    var stop = document.getElementById("sim-stop");
    return !!stop && !stop.disabled;
  }

  function restore() {
    if (!document.getElementById("sim-start-form") || running()) return;
    var kept;
    try { kept = JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (err) { kept = null; }
    if (!kept) return;
    FIELDS.forEach(function (id) {
      var input = document.getElementById(id);
      if (input && typeof kept[id] === "string" && kept[id] !== "") input.value = kept[id];
    });
  }

  document.addEventListener("input", function (e) {
    if (!e.target.closest || !e.target.closest("#sim-start-form")) return;
    var kept = {};
    FIELDS.forEach(function (id) {
      var input = document.getElementById(id);
      if (input) kept[id] = input.value;
    });
    try { sessionStorage.setItem(KEY, JSON.stringify(kept)); } catch (err) { /* storage off: nothing kept */ }
  });

  document.addEventListener("DOMContentLoaded", restore);
  document.addEventListener("htmx:afterSettle", function (e) {
    if (e.detail.target && e.detail.target.id === "main") restore();
  });
})();
