// Quanda client glue, loaded after htmx (no inline script anywhere: the page runs under a strict CSP).
// - Streams: tells the server which page the tab shows and which streams are on it, from which seq, whenever
//   that changes, so every stream is followed (or resumed after a reconnect) with no gap and no duplicate,
//   and a stream that leaves the page is no longer followed.
// - Frames: the "quanda" htmx extension expands a stream's compact appends into htmx's own markup (and settles a
//   finished block from the pieces a tail shows, as a swap style of its own), then drops
//   what a WebSocket frame holds for elements that already left the page (frames in flight when the tab
//   navigated), rows a tab already has, and deletions already done.
// - Scroll boxes that follow what streams into them (class "follow-scroll"), with a jump-to-latest button.
// - Notices: a form's notice empties as soon as its form is edited; the page notice has a close button and
//   goes when the tab navigates. Focus survives the swap of the element holding it.
(function () {
  "use strict";
  var socket = null, open = false;
  var toldPage = null, told = {};  // the page and streams the server was last told about
  var gone = new Set();  // ids of elements that left the page with a navigation or a redraw
  var aliases = new Map();  // compact form: alias -> element id, for this socket's views

  // Back/forward reload the page from the server rather than restoring an old snapshot of it (with a live
  // socket and streams, a snapshot is stale at once; and nothing of the chat is kept in localStorage).
  htmx.config.historyCacheSize = 0;
  htmx.config.refreshOnHistoryMiss = true;

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

  // Tell the server what the tab shows, if that changed (`all`: after the socket (re)opens, resume every stream).
  function sync(all) {
    if (!socket || !open) return;  // (told again in full when the socket reopens)
    var fresh = [], streams = markers(fresh), page = pageName(), ids = Object.keys(streams);
    var same = !all && !fresh.length && page === toldPage && ids.length === Object.keys(told).length &&
      ids.every(function (id) { return told[id]; });
    if (same) return;
    socket.send(JSON.stringify({action: "view", page: page, streams: streams, fresh: all ? ids : fresh}));
    toldPage = page;
    told = {};
    ids.forEach(function (id) { told[id] = true; });
  }

  var STATE_TITLE = {open: "Live: connected", closed: "Connection lost", connecting: "Connecting…",
                     "signed-out": "Signed out"};

  function setState(state) {
    open = state === "open";
    var el = document.getElementById("ws-state");
    if (!el) return;
    el.dataset.state = state;
    el.title = STATE_TITLE[state] || state;
    el.setAttribute("aria-label", el.title);
  }

  // -- frames -----------------------------------------------------------------------------------------------
  function forget(root) {
    if (gone.size > 20000) gone.clear();
    root.querySelectorAll("[id]").forEach(function (el) { gone.add(el.id); });
  }

  // What an out-of-band element swaps: {style, id of its target}.
  function oobTarget(el) {
    var oob = el.getAttribute("hx-swap-oob") || "true";
    if (oob === "true") return {style: "outerHTML", id: el.id};
    var colon = oob.indexOf(":");
    if (colon < 0) return {style: oob, id: el.id};
    var match = /^#([\w-]+)/.exec(oob.slice(colon + 1));
    return {style: oob.slice(0, colon), id: match ? match[1] : null};
  }

  // A compact append (app/components/compact.py), `q="<alias>.<n>"` with `q-def="<id>"` where the alias is
  // defined, into `hx-swap-oob="beforeend:#<id>"` and n `>:last-child` steps; false if it cannot be expanded.
  // An alias cannot be used before its definition: a view's frames reach every tab that follows it, in order,
  // from its first frame, and its first compact element defines its alias (aliases are per socket: a tab that
  // reconnects follows its streams again, with new views that define their aliases again).
  // `q="<alias>.s"` becomes `hx-swap-oob="settle:#<id>"`: see `settle` below.
  function expandCompact(el) {
    var m = /^([0-9a-z]+)\.(\d+|s)$/.exec(el.getAttribute("q")), id = el.getAttribute("q-def");
    if (m && id) aliases.set(m[1], id);
    id = m && aliases.get(m[1]);
    if (!id) {
      console.warn("quanda: a compact append with an unknown alias was dropped", el.outerHTML.slice(0, 200));
      return false;
    }
    el.removeAttribute("q");
    el.removeAttribute("q-def");
    el.setAttribute("hx-swap-oob", m[2] === "s" ? "settle:#" + id
                                                : "beforeend:#" + id + ">:last-child".repeat(parseInt(m[2], 10)));
    return true;
  }

  // The "settle" swap (htmx runs it through this extension's handleSwap, in the frame's order): the pieces in a
  // message's tail, merged by the rule defined in app/render/settle.py (implemented there on the server's
  // strings, here on the page's nodes, in bench/page.py on the page model's), moved to the end of the message's
  // body (`msg-<id>-tail` -> `msg-<id>-body`); the tail is left empty. The server sends it only when that merge
  // gives exactly the finished block's HTML, so the block itself is not sent again.
  var WS_ONLY = /^[ \t\n\r\f]*$/, ENDS_WS = /[ \t\n\r\f]$/, TRAILING_WS = /[ \t\n\r\f]+$/, DESCEND = {P: 1, LI: 1, UL: 1, OL: 1, BLOCKQUOTE: 1};

  function lastNode(parent) {  // its last child that is not whitespace-only text
    for (var n = parent.lastChild; n; n = n.previousSibling) {
      if (n.nodeType !== Node.TEXT_NODE || !WS_ONLY.test(n.data)) return n;
    }
    return null;
  }

  function settle(tail) {
    var body = document.getElementById(tail.id.replace(/-tail$/, "-body"));
    if (!body) return;
    var out = document.createDocumentFragment();
    Array.prototype.slice.call(tail.children).forEach(function (piece) {
      var first = piece.firstChild, last = lastNode(out), into = null;
      if (first && first.nodeType === Node.ELEMENT_NODE && last && last.nodeType === Node.ELEMENT_NODE) {
        if (first.tagName === "P" && first.getAttribute("class") === "md-inline") {  // inline join
          into = last;
          for (var n = lastNode(into); n && n.nodeType === Node.ELEMENT_NODE && DESCEND[n.tagName]; n = lastNode(n)) {
            into = n;
          }
          var end = first.lastChild;
          if (end && end.nodeType === Node.TEXT_NODE && /\n$/.test(end.data)) end.data = end.data.replace(TRAILING_WS, "");
          if (!ENDS_WS.test(into.textContent)) into.appendChild(document.createTextNode(" "));
        } else if ((first.tagName === "UL" || first.tagName === "OL") && first.tagName === last.tagName) {  // list join
          into = last;
          var lead = first.firstChild;
          if (lead && lead.nodeType === Node.TEXT_NODE && WS_ONLY.test(lead.data)) first.removeChild(lead);
        }
      }
      if (into) {
        while (out.lastChild !== last) out.removeChild(out.lastChild);
        while (first.firstChild) into.appendChild(first.firstChild);
        piece.removeChild(first);
      }
      while (piece.firstChild) out.appendChild(piece.firstChild);
    });
    tail.textContent = "";
    body.appendChild(out);
  }

  // The frame as text again. A serializer writes the newline right after <pre> once where a parser drops one:
  // such a newline is doubled first, so that the frame htmx parses again holds what this one held.
  function serialize(template) {
    template.content.querySelectorAll("pre, textarea, listing").forEach(function (el) {
      var first = el.firstChild;
      if (first && first.nodeType === Node.TEXT_NODE && first.data.charAt(0) === "\n") first.data = "\n" + first.data;
    });
    return template.innerHTML;
  }

  function filterFrame(text) {
    var template = document.createElement("template");
    template.innerHTML = text;
    var changed = false;
    Array.prototype.slice.call(template.content.children).forEach(function (el) {
      if (el.hasAttribute("q")) {
        changed = true;
        if (!expandCompact(el)) { el.remove(); return; }
      }
      var target = oobTarget(el);
      if (!target.id) return;
      if (!document.getElementById(target.id)) {
        if (target.style === "delete" || gone.has(target.id)) {  // done already, or left the page
          el.remove();
          changed = true;
        }
        return;
      }
      if (target.style === "outerHTML" || target.style === "innerHTML") {  // what it replaces leaves the page
        forget(document.getElementById(target.id));
      } else if (target.style === "beforeend" || target.style === "afterbegin") {  // never the same row twice
        var had = el.children.length;
        Array.prototype.slice.call(el.children).forEach(function (child) {
          if (child.id && document.getElementById(child.id)) { child.remove(); changed = true; }
        });
        if (had && !el.children.length && !el.textContent.trim()) el.remove();
      }
    });
    return changed ? serialize(template) : text;
  }

  htmx.defineExtension("quanda", {
    transformResponse: function (text, xhr) {
      return xhr ? text : filterFrame(text);  // WebSocket frames only (HTTP responses come with no xhr here)
    },
    handleSwap: function (style, target) {
      if (style !== "settle") return false;
      settle(target);
      return true;
    }
  });

  document.addEventListener("htmx:beforeSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "main") forget(e.detail.target);
  });

  // -- scroll boxes that follow -------------------------------------------------------------------------------
  var sticky = new WeakMap(), watched = new WeakSet();

  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 24; }

  function stickiness(el) {
    var s = sticky.get(el);
    if (!s) { s = {stuck: true, lastTop: el.scrollTop}; sticky.set(el, s); }
    return s;
  }

  function showJump(el, s) {
    if (!el.id) return;
    document.querySelectorAll('[data-jump-for="' + el.id + '"]').forEach(function (button) {
      var hide = s.stuck || nearBottom(el);
      if (button.hidden !== hide) button.hidden = hide;
    });
  }

  // An element to hold in place in its box for a moment (the question being edited, while the input grows
  // around it): the box scrolls so that it stays where the person saw it, instead of following the end.
  var anchors = new WeakMap();

  // `alsoShow`: an element below it that must stay in view too (the box scrolls just enough for it).
  function anchor(target, alsoShow) {
    var box = target && target.closest ? target.closest(".follow-scroll") : null;
    if (!box) return;
    anchors.set(box, {el: target, also: alsoShow, until: Date.now() + 3000,
                      offset: target.getBoundingClientRect().top - box.getBoundingClientRect().top});
  }

  function holdAnchor(el, s) {
    var a = anchors.get(el);
    if (!a) return false;
    if (Date.now() > a.until || !a.el.isConnected) {
      anchors.delete(el);
      return false;
    }
    var box = el.getBoundingClientRect(), shift = a.el.getBoundingClientRect().top - box.top - a.offset;
    if (a.also && a.also.isConnected) shift = Math.max(shift, a.also.getBoundingClientRect().bottom - box.bottom);
    el.scrollTop += shift;
    s.lastTop = el.scrollTop;
    s.stuck = nearBottom(el);
    showJump(el, s);
    return true;
  }

  function follow(el) {
    var s = stickiness(el);
    if (holdAnchor(el, s)) return;
    if (s.stuck && el.scrollTop !== el.scrollHeight - el.clientHeight) {
      el.scrollTop = el.scrollHeight;
      s.lastTop = el.scrollTop;
    }
    showJump(el, s);
  }

  // Run after every change to a box's content (a MutationObserver's callback runs before the next paint, so a
  // following box never shows a frame that is not at the bottom) and when a box appears or is resized.
  function followAll() {
    document.querySelectorAll(".follow-scroll").forEach(function (el) {
      if (!watched.has(el)) {
        watched.add(el);
        new MutationObserver(function () { follow(el); }).observe(el, {childList: true, subtree: true,
                                                                        characterData: true});
        new ResizeObserver(function () { follow(el); }).observe(el);
      }
      follow(el);
    });
  }

  function stick(id) {
    var el = document.getElementById(id);
    if (!el) return;
    stickiness(el).stuck = true;
    follow(el);
  }

  ["wheel", "touchmove", "keydown"].forEach(function (type) {  // the person scrolls: no anchor holds any more
    document.addEventListener(type, function (e) {
      var box = e.target.closest ? e.target.closest(".follow-scroll") : null;
      if (box) anchors.delete(box);
    }, {capture: true, passive: true});
  });

  document.addEventListener("scroll", function (e) {
    var el = e.target;
    if (!el.classList || !el.classList.contains("follow-scroll")) return;
    var s = stickiness(el);
    if (anchors.has(el)) {  // (the scroll holdAnchor made)
      s.lastTop = el.scrollTop;
      return;
    }
    if (nearBottom(el)) s.stuck = true;
    else if (el.scrollTop < s.lastTop - 2) s.stuck = false;  // the reader scrolled up: stop following
    s.lastTop = el.scrollTop;
    showJump(el, s);
  }, true);

  document.addEventListener("click", function (e) {
    var button = e.target.closest ? e.target.closest("[data-jump-for]") : null;
    if (button) stick(button.dataset.jumpFor);
  });

  document.addEventListener("submit", function (e) {  // sending something: show what comes back
    var id = e.target.dataset ? e.target.dataset.stick : null;
    if (id) stick(id);
  }, true);

  // -- notices and focus ---------------------------------------------------------------------------------------
  function clearNotice(id) {
    var notice = id && document.getElementById(id);
    if (notice && notice.textContent) notice.textContent = "";
  }

  document.addEventListener("input", function (e) {
    var form = e.target.form || (e.target.closest && e.target.closest("form"));
    if (form && form.dataset.notice) clearNotice(form.dataset.notice);
  });

  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest(".notice-close")) clearNotice("ws-notice");
  });

  // Focus survives the swap of the element holding it: the same element (by id), else the same control (by
  // data-testid) in the element swapped in, else its first control (Stop gives way to Send); and when the
  // element left for good (a deleted row), the next row (or the previous one) takes it, as in a list app.
  var refocus = null;
  var FOCUSABLE = "button:not([disabled]), input:not([disabled]):not([type=hidden]), textarea, select, a[href], [tabindex]";

  function visible(el) { return !!el && el.getClientRects().length > 0; }

  function neighbour(el) {
    for (var n = el.nextElementSibling; n; n = n.nextElementSibling) if (visible(n) && n.matches(FOCUSABLE)) return n.id;
    for (var p = el.previousElementSibling; p; p = p.previousElementSibling) if (visible(p) && p.matches(FOCUSABLE)) return p.id;
    return null;
  }

  document.addEventListener("htmx:oobBeforeSwap", function (e) {
    var active = document.activeElement, target = e.detail.target;
    if (refocus || !active || active === document.body || !target.contains(active)) return;
    refocus = {id: active.id, start: active.selectionStart, end: active.selectionEnd, target: target.id,
               testid: active.dataset ? active.dataset.testid : null, next: neighbour(target)};
  });

  function focusTarget(r) {
    var el = r.id && document.getElementById(r.id);
    if (el && visible(el)) return el;
    var holder = r.target && document.getElementById(r.target);
    if (holder) {
      el = r.testid && holder.querySelector('[data-testid="' + r.testid + '"]');
      if (el && visible(el)) return el;
      if (holder.matches(FOCUSABLE) && !r.testid) return holder;
      el = Array.prototype.find.call(holder.querySelectorAll(FOCUSABLE), visible);
      if (el) return el;
    }
    return r.next ? document.getElementById(r.next) : null;
  }

  function restoreFocus() {
    if (!refocus) return;
    var r = refocus, active = document.activeElement;
    refocus = null;
    if (active && active !== document.body) return;  // the person has moved on already
    var el = focusTarget(r);
    if (!el) return;
    el.focus();
    if (el.id === r.id) {
      try { el.setSelectionRange(r.start, r.end); } catch (err) { /* not a text field */ }
    }
  }

  // -- wiring ------------------------------------------------------------------------------------------------
  // A lone UTF-16 surrogate (half of a broken emoji) cannot be stored: the server refuses text holding one,
  // so the page sends U+FFFD in its place and the user's text goes through.
  var LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
  document.addEventListener("htmx:wsConfigSend", function (e) {
    var params = e.detail.parameters;
    Object.keys(params).forEach(function (name) {
      if (typeof params[name] === "string") params[name] = params[name].replace(LONE_SURROGATE, "\uFFFD");
    });
  });

  var openedBefore = false;
  document.addEventListener("htmx:wsOpen", function (e) {
    socket = e.detail.socketWrapper;
    aliases.clear();
    setState("open");
    var redraw = openedBefore && document.getElementById("page");
    if (redraw) {
      // what changed while the socket was down (a todo, a run started) came as facts nobody received: the
      // main area is drawn again from the server, and its streams are followed from the new drawing's
      // markers (not from the old ones, whose frames would land in the new drawing)
      document.querySelectorAll("#main [data-stream]").forEach(function (el) { el.removeAttribute("data-stream"); });
    }
    sync(true);  // first connection or reconnect: resume everything on the page
    if (redraw) htmx.ajax("GET", location.pathname + "?refresh=1", {target: "#main", swap: "innerHTML"});
    openedBefore = true;
    document.dispatchEvent(new CustomEvent("quanda:open"));
  });
  // Signed out: the server closes the socket with 1008 and a reason "signed out: …" once the tab's access was
  // revoked (a password changed, the account removed or disabled, a logout elsewhere). The page says so and
  // stops: its notice keeps the reason with a link to sign in again, its controls are disabled, and the socket
  // is not reopened (the ws extension reconnects only after 1006, 1011, 1012 and 1013).
  function signedOut(reason) {
    document.body.dataset.signedOut = "true";
    setState("signed-out");
    var notice = document.getElementById("ws-notice");
    if (notice && !notice.classList.contains("signed-out")) {  // the server's notice did not arrive first
      var text = document.createElement("span"), link = document.createElement("a");
      text.className = "notice-text";
      text.textContent = reason;
      link.href = "/login";
      link.className = "signed-out-login";
      link.textContent = "Sign in again";
      notice.className = "notice error signed-out";
      notice.replaceChildren(text, link);
    }
    document.querySelectorAll("input, textarea, select, button").forEach(function (el) { el.disabled = true; });
  }

  document.addEventListener("htmx:wsClose", function (e) {
    var close = e.detail.event;
    if (close && close.code === 1008 && /^signed out/.test(close.reason || "")) signedOut(close.reason);
    else setState("closed");
  });
  document.addEventListener("htmx:afterSettle", function (e) {
    if (e.detail.target && e.detail.target.id === "main") clearNotice("ws-notice");  // it was about the page left
    sync(false);
    followAll();
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    sync(false);
    restoreFocus();
    followAll();
  });
  document.addEventListener("DOMContentLoaded", followAll);

  // For the page's other scripts (static/chat.js, static/todo.js).
  window.Quanda = {
    anchor: anchor,
    send: function (data) { if (socket && open) socket.send(JSON.stringify(data)); return !!socket && open; },
    stick: stick
  };
})();
