// Quanda client glue: tells the server which page the tab shows and which streams are on it, from which
// seq, so every stream is followed (or resumed after a reconnect) with no gap and no duplicate, and a stream
// that leaves the page is no longer followed.
(function () {
  "use strict";
  var socket = null;

  // Every stream marker on the page: {message id: seq}; `fresh` collects those rendered since last asked.
  function markers(fresh) {
    var streams = {};
    document.querySelectorAll("[data-stream]").forEach(function (el) {
      streams[el.dataset.stream] = parseInt(el.dataset.seq, 10) || 0;
      if (el.hasAttribute("data-follow")) {
        fresh.push(el.dataset.stream);
        el.removeAttribute("data-follow");
      }
    });
    return streams;
  }

  function pageName() {
    var page = document.getElementById("page");
    return page ? page.dataset.page : null;
  }

  // The tab now shows this page with these streams (after the socket opens and after navigation).
  function sendView(all) {
    if (!socket) return;
    var fresh = [];
    var streams = markers(fresh);
    socket.send(JSON.stringify({action: "view", page: pageName(), streams: streams,
                                fresh: all ? Object.keys(streams) : fresh}));
  }

  // Streams that just appeared (a new answer, a new run): follow them from their marker's seq.
  function followFresh() {
    if (!socket) return;
    var fresh = [], streams = markers(fresh), wanted = {}, count = 0;
    fresh.forEach(function (id) { wanted[id] = streams[id]; count++; });
    if (count) socket.send(JSON.stringify({action: "follow", streams: wanted}));
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
    sendView(true);  // first connection or reconnect: resume everything on the page
  });
  document.addEventListener("htmx:wsClose", function () { setState("closed"); });
  document.addEventListener("htmx:afterSettle", function (e) {
    if (e.detail.target && e.detail.target.id === "main") sendView(false);
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    followFresh();
    document.querySelectorAll(".stream-content").forEach(function (box) { box.scrollTop = box.scrollHeight; });
  });
})();
