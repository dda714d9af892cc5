// The box homepage's one script: when the page was opened by IP address, check from this
// browser whether the box's HTTPS name resolves and connects (DNS rebinding protection in the
// network's resolver is the usual reason it does not).
(function () {
  "use strict";
  var box = document.getElementById("rebinding");
  if (!box || !window.fetch) {
    return;
  }
  var checking = document.getElementById("rebinding-checking");
  var ok = document.getElementById("rebinding-ok");
  var note = document.getElementById("rebinding-note");
  var done = false;
  checking.hidden = false;
  function show(element) {
    if (done) {
      return;
    }
    done = true;
    checking.hidden = true;
    element.hidden = false;
  }
  var controller = window.AbortController ? new AbortController() : null;
  var timer = setTimeout(function () {
    if (controller) {
      controller.abort();
    }
    show(note);
  }, 8000);
  fetch(box.getAttribute("data-ping-url"), {
    mode: "cors",
    cache: "no-store",
    credentials: "omit",
    signal: controller ? controller.signal : undefined,
  }).then(function (response) {
    clearTimeout(timer);
    show(response.ok ? ok : note);
  }, function () {
    clearTimeout(timer);
    show(note);
  });
})();
