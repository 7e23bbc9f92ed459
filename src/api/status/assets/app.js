// sitewatch status page: optional niceties. The page reads the same
// without this script: times stay in UTC, both charts stay visible.
(function () {
  "use strict";
  // Times in the reader's zone; the UTC time stays in the tooltip.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (isNaN(d)) return;
    t.title = t.textContent;
    t.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  });
  // The two response-time charts as tabs.
  var panels = document.querySelectorAll("figure.panel[data-tab]");
  if (panels.length > 1) {
    var tabs = document.createElement("div");
    tabs.className = "tabs";
    tabs.setAttribute("role", "tablist");
    panels.forEach(function (p, i) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = p.getAttribute("data-tab");
      b.setAttribute("role", "tab");
      b.addEventListener("click", function () {
        panels.forEach(function (q, j) { q.hidden = j !== i; });
        tabs.querySelectorAll("button").forEach(function (c, j) {
          c.setAttribute("aria-selected", String(j === i));
        });
      });
      tabs.appendChild(b);
    });
    panels[0].parentNode.insertBefore(tabs, panels[0]);
    tabs.querySelector("button").click();
  }
  // Fresh data while the page is in view (the server re-reads it at most
  // once per refresh, whoever asks).
  var every = Math.max(60, Number(document.body.getAttribute("data-refresh")) || 60);
  setInterval(function () {
    if (document.visibilityState === "visible") location.reload();
  }, every * 1000);
})();
