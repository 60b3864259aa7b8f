// Refreshes the live part of a page (the element with data-live) every 5 s,
// from the same page, without reloading it. The pages work without it.
(function () {
  var live = document.querySelector("[data-live]");
  if (!live || !window.fetch || !window.DOMParser) return;
  setInterval(function () {
    if (document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelector("[data-live]");
        var status = doc.getElementById("broker");
        if (fresh) live.innerHTML = fresh.innerHTML;
        if (status) document.getElementById("broker").innerHTML = status.innerHTML;
      })
      .catch(function () {});
  }, 5000);
})();
