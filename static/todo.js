// Todos as in TodoMVC (static file: the page runs under a strict CSP).
// - Up/Down move the focus from row to row.
// - Inline editing: double-click a name, press Enter on a focused row, or ✎; Enter (or leaving the box) saves,
//   Escape cancels. An unchanged name sends nothing; an empty one deletes the todo (the server decides).
// - An edit in progress survives updates of its own row from elsewhere (the row's view is patched around the
//   editor) and a move of the row (the editor comes back where the row lands).
// - Filters all / active / done from the URL's hash (#/, #/active, #/done); app.css hides the other rows.
// - The add box empties as a name is sent; a refused name comes back.
(function () {
  "use strict";
  var stash = {};  // row id -> the edit in progress of a row taken out of the list (a move)

  function rowOf(el) { return el && el.closest ? el.closest("li.todo") : null; }

  function startEdit(row, value, start, end) {
    if (!row || row.classList.contains("editing")) return;
    var input = row.querySelector("input.edit"), name = row.querySelector(".todo-name");
    if (!input || !name) return;
    row.dataset.original = name.textContent;
    input.value = value === undefined ? name.textContent : value;
    row.classList.add("editing");
    input.focus();
    var at = input.value.length;
    input.setSelectionRange(start === undefined ? at : start, end === undefined ? at : end);
  }

  function stopEdit(row) {
    row.classList.remove("editing");
    delete row.dataset.original;
    row.focus();
  }

  document.addEventListener("dblclick", function (e) {
    if (e.target.closest && e.target.closest("li.todo .todo-name")) startEdit(rowOf(e.target));
  });

  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest(".todo-edit-button")) startEdit(rowOf(e.target));
  });

  document.addEventListener("keydown", function (e) {
    var el = e.target;
    if (el.matches && el.matches("li.todo") && e.key === "Enter" && !el.classList.contains("editing")) {
      e.preventDefault();
      startEdit(el);
    } else if (el.matches && el.matches("li.todo") && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
      e.preventDefault();  // from row to row, as in a list (hidden rows of a filter are skipped)
      var step = e.key === "ArrowDown" ? "nextElementSibling" : "previousElementSibling";
      for (var next = el[step]; next; next = next[step]) {
        if (next.getClientRects().length) { next.focus(); break; }
      }
    } else if (el.matches && el.matches("li.todo input.edit") && e.key === "Escape") {
      e.preventDefault();
      var row = rowOf(el);
      el.value = row.dataset.original || el.value;
      stopEdit(row);
    }
  });

  // Before htmx sends the edit form (capture phase): nothing to send when the name did not change.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains("edit-form")) return;
    var row = rowOf(form), input = form.querySelector("input.edit");
    if (!row || !row.classList.contains("editing")) {
      e.preventDefault();
      e.stopPropagation();
      return;
    }
    var value = input.value.trim();
    if (value === (row.dataset.original || "").trim()) {
      e.preventDefault();
      e.stopPropagation();
    } else if (value) {
      row.querySelector(".todo-name").textContent = value;  // shown at once; the server's row follows
    }
    stopEdit(row);
  }, true);

  document.addEventListener("focusout", function (e) {  // leaving the box saves, as in TodoMVC
    var el = e.target;
    if (!el.matches || !el.matches("li.todo input.edit")) return;
    var row = rowOf(el);
    if (row && row.classList.contains("editing") && el.form) el.form.requestSubmit();
  });

  document.addEventListener("htmx:oobBeforeSwap", function (e) {
    var target = e.detail.target;
    if (!target.matches || !target.matches("li.todo.editing")) return;
    var input = target.querySelector("input.edit");
    var fresh = e.detail.fragment && e.detail.fragment.firstElementChild;
    if (fresh && fresh.matches && fresh.matches("li.todo")) {  // the row changed elsewhere: keep the editor
      var view = fresh.querySelector(".view");
      target.querySelector(".view").replaceWith(view);
      target.classList.toggle("done", fresh.classList.contains("done"));
      target.dataset.done = fresh.dataset.done;
      target.dataset.original = view.querySelector(".todo-name").textContent;
      htmx.process(view);
      e.detail.shouldSwap = false;
    } else if (input) {  // taken out (a move): the editor comes back with the row
      stash[target.id] = {value: input.value, start: input.selectionStart, end: input.selectionEnd};
      target.classList.remove("editing");  // so its removal (which blurs the box) saves nothing
    }
  });

  document.addEventListener("htmx:load", function (e) {
    var row = e.target;
    if (!row.matches || !row.matches("li.todo") || !stash[row.id]) return;
    var edit = stash[row.id];
    delete stash[row.id];
    startEdit(row, edit.value, edit.start, edit.end);
  });

  // Adding: the box empties as the name is sent (htmx has read the form by now: this listener runs after its
  // own), ready for the next; if the server refuses the name (its notice appears), the name comes back.
  var lastAdded = "";
  document.addEventListener("submit", function (e) {
    if (e.target.id !== "todo-add-form") return;
    var input = e.target.querySelector("#todo-new");
    lastAdded = input.value;
    input.value = "";
    input.focus();
  });

  document.addEventListener("htmx:oobAfterSwap", function (e) {
    var notice = e.target;  // the notice as it now is (the event's detail holds the one it replaced)
    if (!notice || notice.id !== "todo-error" || !notice.textContent) return;
    var input = document.getElementById("todo-new");
    if (input && !input.value && lastAdded) input.value = lastAdded;
    lastAdded = "";
  });

  function applyFilter() {
    var card = document.getElementById("todo-card");
    if (!card) return;
    var match = /^#\/(active|done)$/.exec(location.hash);
    var filter = match ? match[1] : "all";
    card.dataset.filter = filter;
    card.querySelectorAll(".todo-filters a").forEach(function (a) {
      var on = a.dataset.filter === filter;
      a.classList.toggle("selected", on);
      if (on) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
    });
  }

  window.addEventListener("hashchange", applyFilter);
  document.addEventListener("htmx:afterSettle", applyFilter);
  document.addEventListener("DOMContentLoaded", applyFilter);
})();
