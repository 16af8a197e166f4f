// Quanda client glue: tells the server which streams the page shows and from which seq, so every
// stream is followed (or resumed after a reconnect) with no gap and no duplicate.
(function () {
  "use strict";
  var socket = null;

  function streamsIn(root, onlyNew) {
    var streams = {}, count = 0;
    var selector = onlyNew ? "[data-stream][data-follow]" : "[data-stream]";
    root.querySelectorAll(selector).forEach(function (el) {
      streams[el.dataset.stream] = parseInt(el.dataset.seq, 10) || 0;
      el.removeAttribute("data-follow");
      count++;
    });
    return count ? streams : null;
  }

  function follow(root, onlyNew) {
    if (!socket) return;
    var streams = streamsIn(root, onlyNew);
    if (streams) socket.send(JSON.stringify({action: "follow", streams: streams}));
  }

  function setState(state) {
    var el = document.getElementById("ws-state");
    if (el) el.dataset.state = state;
  }

  // A lone UTF-16 surrogate (half of a broken emoji) cannot be stored: the server refuses text holding one,
  // so the page sends U+FFFD in its place and the user's text goes through.
  var LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
  document.addEventListener("htmx:wsConfigSend", function (e) {
    var params = e.detail.parameters;
    Object.keys(params).forEach(function (name) {
      if (typeof params[name] === "string") params[name] = params[name].replace(LONE_SURROGATE, "\uFFFD");
    });
  });

  document.addEventListener("htmx:wsOpen", function (e) {
    socket = e.detail.socketWrapper;
    setState("open");
    follow(document, false);  // first connection or reconnect: resume everything on the page
  });
  document.addEventListener("htmx:wsClose", function () { setState("closed"); });
  document.addEventListener("htmx:afterSettle", function (e) {
    if (e.detail.target && e.detail.target.id === "main") follow(e.detail.target, true);
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    follow(document, true);
    document.querySelectorAll(".stream-content").forEach(function (box) { box.scrollTop = box.scrollHeight; });
  });
})();
