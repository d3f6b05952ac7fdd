// Progressive enhancement only: every page works without this file.
// The confirmation button stays disabled until the typed count matches.
document.addEventListener("DOMContentLoaded", function () {
  var input = document.getElementById("confirm_count");
  var button = document.getElementById("confirm");
  if (!input || !button) { return; }
  var check = function () { button.disabled = input.value.trim() !== input.getAttribute("data-expect"); };
  input.addEventListener("input", check);
  check();
});
