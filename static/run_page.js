// Keep a followed log scrolled to its end, unless the reader scrolled up.
document.addEventListener("htmx:beforeSwap", function (e) {
  var pre = e.detail.target && e.detail.target.closest && e.detail.target.closest("pre.log");
  if (pre) { pre.dataset.atEnd = (pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40) ? "1" : ""; }
});
document.addEventListener("htmx:afterSettle", function () {
  document.querySelectorAll("pre.log[data-at-end='1']").forEach(function (pre) { pre.scrollTop = pre.scrollHeight; });
});
document.querySelectorAll("pre.log").forEach(function (pre) { pre.scrollTop = pre.scrollHeight; });
