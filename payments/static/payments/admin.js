// Staff admin additions. A file, not inline handlers: the Content-Security-Policy allows no inline script.
document.addEventListener("submit", function (event) {
  // <form data-confirm="Question?">: ask before submitting.
  var question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) { event.preventDefault(); }
});
