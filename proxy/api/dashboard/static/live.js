// Live regions of the partner dashboard: an element with data-live="<url>" is refreshed every
// data-live-seconds (default 5) with the HTML fragment the server renders at that URL, without
// reloading the page. Fragments are parsed inertly (DOMParser runs no script) and replace the
// region's children. A region holding the keyboard focus is left alone until the focus moves,
// nothing is fetched while the page is hidden, and a signed-out session goes to the log-in page.
"use strict";

(function () {
  function refresh(region) {
    if (document.hidden || region.contains(document.activeElement)) {
      return Promise.resolve(true);
    }
    return fetch(region.dataset.live, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
      redirect: "error",
    }).then(function (response) {
      if (response.status === 401) {
        window.location.assign("/dashboard/login");
        return false;
      }
      if (!response.ok) {
        return true;
      }
      return response.text().then(function (html) {
        var parsed = new DOMParser().parseFromString(html, "text/html");
        region.replaceChildren.apply(region, Array.from(parsed.body.childNodes));
        region.dataset.liveRefreshed = String(Date.now());
        return true;
      });
    }, function () {
      return true; // the network failed: try again next time
    });
  }

  function start(region) {
    var seconds = Number(region.dataset.liveSeconds || "5");
    if (!(seconds >= 1)) {
      seconds = 5;
    }
    function tick() {
      refresh(region).then(function (again) {
        if (again) {
          window.setTimeout(tick, seconds * 1000);
        }
      });
    }
    window.setTimeout(tick, seconds * 1000);
  }

  function startAll() {
    document.querySelectorAll("[data-live]").forEach(start);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startAll);
  } else {
    startAll();
  }
})();
