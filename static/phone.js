// The chat as a drawer on a phone (static file: the page runs under a strict CSP). app.css shows the "Chat"
// button and the drawer's close button only on narrow screens; here they open and close it (body.chat-open).
// "/" and "Skip to chat" open it too (static/chat.js sends quanda:show-chat). While it is closed, a message
// arriving marks the button (a dot) until it is opened.
(function () {
  "use strict";

  function toggleButton() { return document.querySelector(".chat-toggle"); }

  function setOpen(open) {
    document.body.classList.toggle("chat-open", open);
    var button = toggleButton();
    if (!button) return;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) button.classList.remove("unread");
  }

  document.addEventListener("click", function (e) {
    if (!e.target.closest) return;
    if (e.target.closest(".chat-toggle")) setOpen(true);
    else if (e.target.closest(".chat-close")) {
      setOpen(false);
      var button = toggleButton();
      if (button) button.focus();
    }
  });

  document.addEventListener("quanda:show-chat", function () { setOpen(true); });

  document.addEventListener("keydown", function (e) {  // Escape outside the box closes the drawer
    if (e.key === "Escape" && document.body.classList.contains("chat-open") && e.target.id !== "chat-input") {
      setOpen(false);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("msg-list");
    if (!list) return;
    new MutationObserver(function (changes) {
      var button = toggleButton();
      if (!button || document.body.classList.contains("chat-open") || !button.offsetParent) return;
      if (changes.some(function (c) { return c.addedNodes.length; })) button.classList.add("unread");
    }).observe(list, {childList: true});
  });
})();
