// The parents' pages. Loaded from this service (the Content-Security-Policy allows no inline script).
(function () {
  // A page drawn after a refused form: move the focus to the list of problems at its top, so a
  // screen reader reads it and the parent sees it without scrolling (autofocus does the same
  // where supported).
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }

  // One submission per form: a double click sends one request (the server also refuses a second payment).
  document.querySelectorAll("form[data-once]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent) { event.preventDefault(); return; }
      form.dataset.sent = "1";
      var clicked = event.submitter;
      if (clicked && clicked.name) {  // keep the clicked button's value once it is disabled
        var hidden = document.createElement("input");
        hidden.type = "hidden"; hidden.name = clicked.name; hidden.value = clicked.value;
        form.appendChild(hidden);
      }
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; b.setAttribute("aria-busy", "true"); });
    });
  });

  // The thanks page: poll the JSON status endpoint; reload once the payment is settled, so the page
  // is drawn by the server in its final state. Often at first (the webhook usually comes within
  // seconds, and "Paid" should show within one of it), then every few seconds. Without JavaScript
  // its meta refresh does the same.
  var box = document.getElementById("payment-state");
  if (box && box.dataset.final === "false") {
    var every = parseInt(box.dataset.refresh, 10) * 1000;
    var fast = parseInt(box.dataset.fastPoll, 10) || every;
    var fastUntil = Date.now() + (parseInt(box.dataset.fastFor, 10) || 0) * 1000;
    var next = function () { return Date.now() < fastUntil ? fast : every; };
    var poll = function () {
      fetch(box.dataset.statusUrl, { headers: { "Accept": "application/json" }, cache: "no-store" })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          if (data.state && data.state !== "processing") { window.location.reload(); }
          else { setTimeout(poll, next()); }
        })
        .catch(function () { setTimeout(poll, every * 2); });
    };
    setTimeout(poll, next());
  }
})();
