// Copy buttons on code blocks (app/render.py renders div.md-code > div.md-code-head > button.md-copy, then pre > code).
// One delegated listener, no inline handler: it works under a strict Content-Security-Policy and for blocks that
// arrive later over the WebSocket. The clipboard API needs a secure context (https, or localhost / 127.0.0.1).
(function () {
  "use strict";

  function flash(button, text, cls) {
    button.textContent = text;
    if (cls) button.classList.add(cls);
    clearTimeout(button._quandaTimer);
    button._quandaTimer = setTimeout(function () {
      button.textContent = "Copy";
      if (cls) button.classList.remove(cls);
    }, 1500);
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    var button = target && target.closest ? target.closest("button.md-copy") : null;
    if (!button) return;
    var block = button.closest(".md-code");
    var code = block ? block.querySelector("pre code") : null;
    if (!code) return;
    if (!navigator.clipboard || !navigator.clipboard.writeText) {
      flash(button, "Copy unavailable");
      return;
    }
    navigator.clipboard.writeText(code.textContent).then(
      function () { flash(button, "Copied", "md-copied"); },
      function () { flash(button, "Copy failed"); }
    );
  });
})();
