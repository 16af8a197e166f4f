// The chat sidebar's keys and timers (static file: the page runs under a strict CSP).
// - Enter sends, Shift+Enter adds a line (and nothing is sent while an answer is written: Send is Stop then);
//   Escape cancels the edit of a question.
// - The LLM status badge is asked for again every data-check-s seconds while the tab is visible.
(function () {
  "use strict";

  document.addEventListener("keydown", function (e) {
    var input = e.target;
    if (!input || input.id !== "chat-input") return;
    if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.isComposing) {
      e.preventDefault();
      var send = document.getElementById("chat-send");
      if (send && !send.disabled && input.value.trim()) send.click();
    } else if (e.key === "Escape") {
      var cancel = document.getElementById("chat-cancel-edit");
      if (cancel) {
        e.preventDefault();
        cancel.click();
      }
    }
  });

  var timer = null;

  function checkEvery() {
    var badge = document.getElementById("llm-status");
    var seconds = badge ? parseFloat(badge.dataset.checkS) : NaN;
    return seconds > 0 ? seconds * 1000 : 0;
  }

  function schedule() {
    clearTimeout(timer);
    var ms = checkEvery();
    if (ms) timer = setTimeout(check, ms);
  }

  function check() {
    if (!document.hidden && window.Quanda) window.Quanda.send({action: "chat.status"});
    schedule();
  }

  document.addEventListener("quanda:open", schedule);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) check(); });
})();
