// The connection's state, said plainly (static file: the page runs under a strict CSP).
// - Lost: a banner at the top says "Connection lost — retrying in N s" (the next try's time, counting down)
//   while the WebSocket extension waits to reconnect; our own backoff (1, 2, 4, 8 s, then every 10 s, with
//   jitter) replaces its default, which grows to a minute.
// - What is done meanwhile (a todo added, a question sent) is queued by the extension: the banner lists each
//   action with "will be sent when back" and a Cancel button; Cancel takes it out of the queue, so it never
//   runs. Closing the tab with actions queued asks first. Drafts and the tab's own bookkeeping are queued
//   silently (the server is told the page again on reconnect anyway).
// - Back: "Back online" (and how many queued actions went) is said once, then the banner goes.
// - Closed for good (a close code the extension does not reconnect after): the banner says to reload.
(function () {
  "use strict";
  var RECONNECTABLE = [1006, 1011, 1012, 1013];
  var SILENT = {"chat.draft": 1, "chat.status": 1, view: 1};
  var nextTry = 0, ticker = null, hideTimer = null, wrapper = null, lost = false;

  htmx.config.wsReconnectDelay = function (retries) {
    var ms = Math.min(1000 * Math.pow(2, retries), 10000) * (0.75 + Math.random() * 0.25);
    nextTry = Date.now() + ms;
    return ms;
  };

  function banner() { return document.getElementById("connection"); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text) node.textContent = text;
    return node;
  }

  function quoted(text) {
    text = String(text || "").trim();
    return "“" + (text.length > 60 ? text.slice(0, 59) + "…" : text) + "”";
  }

  // What a queued frame does, in words (null: not shown).
  function describe(message) {
    var data;
    try { data = JSON.parse(message); } catch (err) { return "an action"; }
    var action = data.action;
    if (!action || SILENT[action]) return null;
    switch (action) {
      case "todo.add": return "Add the todo " + quoted(data.name);
      case "todo.edit": return "Rename todo #" + data.id + " to " + quoted(data.name);
      case "todo.toggle": return "Mark todo #" + data.id + " done or not done";
      case "todo.toggle_all": return "Mark every todo";
      case "todo.delete": return "Delete todo #" + data.id;
      case "todo.move": return "Move todo #" + data.id + " " + data.direction;
      case "todo.clear_done": return "Clear the done todos";
      case "chat.send": return data.poke ? "Poke the assistant" : "Send " + quoted(data.text);
      default: return action.replace(/[._]/g, " ");
    }
  }

  function queued() {
    if (!wrapper) return [];
    return wrapper.queue.map(function (item) { return {item: item, text: describe(item.message)}; })
      .filter(function (q) { return q.text; });
  }

  function cancel(item) {
    var at = wrapper ? wrapper.queue.indexOf(item) : -1;
    if (at >= 0) wrapper.queue.splice(at, 1);
    draw();
  }

  function draw() {
    var box = banner();
    if (!box || !lost) return;
    var seconds = Math.max(0, Math.ceil((nextTry - Date.now()) / 1000));
    var head = el("p", "connection-head");
    head.appendChild(el("strong", null, "Connection lost"));
    head.appendChild(el("span", "connection-retry", seconds ? " — retrying in " + seconds + " s" : " — reconnecting…"));
    var parts = [head], items = queued();
    if (items.length) {
      var list = el("ul", "connection-queue");
      list.setAttribute("aria-label", "Waiting to be sent");
      items.forEach(function (q) {
        var li = el("li", null), button = el("button", "link small connection-cancel", "Cancel");
        button.type = "button";
        button.title = "Do not send it";
        button.addEventListener("click", function () { cancel(q.item); });
        li.appendChild(el("span", null, q.text + " — will be sent when back "));
        li.appendChild(button);
        list.appendChild(li);
      });
      parts.push(list);
    }
    box.replaceChildren.apply(box, parts);
    box.className = "connection lost";
    box.hidden = false;
  }

  function offline(closed) {
    clearTimeout(hideTimer);
    if (!lost) {
      lost = true;
      var box = banner();
      if (box) box.setAttribute("role", "alert");  // said once, as it goes; the countdown is not re-announced
    }
    draw();
    clearInterval(ticker);
    ticker = setInterval(draw, 1000);
    if (!closed) return;
    clearInterval(ticker);
    var box2 = banner(), reload = el("button", "small", "Reload");
    reload.type = "button";
    reload.addEventListener("click", function () { location.reload(); });
    box2.replaceChildren(el("strong", null, "Connection closed"),
                         el("span", null, " — the page no longer updates. "), reload);
  }

  function online(sent) {
    clearInterval(ticker);
    var box = banner();
    if (!lost || !box) return;
    lost = false;
    box.setAttribute("role", "status");
    box.replaceChildren(el("strong", null, "Back online"),
                        el("span", null, sent ? " — " + sent + (sent === 1 ? " action" : " actions") + " sent" : ""));
    box.className = "connection back";
    hideTimer = setTimeout(function () { box.hidden = true; box.replaceChildren(); }, 4000);
  }

  document.addEventListener("htmx:wsClose", function (e) {
    wrapper = e.detail.socketWrapper;
    var close = e.detail.event;
    if (document.body.dataset.signedOut) return;  // quanda.js says why, and stops
    offline(!close || RECONNECTABLE.indexOf(close.code) < 0);
  });

  // Back: what waited is sent once the main area has been drawn again (static/quanda.js asks for it as the
  // socket opens), not before: an action's row arriving ahead of that drawing would be drawn over by it.
  var held = null, holdTimer = null;

  function sendHeld() {
    if (!held) return;
    clearTimeout(holdTimer);
    var items = held;
    held = null;
    items.forEach(function (item) { wrapper.send(item.message, item.sendElt); });
  }

  document.addEventListener("htmx:wsOpen", function (e) {
    wrapper = e.detail.socketWrapper;
    var shown = queued().length;
    if (lost && wrapper.queue.length) {
      held = wrapper.queue.splice(0);  // (the extension would send them right after this event)
      holdTimer = setTimeout(sendHeld, 5000);  // no redraw came: send them anyway
    }
    online(shown);
  });

  document.addEventListener("htmx:afterSettle", function (e) {
    if (e.detail.target && e.detail.target.id === "main") sendHeld();
  });

  document.addEventListener("htmx:wsConfigSend", function () {  // queued while lost: shown at once
    if (lost) setTimeout(draw, 0);
  });

  window.addEventListener("beforeunload", function (e) {
    if (lost && queued().length) {
      e.preventDefault();
      e.returnValue = "";
    }
  });

  window.QuandaConnection = {online: function () { return !lost; }};
})();
