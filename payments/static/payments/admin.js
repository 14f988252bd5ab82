// Staff admin additions. A file, not inline handlers: the Content-Security-Policy allows no inline script.
document.addEventListener("submit", function (event) {
  // <form data-confirm="Question?">: ask before submitting.
  var question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) { event.preventDefault(); }
});

// An autocomplete in a form with a school (a payment request's student) searches that school's
// rows only: Django's autocomplete sends the term and field; this adds the chosen school, which
// the server applies on top of the user's own schools. Changing the school clears the choice.
(function () {
  var $ = window.django && window.django.jQuery;
  if (!$ || !$.fn.djangoAdminSelect2) { return; }
  var original = $.fn.djangoAdminSelect2;
  $.fn.djangoAdminSelect2 = function () {
    $.each(this, function (i, element) {
      var school = element.form && element.form.elements.namedItem("school");
      if (!school || element.name === "school") { original.call($(element)); return; }
      $(element).select2({
        ajax: {
          data: function (params) {
            return {
              term: params.term, page: params.page, school: school.value,
              app_label: element.dataset.appLabel, model_name: element.dataset.modelName, field_name: element.dataset.fieldName
            };
          }
        }
      });
      $(school).on("change", function () { $(element).val(null).trigger("change"); });
    });
    return this;
  };
})();
