// fsrouter's pages: fill the page's <template>s with the state the daemon streams (Server-Sent
// Events). Every value goes in as text (textContent) or, for a link, as an http(s) href: nothing
// that comes from a caller ID or the CRM is ever parsed as markup.
"use strict";
(function () {
  var root = document.querySelector("[data-stream]");
  if (!root) return;

  function get(data, path) {
    if (path === ".") return data;
    return path.split(".").reduce(function (v, k) { return v == null ? v : v[k]; }, data);
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function duration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m";
  }
  function time(iso) {
    var d = new Date(iso), clock = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === new Date().toDateString()) return clock;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + clock.slice(0, 5);
  }
  var formats = {
    time: time,
    duration: duration,
    ago: function (iso) { return duration((Date.now() - new Date(iso).getTime()) / 1000); },
    percent: function (v) { return Math.round(v * 100) + "%"; },
    join: function (v) { return v.join(", "); }
  };
  function text(value, format) {
    if (value == null || value === "" || (Array.isArray(value) && !value.length)) return "";
    return format && formats[format] ? formats[format](value) : String(value);
  }
  function truthy(v) { return Array.isArray(v) ? v.length > 0 : !!v; }

  // Fill one node (a clone of a <template>'s content, or the page itself) from data.
  function fill(node, data) {
    // What lies inside a list item was filled with the item's data, not the page's.
    var inLists = function (el) { var l = el.parentElement && el.parentElement.closest("[data-list]"); return l && node.contains(l); };
    node.querySelectorAll("[data-list]").forEach(function (list) {
      if (inLists(list)) return;
      var tpl = list.querySelector(":scope > template");
      Array.prototype.slice.call(list.children).forEach(function (c) { if (c !== tpl) c.remove(); });
      (get(data, list.dataset.list) || []).forEach(function (item) {
        var copy = tpl.content.cloneNode(true);
        fill(copy, item);
        list.appendChild(copy);
      });
    });
    node.querySelectorAll("[data-field]").forEach(function (el) {
      if (inLists(el)) return;
      el.textContent = text(get(data, el.dataset.field), el.dataset.format);
      if (el.dataset.format === "ago") el.dataset.since = get(data, el.dataset.field) || "";
    });
    node.querySelectorAll("[data-if],[data-unless]").forEach(function (el) {
      if (inLists(el)) return;
      var show = el.dataset.if ? truthy(get(data, el.dataset.if)) : !truthy(get(data, el.dataset.unless));
      el.hidden = !show;
    });
    node.querySelectorAll("[data-class]").forEach(function (el) {
      if (inLists(el)) return;
      el.dataset.class.split(" ").forEach(function (pair) {
        var parts = pair.split(":"), cls = parts[0], path = parts[1] || parts[0];
        el.classList.toggle(cls, truthy(get(data, path)));
      });
      var state = el.dataset.state && get(data, el.dataset.state);
      if (state != null) el.setAttribute("data-value", String(state));
    });
    node.querySelectorAll("[data-href]").forEach(function (el) {
      if (inLists(el)) return;
      var url = get(data, el.dataset.href);
      if (typeof url === "string" && /^https?:\/\//i.test(url)) el.href = url; else el.removeAttribute("href");
    });
  }

  var status = document.getElementById("stream-status");
  function render(state) { fill(root, state); }
  var initial = document.getElementById("initial-state");
  if (initial) render(JSON.parse(initial.textContent));

  var source = new EventSource(root.dataset.stream);
  source.addEventListener("state", function (e) {
    render(JSON.parse(e.data));
    if (status) { status.textContent = "live"; status.className = "live"; }
  });
  source.onerror = function () {
    if (status) { status.textContent = "reconnecting…"; status.className = "down"; }
  };
  // "ringing for 12s": the clocks move between two updates.
  setInterval(function () {
    document.querySelectorAll("[data-format=ago]").forEach(function (el) {
      if (el.dataset.since) el.textContent = formats.ago(el.dataset.since);
    });
  }, 1000);
})();
