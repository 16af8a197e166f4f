// The chat sidebar's keys and timers (static file: the page runs under a strict CSP).
// - Enter sends, Shift+Enter adds a line (and nothing is sent while an answer is written: Send is Stop then);
//   Escape cancels the edit of a question, else leaves the box. The box empties as a question is sent; a refused
//   one comes back.
// - "/" anywhere but in a text field focuses the chat's box (as GitHub's "/" does its search), and so does the
//   "Skip to chat" link, the page's first stop for Tab.
// - The LLM status badge is asked for again every data-check-s seconds while the tab is visible. With no model
//   to answer (the badge's data-model empty), Send is off and the line under it says why; the model picker
//   the server sends with the badge replaces the tab's only when its list of models changed.
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
      e.preventDefault();
      var cancel = document.getElementById("chat-cancel-edit");
      if (cancel) cancel.click();
      else input.blur();
    }
  });

  // Edit: the question stays where it was while the input takes its text and the edit bar appears.
  document.addEventListener("click", function (e) {
    var edit = e.target.closest ? e.target.closest("#msg-list .edit-q") : null;
    var question = edit && edit.closest("li.msg"), answer = question && question.nextElementSibling;
    if (question && window.Quanda) window.Quanda.anchor(question, answer && answer.querySelector(".msg-role"));
  }, true);

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  function focusChat() {
    document.dispatchEvent(new CustomEvent("quanda:show-chat"));  // on a phone, the chat is a tab away
    var input = document.getElementById("chat-input");
    if (!input) return false;
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
    return true;
  }

  document.addEventListener("keydown", function (e) {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented || typing(e.target)) return;
    if (focusChat()) e.preventDefault();
  });

  document.addEventListener("click", function (e) {
    var link = e.target.closest ? e.target.closest("a.skip-link") : null;
    if (link && focusChat()) e.preventDefault();  // (the URL's hash is the todo filter's: left alone)
  });

  // Sending: the box empties as the question goes (htmx has read the form by now: this listener runs after
  // its own), so the next can be typed at once; if the chat refuses it (its notice appears), the text comes back.
  var lastSent = "";
  document.addEventListener("submit", function (e) {
    if (e.target.id !== "chat-form") return;
    var input = document.getElementById("chat-input");
    lastSent = input.value;
    input.value = "";
    input.focus();
  });

  document.addEventListener("htmx:oobAfterSwap", function (e) {
    var notice = e.target;  // the notice as it now is
    if (!notice || notice.id !== "chat-notice" || !notice.textContent) return;
    var input = document.getElementById("chat-input");
    if (input && !input.value && lastSent) input.value = lastSent;
    lastSent = "";
  });

  function noModel() {
    var badge = document.getElementById("llm-status");
    return !!badge && badge.hasAttribute("data-model") && !badge.dataset.model && !badge.dataset.busy;
  }

  function applyModelState() {
    var none = noModel(), send = document.getElementById("chat-send"), reason = document.getElementById("send-reason");
    if (send && send.disabled !== none) {
      send.disabled = none;
      send.title = none && reason ? reason.textContent : "Send (Enter; Shift+Enter for a new line)";
    }
    if (reason) reason.hidden = !(none && send);
  }

  function optionValues(select) {
    return Array.prototype.map.call(select.options, function (o) { return o.value; }).join("\n");
  }

  document.addEventListener("htmx:oobBeforeSwap", function (e) {
    var target = e.detail.target, fresh = e.detail.fragment && e.detail.fragment.firstElementChild;
    if (!target || target.id !== "model-picker" || !fresh || fresh.tagName !== "SELECT") return;
    if (optionValues(fresh) === optionValues(target) && fresh.disabled === target.disabled) e.detail.shouldSwap = false;
  });

  document.addEventListener("htmx:wsAfterMessage", applyModelState);
  document.addEventListener("DOMContentLoaded", applyModelState);

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
