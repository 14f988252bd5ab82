// Runs before Django's deferred nav_sidebar.js (a plain script in <head>): on a laptop-width
// window the navigation sidebar starts folded, so a list and its filters fit side by side.
// Staff unfold it with the « button, and Django remembers their choice from then on.
(function () {
  try {
    if (localStorage.getItem("django.admin.navSidebarIsOpen") === null && window.innerWidth < 1700) {
      localStorage.setItem("django.admin.navSidebarIsOpen", "false");
    }
  } catch (e) { /* storage refused (private mode): Django's default applies */ }
})();
